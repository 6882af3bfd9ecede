"""Result transactions in-process: a failed rerun keeps the old results; a good one replaces them as a whole."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from rtpcore import results as txns
from rtpcore.errors import InputError, NoMediaMatchError
from rtpcore.pipeline import correlate
from tests.conftest import load_truth


def _files(out: Path) -> dict[str, str]:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


def _run(folder: Path, out: Path, media: list[Path] | None = None, **kw):
    truth = load_truth(folder)
    return correlate(folder / truth["sip"], truth["direction"], media if media is not None else [folder / "media"],
                     out, **kw)


def test_failed_overwrite_rerun_keeps_every_previous_file(generated, shared_pcaps: Path, tmp_path: Path) -> None:
    folder = generated("inbound-proxy")
    out = tmp_path / "out"
    _run(folder, out)
    before = _files(out)
    assert any(name.startswith("decrypted/") for name in before) and any("/filtered/" in n for n in before)
    with pytest.raises(NoMediaMatchError):
        _run(folder, out, [shared_pcaps / "sipp_g711a.pcap"], overwrite=True)  # media of another call
    assert _files(out) == before
    assert not list(out.glob(".staging-*"))


def test_overwrite_replaces_per_file_outputs_as_a_whole(generated, tmp_path: Path) -> None:
    rolling = generated("rolling")
    out = tmp_path / "out"
    _run(rolling, out)
    old = set(_files(out))
    assert len([n for n in old if n.startswith("decrypted/")]) >= 2
    single = generated("inbound-proxy")
    report = _run(single, out, overwrite=True)
    new = set(_files(out))
    assert {n for n in old - new if n.startswith(("decrypted/", "combined/filtered/"))}  # the old ones are gone
    assert all(Path(p).exists() for p in report.per_file_outputs)
    assert {f"decrypted/{Path(p).name}" for p in report.per_file_outputs} == {n for n in new if n.startswith("decrypted/")}
    stems = {Path(m).stem for m in load_truth(single)["media"]}
    assert {n for n in new if n.startswith(("decrypted/", "combined/filtered/"))
            and not any(Path(n).name.startswith(stem) for stem in stems)} == set(), "earlier media's outputs stay mixed in"
    assert str(out.resolve()) in report.to_json()["outputs"]["media_raw"] and ".staging-" not in str(report.to_json())


def test_a_per_file_output_alone_refuses_the_run_without_overwrite(generated, tmp_path: Path) -> None:
    folder = generated("inbound-proxy")
    out = tmp_path / "out"
    (out / "decrypted").mkdir(parents=True)
    (out / "decrypted" / "earlier-decrypted.pcap").write_bytes(b"earlier")
    with pytest.raises(InputError, match=r"earlier-decrypted.pcap already exists; choose another --out or pass --overwrite"):
        _run(folder, out)
    assert _files(out) == {"decrypted/earlier-decrypted.pcap": hashlib.sha256(b"earlier").hexdigest()}


def test_a_swap_cut_short_by_sigkill_is_rolled_back_by_the_next_run(tmp_path: Path) -> None:
    """SIGKILL between the two renames of the swap: the next run restores the old results, not a mix."""
    out = tmp_path / "out"
    for name, text in (("decrypted/a-decrypted.pcap", b"old-a"), ("combined/media_raw.pcap", b"old-raw")):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(text)
    before = _files(out)
    txn = txns.begin(out, overwrite=True)
    (txn.staged.decrypted / "b-decrypted.pcap").write_bytes(b"new-b")
    replaced = txn.staged.root / txns.REPLACED_DIR
    replaced.mkdir()
    for name in txns.RESULT_DIRS:                      # what commit() does first ...
        os.replace(out / name, replaced / name)
    os.replace(txn.staged.decrypted, out / "decrypted")  # ... and half of its second half: then SIGKILL
    assert txns.clean_leftovers(out) == [txn.staged.root]
    assert _files(out) == before
    assert not list(out.glob(".staging-*"))
    shutil.rmtree(out)


def test_an_error_raised_while_a_signal_unwinds_still_exits_as_the_signal(
    generated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM inside a file close makes the second close fail (EBADF): the user must still see 143, not exit 2."""
    from rtpcore import cli, pipeline

    def interrupted_then_ebadf(job, runner):
        try:
            raise cli.Terminated()
        except BaseException:
            raise OSError(9, "Bad file descriptor") from None

    monkeypatch.setattr(pipeline, "run_steps", interrupted_then_ebadf)
    folder = generated("inbound-proxy")
    code = cli.main(["correlate", "--sip", str(folder / "sip.pcap"), "--direction", "inbound",
                     "--media", str(folder / "media"), "--out", str(tmp_path / "out")])
    assert code == cli.EXIT_TERMINATED
    err = capsys.readouterr().err
    assert "terminated (SIGTERM); the previous results in --out are untouched" in err and "Bad file" not in err
