"""Issue 8's traps together, as real calls mix them: each combination's legs and streams equal the generator's truth.

The named variants each exercise one trap; an SBC in the field rewrites numbers *and* sits behind NAT *and*
rolls its captures. These combinations are rendered by the generator (truth computed from what it sent) and
run through `rtphelper legs --json` and the in-process correlation.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rtpcore.callgen import render, variant
from rtpcore.cli import main
from rtpcore.pipeline import correlate

SUITE_80 = "AES_CM_128_HMAC_SHA1_80"
COMBINATIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "rewrite+srtp-both+latching-core": ("b2bua-rewrite", {"core_suite": SUITE_80, "core_media_from": "10.77.3.10"}),
    "outbound-rewrite+nat-carrier": ("outbound-b2bua-rewrite", {"carrier_media_from": ("203.0.113.77", 41000)}),
    "national+rolling+mid-call": ("b2bua-national", {"rolling_packets": 300, "mid_call": True}),
    "topology-hiding+tcp+vlan": ("topology-hiding", {"sip_transport": "tcp", "sip_vlans": (100,), "media_vlans": (200,)}),
    "ipv6-srtp-both+b2bua-extension": ("ipv6-srtp-both-legs", {"topology": "b2bua", "number_rewrite": "extension",
                                                              "cseq_rewrite": True}),
    "rewrite+rekey": ("b2bua-rewrite", {"reinvite_rekey": True}),
    "rewrite+late-offer+gcm": ("b2bua-rewrite", {"late_offer": True, "carrier_suite": "AEAD_AES_128_GCM"}),
    "single-report+mux+suite-32": ("srtcp-single-report", {"rtcp_mux": True, "carrier_suite": "AES_CM_128_HMAC_SHA1_32"}),
    "multi-call+sll2+duplicates": ("multi-call", {"media_linktype": 276, "duplicates_every": 40}),
    "rtcp-after-bye+b2bua-national": ("rtcp-after-bye", {"topology": "b2bua", "number_rewrite": "national"}),
}


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_combination_equals_truth(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base, knobs = COMBINATIONS[name]
    folder = tmp_path / "call"
    render(variant(base, **knobs), folder)
    truth = json.loads((folder / "truth.json").read_text())
    select = (truth.get("select") or {}).get("call_id")
    args = ["legs", "--sip", str(folder / truth["sip"]), "--direction", truth["direction"], "--json"]
    assert main(args + (["--call-id", select] if select else [])) == 0
    assert json.loads(capsys.readouterr().out) == truth["legs"]

    report = correlate(folder / truth["sip"], truth["direction"], [folder / "media"], tmp_path / "out",
                       call_id=select).to_json()
    got = {(leg["name"], s["src"], s["dst"], s["kind"]): s for leg in report["legs"] for s in leg["streams"]}
    want = {(s["leg"], s["src"], s["dst"], s["kind"]): s for s in truth["streams"]}
    assert set(got) == set(want), "exactly the call's streams, learned senders included"
    for key, stream in want.items():
        mine = got[key]
        assert mine["packets"] == stream["packets"], key
        assert mine["key"] == stream["key_status"], key
        if stream.get("encrypted"):
            assert mine["decrypted"] + mine["clear"] == mine["packets"], f"{key}: every SRTP packet decrypted"
