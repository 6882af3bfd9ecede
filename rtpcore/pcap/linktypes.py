"""Link-layer header type numbers (tcpdump.org LINKTYPE_*) and their human names for messages."""
from __future__ import annotations

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

SUPPORTED_LINKTYPES: frozenset[int] = frozenset(
    {
        LINKTYPE_NULL,
        LINKTYPE_ETHERNET,
        LINKTYPE_RAW,
        LINKTYPE_LOOP,
        LINKTYPE_LINUX_SLL,
        LINKTYPE_IPV4,
        LINKTYPE_IPV6,
        LINKTYPE_LINUX_SLL2,
    }
)

_NAMES: dict[int, str] = {
    LINKTYPE_NULL: "BSD loopback (NULL)",
    LINKTYPE_ETHERNET: "Ethernet",
    LINKTYPE_RAW: "raw IP",
    LINKTYPE_LOOP: "OpenBSD loopback (LOOP)",
    LINKTYPE_LINUX_SLL: "Linux SLL",
    LINKTYPE_IPV4: "raw IPv4",
    LINKTYPE_IPV6: "raw IPv6",
    LINKTYPE_LINUX_SLL2: "Linux SLL2",
    # Not decoded, but named so an error message tells the user what they captured.
    9: "PPP",
    50: "PPP in HDLC framing",
    104: "Cisco HDLC",
    105: "IEEE 802.11",
    119: "IEEE 802.11 Prism",
    127: "IEEE 802.11 radiotap",
    192: "PPI",
    195: "IEEE 802.15.4",
    220: "USB Linux mmapped",
    249: "Netfilter log (NFLOG)",
}


def linktype_name(linktype: int) -> str:
    """Name a link type for messages, falling back to its number ("DLT 147")."""
    return _NAMES.get(linktype, f"DLT {linktype}")
