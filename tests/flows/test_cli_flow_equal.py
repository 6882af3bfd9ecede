"""The CLI and the correlate-call flow run one core: the same figures on every generator variant.

The flow side goes through the real tasks (PrefectRunner) in ONE flow run that loops over the variants (a
Prefect flow run per variant would cost minutes); the CLI side is `rtphelper correlate --json` in-process.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_truth

# Report keys that must agree; outputs/decrypted_files name the two different --out folders.
COMPARED = ("call_id", "call_ids", "direction", "legs", "files", "findings", "warnings")


def _figures(doc: dict[str, Any]) -> dict[str, Any]:
    return {key: doc.get(key) for key in COMPARED}


def _args(folder: Path) -> tuple[str, str, list[str], str | None]:
    truth = load_truth(folder)
    media = [str(folder / "media")] if (folder / "media").is_dir() and any((folder / "media").iterdir()) else []
    return str(folder / truth["sip"]), truth["direction"], media, (truth.get("select") or {}).get("call_id")


def _cli(folder: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    from rtpcore.cli import main

    sip, direction, media, call_id = _args(folder)
    argv = ["correlate", "--sip", sip, "--direction", direction, "--out", str(out), "--json"]
    argv += ["--media", *media] if media else []
    argv += ["--call-id", call_id] if call_id else []
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    if code != 0:
        error = captured.err[captured.err.index("rtphelper correlate: error:"):]  # after any warning lines
        return {"error": _first_line(error.replace(str(out), "<out>"))}
    return _figures(json.loads(captured.out))


def _first_line(error: str) -> str:
    """The error itself: the read/skipped lines after it say whether a chunk's index was cached by the other run."""
    return error.splitlines()[0]


MIN_LEG_PACKETS = "250"  # not the default 10: a path that ignored the setting would drift (it did, before issue 9)


def test_cli_and_flow_give_the_same_figures_on_every_variant(
    generated, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect import flow

    from flows.correlate_call import run_correlation
    from rtpcore.callgen import VARIANTS
    from rtpcore.cli import main

    monkeypatch.setenv("RTPHELPER_MIN_LEG_PACKETS", MIN_LEG_PACKETS)
    folders = {name: generated(name) for name in VARIANTS}

    @flow(name="test-correlate-every-variant")
    def every_variant(out_root: str) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        for name, folder in folders.items():
            sip, direction, media, call_id = _args(folder)
            out = Path(out_root) / name
            try:
                doc = run_correlation(Path(sip), direction, media, out, call_id, None, None, False)
            except Exception as exc:  # noqa: BLE001 - compared with the CLI's error line below
                figures[name] = {"error": _first_line(f"rtphelper correlate: error: {exc}\n".replace(str(out), "<out>"))}
                continue
            figures[name] = _figures(doc if isinstance(doc, dict) else doc.data)
        return figures

    from_flow = every_variant(str(tmp_path / "flow"))
    from_cli = {name: _cli(folder, tmp_path / "cli" / name, capsys) for name, folder in folders.items()}
    assert main(["generate", "--list"]) == 0  # the list the loop covered is the CLI's own
    assert sorted(from_flow) == sorted(from_cli) == sorted(VARIANTS)
    produced = [name for name, doc in from_cli.items() if "error" not in doc]
    assert len(produced) >= len(VARIANTS) - 5, f"most variants must correlate: {sorted(set(VARIANTS) - set(produced))}"
    for name in VARIANTS:
        assert from_flow[name] == from_cli[name], name
    assert any(leg["packets"] for doc in from_cli.values() if "legs" in doc and doc["legs"] for leg in doc["legs"])
