"""Keys that cannot work: each malformed a=crypto, a wrong key and no key are findings with exit code 0, never
key material in any output; the key search is bounded per stream, also on a raw chunk full of other calls."""
from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from rtpcore.callgen import KEY_FAULTS, render, variant
from rtpcore.cli import main
from rtpcore.media import keying
from rtpcore.media.keying import KEY_PROBE_PACKETS, KeyState, SenderKeys
from rtpcore.pipeline import correlate
from rtpcore.pcap.layers import link_payload, parse_ip, parse_udp
from rtpcore.pcap.reader import open_capture
from rtpcore.sip.crypto import CryptoAttribute
from tests.conftest import load_truth

BROKEN = [f for f in KEY_FAULTS if f != "wrong-key"]
# What the user reads about each kind of broken line (the generator breaks the carrier's own tag-1 line).
REASONS = {
    "bad-base64": "inline key of 40 characters is not base64",
    "key-length": "needs a 30-byte inline key (16-byte key + 14-byte salt) but the key decodes to 27 bytes",
    "unknown-suite": "suite F8_128_HMAC_SHA1_80 is unknown",
    "refused-suite": "AES_192_CM is refused",
    "bad-mki": "MKI length 0 is outside 1..128",
    "bad-lifetime": "key lifetime 'forever' is neither '2^N' nor a decimal number",
    "no-inline-key": "a=crypto needs 'tag suite key-params', got 2 field(s)",
    "no-crypto": "m=audio RTP/SAVP has no a=crypto (and no a=fingerprint)",
}
LEG_KEYS_LINE = {"partial": "keys: only some directions have a usable SDES key", "none": "keys: no usable SDES key"}
_INLINE = re.compile(rb"inline:([^|\s;]+)")
SECRET_WINDOW = 8


def _secrets(folder: Path, truth: dict) -> list[str]:
    """Every key the SIP carries (as written, malformed or not) and every key the senders really use."""
    found = {m.decode() for m in _INLINE.findall((folder / truth["sip"]).read_bytes())}
    found |= {s["key"] for s in truth["streams"] if s.get("key")}
    return sorted(k for k in found if len(k) > SECRET_WINDOW)


def _assert_no_key_material(text: str, secrets: list[str]) -> None:
    for key in secrets:
        for i in range(len(key) - SECRET_WINDOW + 1):
            assert key[i: i + SECRET_WINDOW] not in text, f"key material {key[:4]}… leaked"


def _cli(capsys, caplog, *args: str) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out + err + caplog.text


@pytest.mark.parametrize("fault", BROKEN)
def test_broken_key_is_named_by_legs_with_exit_0(fault: str, generated, capsys, caplog) -> None:
    folder = generated(f"broken-key-{fault}")
    truth = load_truth(folder)
    (problem,) = truth["legs"]["legs"][0]["key_problems"]
    sip = ["--sip", str(folder / truth["sip"]), "--direction", "inbound"]
    code, text = _cli(capsys, caplog, "legs", *sip)
    assert code == 0
    where = f"SDP line {problem['line']} " if problem["line"] else ""
    line = next(x for x in text.splitlines() if "key problem:" in x)
    assert f"key problem: INVITE from the carrier peer: {where}" in line and REASONS[fault] in line, line
    want = LEG_KEYS_LINE.get(truth["legs"]["legs"][0]["srtp_keys"])
    assert (want is not None) == any("keys: " in x for x in text.splitlines())
    if want:
        assert want in text
    code, out = _cli(capsys, caplog, "legs", *sip, "--json")
    assert code == 0 and json.loads(out.splitlines()[0])["legs"][0]["key_problems"] == [problem]
    _assert_no_key_material(text + out, _secrets(folder, truth))


@pytest.mark.parametrize("fault", BROKEN)
def test_broken_key_correlates_with_exit_0_a_finding_and_per_stream_key_status(
    fault: str, generated, tmp_path: Path, capsys, caplog
) -> None:
    folder = generated(f"broken-key-{fault}")
    truth = load_truth(folder)
    code, text = _cli(capsys, caplog, "correlate", "--sip", str(folder / truth["sip"]), "--direction", "inbound",
                      "--media", str(folder / "media"), "--out", str(tmp_path / "o"), "--json")
    assert code == 0
    doc = json.loads(text.splitlines()[0])
    finding = next(f for f in doc["findings"] if "a=crypto" in f or "no a=crypto" in f)
    assert finding.startswith("carrier leg: the a=crypto in the INVITE from the carrier (198.51.100.10) cannot be used")
    assert REASONS[fault] in finding
    streams = {(s["src"], s["dst"], s["kind"]): s for leg in doc["legs"] for s in leg["streams"]}
    for s in truth["streams"]:
        got = streams[(s["src"], s["dst"], s["kind"])]
        assert got["key"] == s["key_status"], (s["src"], s["kind"])
        if s["key_status"] == "no key":
            assert got["decrypted"] == 0 and got["packets"] == s["packets"]
            assert any(f"{s['src']} → {s['dst']} ({s['kind'].upper()}): SRTP but no usable SDES key" in f
                       for f in doc["findings"])
        elif s["key_status"] == "authenticated":
            assert got["decrypted"] + got["clear"] == s["packets"]
    if truth["legs"]["legs"][0]["srtp_keys"] == "none":
        assert "carrier leg: SRTP without a usable SDES key — its media will stay encrypted" in doc["findings"]
    _assert_no_key_material(text, _secrets(folder, truth))


def _frames(path: Path) -> Counter:
    with open_capture(path) as reader:
        return Counter(parse_udp(parse_ip(link_payload(f.linktype, f.data))).payload for f in reader)


def test_wrong_key_is_written_undecrypted_with_a_finding_and_exit_0(
    generated, tmp_path: Path, capsys, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = generated("wrong-key")
    truth = load_truth(folder)
    searches = _count_roc_searches(monkeypatch)
    code, text = _cli(capsys, caplog, "correlate", "--sip", str(folder / truth["sip"]), "--direction", "inbound",
                      "--media", str(folder / "media"), "--out", str(tmp_path / "o"), "--json")
    assert code == 0
    doc = json.loads(text.splitlines()[0])
    wrong = [s for s in truth["streams"] if s["key_status"] == "wrong key"]
    assert {s["kind"] for s in wrong} == {"rtp", "rtcp"}
    streams = {(s["src"], s["dst"], s["kind"]): s for leg in doc["legs"] for s in leg["streams"]}
    for s in wrong:
        got = streams[(s["src"], s["dst"], s["kind"])]
        assert (got["key"], got["decrypted"], got["auth_failed"]) == ("wrong key", 0, s["packets"])
        assert (f"carrier leg {s['src']} → {s['dst']} ({s['kind'].upper()}): no packet decrypted — the SDES key from the "
                f"SDP does not authenticate any of {s['packets']} packets") in " ".join(doc["findings"])
    assert all(streams[(s["src"], s["dst"], s["kind"])]["key"] == s["key_status"] for s in truth["streams"])
    # The wrong-key stream's packets are in media_decrypted exactly as captured.
    raw, dec = _frames(Path(doc["outputs"]["media_raw"])), _frames(Path(doc["outputs"]["media_decrypted"]))
    carrier_rtp = next(s for s in wrong if s["kind"] == "rtp")
    ssrc = bytes.fromhex(carrier_rtp["ssrc"][2:])
    undecrypted = Counter({p: n for p, n in raw.items() if p[8:12] == ssrc and p[1] < 192})
    assert sum(undecrypted.values()) == carrier_rtp["packets"] and all(dec[p] == n for p, n in undecrypted.items())
    assert searches[int(carrier_rtp["ssrc"], 16)] == KEY_PROBE_PACKETS, "a bounded ROC search per probe, not per packet"
    _assert_no_key_material(text, _secrets(folder, truth))


def _count_roc_searches(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """ROC searches per SSRC (and in total under None)."""
    calls: Counter = Counter()
    original = keying.guess_roc

    def counting(suite, key, salt, ssrc, *args, **kwargs):
        calls[ssrc] += 1
        calls[None] += 1
        return original(suite, key, salt, ssrc, *args, **kwargs)

    monkeypatch.setattr(keying, "guess_roc", counting)
    return calls


def test_decrypt_on_a_mixed_raw_chunk_decrypts_only_the_stream_the_key_fits(
    generated, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The media file holds the call, an overlapping call from the same carrier IP, a later call on the same
    4-tuple (other SSRCs and keys) and DNS/syslog: only the carrier's own stream decrypts, the rest pass through."""
    folder = generated("inbound-proxy")
    truth = load_truth(folder)
    (chunk,) = truth["media"]
    mine = next(s for s in truth["streams"] if s["leg"] == "carrier" and s["kind"] == "rtp" and s["src"].startswith("198."))
    searches = _count_roc_searches(monkeypatch)
    started = time.perf_counter()
    code = main(["decrypt", "--in", str(folder / chunk), "--crypto", f"a=crypto:1 {mine['suite']} inline:{mine['key']}",
                 "--out", str(tmp_path / "out.pcap"), "--json"])
    elapsed = time.perf_counter() - started
    out = capsys.readouterr().out
    assert code == 0 and elapsed < 3.0, elapsed
    doc = json.loads(out)
    rtp = [s for s in doc["streams"] if s["kind"] == "rtp"]
    (fits,) = [s for s in rtp if s["key"] == "authenticated"]
    assert (fits["src"], fits["ssrc"], fits["decrypted"], fits["packets"]) == (mine["src"], mine["ssrc"], mine["packets"], mine["packets"])
    others = [s for s in rtp if s is not fits]
    assert len(others) >= 8 and all(s["key"] == "wrong key" and s["decrypted"] == 0 for s in others)
    assert searches[None] <= KEY_PROBE_PACKETS * len(rtp), (searches[None], len(rtp))
    per_ssrc = Counter(int(s["ssrc"], 16) for s in rtp)     # DNS answers that look like RTP share SSRC 0
    assert all(n <= KEY_PROBE_PACKETS * per_ssrc[ssrc] for ssrc, n in searches.items() if ssrc is not None)
    assert sum(s["packets"] + s["duplicates"] for s in doc["streams"]) <= doc["packets"]
    assert mine["key"][:SECRET_WINDOW] not in out


def test_key_search_is_bounded_per_window_and_a_rekey_window_gets_one_more_round(monkeypatch: pytest.MonkeyPatch) -> None:
    suite = "AES_CM_128_HMAC_SHA1_80"
    wrong = CryptoAttribute.parse(f"1 {suite} inline:{base64.b64encode(bytes(range(30))).decode()}")
    rekey = CryptoAttribute.parse(f"1 {suite} inline:{base64.b64encode(bytes(range(1, 31))).decode()}")
    searches = _count_roc_searches(monkeypatch)
    state = KeyState(SenderKeys(suite, [(0, 1000, wrong), (5000, 9000, rekey)], srtp=True), 0x1234, "carrier test")
    packet = bytes([0x80, 0]) + bytes(6) + (0x1234).to_bytes(4, "big") + bytes(range(170))
    warnings: list[str] = []
    for ts in range(100, 1100):
        assert state.unprotect("rtp", packet, ts, warnings) is None
    # Both keys are candidates (the one in force first: a rekey's switch time is not exact), each probed 3 times.
    assert searches[None] == 2 * KEY_PROBE_PACKETS and state.wrong_key
    assert state.next_window() == 5000
    for ts in range(5000, 6000):
        state.unprotect("rtp", packet, ts, warnings)
    assert searches[None] == 4 * KEY_PROBE_PACKETS, "both keys once more in the new window, then nothing"
    assert state.status(decrypted=0, clear=0, packets=2000) == "wrong key"
    assert not warnings


def test_variant_knob_refuses_what_its_truth_cannot_model() -> None:
    with pytest.raises(ValueError, match="carrier_key_fault needs an inbound SRTP call"):
        variant("outbound-proxy", carrier_key_fault="bad-base64")
    with pytest.raises(ValueError, match="carrier_key_fault 'nope' is not one of"):
        variant("inbound-proxy", carrier_key_fault="nope")


def test_wrong_key_truth_is_the_generators_not_ours(tmp_path: Path) -> None:
    """The SDP key the generator writes differs from the key it encrypts with: the truth says so by construction."""
    truth = render(variant("wrong-key", media_seconds=3.0), tmp_path / "call")
    sip = (tmp_path / "call" / truth["sip"]).read_bytes()
    carrier = next(s for s in truth["streams"] if s["key_status"] == "wrong key" and s["kind"] == "rtp")
    assert carrier["key"].encode() not in sip
    assert all(s["key"].encode() in sip for s in truth["streams"] if s["key_status"] == "authenticated")


def test_wrong_key_stream_takes_the_fast_path_with_the_same_bytes_and_counts(
    generated, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the verdict a wrong-key stream skips _process: same outputs and counts as the general path."""
    from tests.rtpcore.test_decrypt_fast import _count_process, _files, _slow

    folder = generated("wrong-key")
    truth = load_truth(folder)

    def run(out: Path) -> tuple[dict[str, bytes], str]:
        report = correlate(folder / truth["sip"], "inbound", [folder / "media"], out, workers=1)
        return _files(out), json.dumps(report.to_json()["legs"], sort_keys=True)

    with monkeypatch.context() as m:
        calls = _count_process(m)
        fast_files, fast_doc = run(tmp_path / "fast")
        fast_calls = calls[0]
    with monkeypatch.context() as m:
        _slow(m)
        calls = _count_process(m)
        slow_files, slow_doc = run(tmp_path / "slow")
        slow_calls = calls[0]
    assert fast_files == slow_files and fast_doc == slow_doc and '"wrong key"' in fast_doc
    assert fast_calls < slow_calls // 4, (fast_calls, slow_calls)


def test_decrypt_with_a_key_that_fits_nothing_says_so_with_exit_2(generated, tmp_path: Path, capsys) -> None:
    folder = generated("inbound-proxy")
    truth = load_truth(folder)
    (chunk,) = truth["media"]
    other = base64.b64encode(bytes(range(100, 130))).decode()
    started = time.perf_counter()
    code = main(["decrypt", "--in", str(folder / chunk), "--crypto", f"AES_CM_128_HMAC_SHA1_80 inline:{other}",
                 "--out", str(tmp_path / "out.pcap")])
    out, err = capsys.readouterr()
    assert code == 2 and time.perf_counter() - started < 3.0
    assert f"the key authenticates none of the {out.count(' key: ')} RTP/RTCP streams in {folder / chunk}" in err
    assert (tmp_path / "out.pcap").is_file() and other[:SECRET_WINDOW] not in out + err


KEY = base64.b64encode(bytes(range(7, 37))).decode()           # 30 bytes: a valid AES_CM_128 key+salt
SDP_LINES = {
    "bad-base64": f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY[:9]}!{KEY[10:]}|2^31",
    "key-length": f"a=crypto:1 AEAD_AES_256_GCM inline:{KEY}",
    "unknown-suite": f"a=crypto:1 NULL_HMAC_SHA1_80 inline:{KEY}",
    "refused-suite": f"a=crypto:1 AES_CM_192_HMAC_SHA1_80 inline:{base64.b64encode(bytes(38)).decode()}",
    "bad-mki": f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31|4:1:2",
    "bad-lifetime": f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^x",
    "no-inline-key": f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 uri:https://kms.example/{KEY}",
    "malformed": f"a=crypto:one AES_CM_128_HMAC_SHA1_80 inline:{KEY}",
}


@pytest.mark.parametrize("kind", sorted(SDP_LINES))
def test_every_unusable_crypto_line_is_a_redacted_problem_with_its_line_number(kind: str) -> None:
    from rtpcore.sip.sdp import SessionDescription

    body = "\r\n".join(["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "c=IN IP4 192.0.2.1", "t=0 0",
                        "m=audio 4000 RTP/SAVP 0", f"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}",
                        SDP_LINES[kind], "a=sendrecv"]) + "\r\n"
    sdp = SessionDescription.parse(body)
    (problem,) = sdp.crypto_problems
    assert (problem.line, problem.media, problem.kind) == (8, "audio", kind)
    assert problem.describe().startswith("SDP line 8 a=crypto:")
    assert [c.tag for c in sdp.audio().crypto] == ([2, 1] if kind in ("unknown-suite", "refused-suite") else [2])
    text = problem.describe() + problem.reason + "".join(sdp.problems)
    assert "…(redacted)" in text or kind == "no-inline-key"
    _assert_no_key_material(text, [KEY[4:], base64.b64encode(bytes(38)).decode()[4:]])


def test_an_answer_that_picks_an_unusable_suite_leaves_no_key_and_the_leg_says_none() -> None:
    from rtpcore.plan import Endpoint, Leg, MediaSide, Negotiation
    from rtpcore.sip.legs import _select_crypto

    key38 = base64.b64encode(bytes(38)).decode()
    offered = (CryptoAttribute.parse(f"1 AES_192_CM_HMAC_SHA1_80 inline:{key38}"),
               CryptoAttribute.parse(f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"))
    suite, offer_key, answer_key = _select_crypto(offered, (CryptoAttribute.parse(f"1 AES_192_CM_HMAC_SHA1_80 inline:{key38}"),))
    assert (suite, offer_key, answer_key) == ("AES_192_CM_HMAC_SHA1_80", None, None)
    suite, offer_key, answer_key = _select_crypto(offered, (CryptoAttribute.parse(f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"),))
    assert suite == "AES_CM_128_HMAC_SHA1_80" and offer_key is offered[1] and answer_key is not None

    def leg(peer_key: CryptoAttribute | None, host_key: CryptoAttribute | None, proto: str = "RTP/SAVP") -> Leg:
        side = [MediaSide(Endpoint("192.0.2.1", 4000 + i), Endpoint("192.0.2.1", 4001 + i), False, k)
                for i, k in enumerate((peer_key, host_key))]
        return Leg("carrier", "192.0.2.1", "192.0.2.1", ("c",), (Negotiation(0, 1, 0, 2, side[0], side[1], proto, suite),))

    assert leg(None, None).srtp_keys == "none"
    assert leg(offered[1], None).srtp_keys == "partial"
    assert leg(offered[1], offered[1]).srtp_keys == "usable"
    assert leg(None, None, "RTP/AVP").srtp_keys is None
    assert leg(None, None).to_json()["key_problems"] == []


def test_real_plain_call_given_a_key_by_mistake_is_wrong_key_and_clear_rtcp(shared_pcaps: Path, tmp_path: Path, capsys) -> None:
    """A real phone's plain RTP/RTCP (with its 2 stray RTCP bytes): no stream decrypts, RTCP stays clear, fast."""
    started = time.perf_counter()
    code = main(["decrypt", "--in", str(shared_pcaps / "heplify_rtp_rtcp_sip_ipv4_udp.pcap"), "--crypto",
                 f"AES_CM_128_HMAC_SHA1_80 inline:{KEY}", "--out", str(tmp_path / "out.pcap"), "--json"])
    out, err = capsys.readouterr()
    assert code == 2 and time.perf_counter() - started < 3.0
    streams = json.loads(out)["streams"]
    assert {s["key"] for s in streams if s["kind"] == "rtp"} == {"wrong key"}
    rtcp = [s for s in streams if s["kind"] == "rtcp"]
    assert rtcp and all(s["key"] == "clear" and s["clear"] == s["packets"] for s in rtcp)
    assert "the key authenticates none of" in err and KEY[4:12] not in out + err
