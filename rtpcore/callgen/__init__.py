"""Deterministic call generator: one call through an SBC as SIP + media pcaps with known truth."""
from __future__ import annotations

from rtpcore.callgen.media import plaintext_payload
from rtpcore.callgen.render import render
from rtpcore.callgen.scenario import BASE_TIME_NS, DEFAULT, KEY_FAULTS, VARIANTS, CallSpec, variant

__all__ = ["CallSpec", "DEFAULT", "VARIANTS", "BASE_TIME_NS", "KEY_FAULTS", "variant", "render", "plaintext_payload"]
