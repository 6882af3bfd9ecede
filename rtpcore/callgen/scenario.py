"""Call specifications: one frozen knob per dimension, and the named variants tests combine."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from rtpcore.literals import Direction
from rtpcore.pcap.linktypes import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL2

__all__ = ["CallSpec", "DEFAULT", "VARIANTS", "variant", "BASE_TIME_NS", "KEY_FAULTS", "IMPAIRABLE"]

DTMF_KEYS = "0123456789*#ABCD"               # issue 11: RFC 4733 events 0-15 in this order
BASE_TIME_NS = 1_768_471_200 * 10**9        # 2026-01-15T10:00:00Z: every timestamp is an offset from it
SUITE_80 = "AES_CM_128_HMAC_SHA1_80"
SUITE_32 = "AES_CM_128_HMAC_SHA1_32"
SUITE_GCM128 = "AEAD_AES_128_GCM"
SUITE_GCM256 = "AEAD_AES_256_GCM"


# wt-keys: how the carrier's a=crypto for its own sending key can be wrong (see docs/GENERATOR.md).
KEY_FAULTS = ("bad-base64", "key-length", "unknown-suite", "refused-suite", "bad-mki", "bad-lifetime",
              "no-inline-key", "no-crypto", "wrong-key")


@dataclass(frozen=True, slots=True)
class CallSpec:
    """Everything that shapes one generated call; the same spec always renders the same bytes."""

    name: str = "inbound-proxy"
    seed: int = 20260115
    direction: Direction = "inbound"
    topology: Literal["proxy", "b2bua"] = "proxy"
    # Addresses: the SBC signals from its media-host addresses too, port 5060.
    carrier_ip: str = "198.51.100.10"
    host_carrier_ip: str = "10.77.1.1"
    host_core_ip: str = "10.77.2.1"
    core_ip: str = "10.77.2.10"
    core_background_ip: str = "10.77.2.11"
    noise_server_ip: str = "10.77.0.53"
    carrier_media_port: int = 30000
    core_media_port: int = 16384
    host_carrier_port: int = 40000
    host_core_port: int = 42000
    # Signalling.
    sip_transport: Literal["udp", "tcp"] = "udp"
    tcp_split_and_coalesce: bool = True         # with tcp: INVITE over 3 segments, 100+183 in one
    invite_padding: int = 0                     # extra header bytes on the first INVITE
    mtu: int = 1500
    early_media: bool = True                    # 183 Session Progress with SDP before the 200 OK
    late_offer: bool = False                    # INVITE without SDP, offer in 200 OK, answer in ACK
    reinvite_rekey: bool = False                # carrier re-INVITE at mid-call: new ports + keys
    bye_from: Literal["carrier", "core"] = "carrier"
    background_calls: bool = False              # 2 other complete calls in the SIP pcap
    # Media negotiation.
    carrier_suite: str | None = SUITE_80
    core_suite: str | None = None
    payload_type: int = 0
    rtcp_mux: bool = False
    rtcp_attr: bool = False                     # the core side names its RTCP port with a=rtcp
    media_seconds: float = 6.0
    # Capture shape.
    sip_linktype: int = LINKTYPE_ETHERNET
    media_linktype: int = LINKTYPE_ETHERNET
    sip_vlans: tuple[int, ...] = ()
    media_vlans: tuple[int, ...] = ()
    pcapng: bool = False
    region: str = "eu-west-1"
    media_host: str = "media-1"
    rolling_packets: int | None = None          # roll the media capture every N frames
    # Media-correlation traps.
    mid_call: bool = False                      # capture starts with the carrier sender at ROC=2
    carrier_initial_seq: int | None = None      # None: random
    roll_after_wrap: bool = False               # a rolling boundary just after the carrier's wrap
    duplicates_every: int = 0                   # every Nth carrier-leg RTP frame captured twice
    srtcp_clear_first: bool = False             # the carrier's first RTCP goes out unencrypted
    # wt-keys: SRTCP report shape and SDES key faults.
    srtcp_single_report: bool = False           # every RTCP is one report alone: RR from the peers, SR from the media host
    carrier_key_fault: str = ""                 # one of KEY_FAULTS: what is wrong with the carrier's own a=crypto
    # wt-parsing: latching peers, combined file, RTCP tail.
    core_media_from: str | None = None          # the core phone sends (and the relay latches) from this other address
    carrier_media_from: tuple[str, int] | None = None   # NAT'd carrier: media from this ip:port (RTCP from port+1)
    stray_sender: tuple[str, int] | None = None  # a second device sends RTP+RTCP to the host's carrier endpoint
    sip_holds_media: bool = False               # sip.pcap is the full capture: SIP and every media frame
    final_rtcp_after_bye_ns: int = 0            # carrier and core send a last RTCP report this long after the BYE
    content_length_override: tuple[int, str] | None = None   # (n, value): the call's n-th SIP message (time order,
                                                # 0 = the first INVITE) says Content-Length: value (a broken peer)
    # --- call assembly (wt-assembly): how the SBC rewrites its onward dialog; concurrent calls ---
    number_rewrite: Literal["none", "national", "extension"] = "none"   # core side: 020… / an extension
    cseq_rewrite: bool = False                  # the onward dialog (hop 2) starts its own CSeq
    hide_topology: bool = False                 # hop 2: Call-ID masked, Record-Route stripped, Contact hidden
    correlation_header: str | None = None       # "X-CID" / "Session-ID": the same value on both hops' INVITE
    user_names: bool = False                    # non-numeric user parts ("ua") instead of numbers
    concurrent_calls: int = 0                   # other overlapping calls through the SBC in sip.pcap
    # issue 11: call insight — DTMF keys the carrier presses (RFC 4733 telephone-events, PT 101, as its SDP says).
    dtmf_digits: str = ""                       # one key per second from 1 s into the carrier's media: "0-9*#A-D"
    # issue 11: impairments of the `impaired` direction's RTP as captured; packet n = that sender's n-th RTP packet
    # (0-based, duplicates not counted). See docs/GENERATOR.md "Impairments".
    impaired: str = "carrier->relay"            # one of IMPAIRABLE: "carrier->relay", "relay->carrier", …
    lost_packets: tuple[int, ...] = ()          # these packets are never captured
    loss_bursts: tuple[tuple[int, int], ...] = ()   # (first packet, count): that many lost back to back
    loss_rate: float = 0.0                      # … and this fraction of the others lost at random (loss_seed)
    loss_seed: int = 0
    reordered_packets: tuple[int, ...] = ()     # packet n arrives after packet n+1 (their arrival times swap)
    duplicated_packets: tuple[int, ...] = ()    # packet n is captured twice
    jitter_ms: float = 0.0                      # each packet arrives 0..jitter_ms late (below 20 ms: order kept)
    ssrc_change_at: int | None = None           # from packet n on the sender uses a new SSRC, sequence and timestamp
    silent_party: str = ""                      # one-way audio: "carrier" or "core" sends no RTP, so the relay sends
                                                # none to the other party either (RTCP still flows)
    dead_relay: str = ""                        # "carrier->core" / "core->carrier": the relay does not forward that way
    hold_after_s: float | None = None           # the carrier puts the call on hold this long after the ACK: re-INVITE
                                                # a=sendonly on both hops, answered a=recvonly; the core stops sending

    def __post_init__(self) -> None:
        _check_impairments(self)
        bad_keys = sorted(set(self.dtmf_digits) - set(DTMF_KEYS))
        if bad_keys:
            raise ValueError(f"dtmf_digits may hold only {DTMF_KEYS!r}, got {''.join(bad_keys)!r}")
        if self.dtmf_digits and len(self.dtmf_digits) + 1 >= self.media_seconds:
            raise ValueError(f"dtmf_digits: {len(self.dtmf_digits)} keys (one a second from 1 s) need media_seconds "
                             f"above {len(self.dtmf_digits) + 1}, got {self.media_seconds}")
        if self.carrier_key_fault and self.carrier_key_fault not in KEY_FAULTS:
            raise ValueError(f"carrier_key_fault {self.carrier_key_fault!r} is not one of: {', '.join(KEY_FAULTS)}")
        if self.carrier_key_fault and (self.direction != "inbound" or self.late_offer or not self.carrier_suite):
            raise ValueError("carrier_key_fault needs an inbound SRTP call where the carrier's INVITE offers (no late offer)")
        if self.media_seconds < 2.5:
            raise ValueError(f"media_seconds must be at least 2.5 (re-INVITE and RTCP need room), got {self.media_seconds}")
        if self.payload_type not in (0, 8):
            raise ValueError(f"payload_type must be 0 (PCMU) or 8 (PCMA), got {self.payload_type}")
        if self.rolling_packets is not None and self.rolling_packets < 1:
            raise ValueError(f"rolling_packets must be positive, got {self.rolling_packets}")


IMPAIRABLE = ("carrier->relay", "relay->carrier", "core->relay", "relay->core")   # issue 11: senders 0-3 of a plan
PARTIES = ("carrier", "core")
MAX_ORDERED_JITTER_MS = 20.0                # the packet interval: more jitter would reorder packets


def _check_impairments(spec: CallSpec) -> None:
    """issue 11: the impairment knobs name a real direction, party and packet numbers."""
    if spec.impaired not in IMPAIRABLE:
        raise ValueError(f"impaired must be one of {', '.join(IMPAIRABLE)}, got {spec.impaired!r}")
    if spec.silent_party and spec.silent_party not in PARTIES:
        raise ValueError(f"silent_party must be 'carrier' or 'core', got {spec.silent_party!r}")
    relays = [f"{a}->{b}" for a in PARTIES for b in PARTIES if a != b]
    if spec.dead_relay and spec.dead_relay not in relays:
        raise ValueError(f"dead_relay must be one of {', '.join(relays)}, got {spec.dead_relay!r}")
    if not 0.0 <= spec.loss_rate < 1.0:
        raise ValueError(f"loss_rate must be in [0, 1), got {spec.loss_rate}")
    if not 0.0 <= spec.jitter_ms < MAX_ORDERED_JITTER_MS:
        raise ValueError(f"jitter_ms must be in [0, {MAX_ORDERED_JITTER_MS:g}) so packets keep their order "
                         f"(use reordered_packets to reorder), got {spec.jitter_ms}")
    numbers = [*spec.lost_packets, *spec.reordered_packets, *spec.duplicated_packets,
               *(n for n, _count in spec.loss_bursts), *([spec.ssrc_change_at] if spec.ssrc_change_at is not None else [])]
    if spec.hold_after_s is not None and (spec.direction != "inbound" or spec.bye_from != "carrier"
                                          or spec.reinvite_rekey or spec.late_offer
                                          or not 0 < spec.hold_after_s < spec.media_seconds - 1):
        raise ValueError("hold_after_s needs an inbound call without reinvite_rekey or late offer, BYE from the carrier, "
                         f"and a time inside the media (0 < hold_after_s < media_seconds - 1), got {spec.hold_after_s}")
    if any(n < 1 for n in numbers) or any(count < 1 for _n, count in spec.loss_bursts):
        raise ValueError("impairment packet numbers must be 1 or more (packet 0 starts the stream) and burst counts positive")


DEFAULT = CallSpec()

_IPV6: dict[str, Any] = {
    "carrier_ip": "2001:db8:100::10",
    "host_carrier_ip": "2001:db8:77:1::1",
    "host_core_ip": "2001:db8:77:2::1",
    "core_ip": "2001:db8:77:2::10",
    "core_background_ip": "2001:db8:77:2::11",
    "noise_server_ip": "2001:db8:77::53",
}

# Per-variant knobs of several types (a dict cannot type each key): CallSpec fields say what each means.
_OVERRIDES: dict[str, dict[str, Any]] = {
    "inbound-proxy": {},
    "outbound-proxy": {"direction": "outbound", "bye_from": "core"},
    "inbound-b2bua": {"topology": "b2bua"},
    "outbound-b2bua": {"direction": "outbound", "topology": "b2bua"},
    "internal-only": {"carrier_ip": "10.77.1.10"},
    "sip-tcp": {"sip_transport": "tcp"},
    "fragmented-invite": {"invite_padding": 1800},
    "vlan": {"sip_vlans": (100,), "media_vlans": (200, 300)},
    "sll2": {"media_linktype": LINKTYPE_LINUX_SLL2},
    "pcapng": {"pcapng": True},
    "ipv6": _IPV6,
    "reinvite-rekey": {"reinvite_rekey": True},
    "suite-32": {"carrier_suite": SUITE_32},
    "gcm": {"carrier_suite": SUITE_GCM128},
    "gcm-256": {"carrier_suite": SUITE_GCM256},
    "srtp-both-legs": {"core_suite": SUITE_80},
    "rtcp-mux": {"rtcp_mux": True},
    "rtcp-attr": {"rtcp_attr": True},
    "background-calls": {"background_calls": True},
    "mid-call": {"mid_call": True},
    "wrap-across-files": {"carrier_initial_seq": 65436, "roll_after_wrap": True},
    "rolling": {"rolling_packets": 400},
    "duplicates": {"duplicates_every": 50, "media_linktype": LINKTYPE_LINUX_SLL2},
    "srtcp-clear-first": {"srtcp_clear_first": True},
    "late-offer": {"late_offer": True},
    # wt-keys: single-report SRTCP, malformed and wrong SDES keys.
    "srtcp-single-report": {"srtcp_single_report": True, "media_seconds": 16.0},
    "wrong-key": {"carrier_key_fault": "wrong-key"},
    **{f"broken-key-{fault}": {"carrier_key_fault": fault} for fault in KEY_FAULTS if fault != "wrong-key"},
    # wt-parsing
    "latching-peer": {"core_media_from": "10.77.3.10"},
    "nat-carrier": {"carrier_media_from": ("203.0.113.77", 61000)},
    "two-senders-one-port": {"carrier_media_from": ("203.0.113.77", 61000), "stray_sender": ("203.0.113.99", 5004)},
    "full-capture-sip": {"sip_holds_media": True},
    "ipv6-srtp-both-legs": {**_IPV6, "core_suite": SUITE_80},
    "rtcp-after-bye": {"final_rtcp_after_bye_ns": 2_300_000_000},
    # --- call assembly (wt-assembly) ---
    "b2bua-rewrite": {"topology": "b2bua", "number_rewrite": "extension", "cseq_rewrite": True},
    "b2bua-national": {"topology": "b2bua", "number_rewrite": "national", "cseq_rewrite": True,
                       "correlation_header": "X-CID"},
    "outbound-b2bua-rewrite": {"direction": "outbound", "bye_from": "core", "topology": "b2bua",
                               "number_rewrite": "extension", "cseq_rewrite": True, "correlation_header": "Session-ID"},
    "topology-hiding": {"hide_topology": True},
    "multi-call": {"topology": "b2bua", "number_rewrite": "extension", "cseq_rewrite": True, "user_names": True,
                   "concurrent_calls": 5},
    # --- issue 11: call insight (impairments; docs/GENERATOR.md) ---
    "impaired-loss": {"lost_packets": (40, 90, 91), "loss_bursts": ((120, 6),)},
    "impaired-random-loss": {"impaired": "relay->core", "loss_rate": 0.03, "loss_seed": 11},
    "impaired-reorder-jitter": {"reordered_packets": (30, 77, 150), "duplicated_packets": (50, 60), "jitter_ms": 12.0},
    "one-way-core": {"silent_party": "core"},
    "dead-relay": {"dead_relay": "carrier->core"},
    "ssrc-change": {"impaired": "core->relay", "ssrc_change_at": 150},
    "dtmf": {"dtmf_digits": "159#"},
    "dtmf-dead-relay": {"dtmf_digits": "159#", "dead_relay": "carrier->core"},
    "hold": {"hold_after_s": 2.0},
}

VARIANTS: dict[str, CallSpec] = {
    name: replace(DEFAULT, name=name, **overrides)
    for name, overrides in _OVERRIDES.items()
}


def variant(name: str, **knobs: Any) -> CallSpec:
    """A named variant with extra knobs applied, so tests can combine dimensions."""
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    return replace(VARIANTS[name], **knobs)
