"""Byte sizes as people write them in runtime.env ("500MB", "1GB", "5368709120") and as we print them.

Every unit is a binary multiple: KB = KiB = 2**10, MB = MiB = 2**20, GB = GiB = 2**30,
TB = TiB = 2**40. The seed product documented its default spool cap "5368709120 = 5 GB", i.e. it
read GB as 2**30, and we keep that reading so existing runtime.env files mean what they meant.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40

_UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": KIB, "kb": KIB, "kib": KIB,
    "m": MIB, "mb": MIB, "mib": MIB,
    "g": GIB, "gb": GIB, "gib": GIB,
    "t": TIB, "tb": TIB, "tib": TIB,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*$", re.IGNORECASE)
_FORMAT_STEPS: tuple[tuple[int, str], ...] = ((TIB, "TiB"), (GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB"))


def parse_size(text: str | int) -> int:
    """Bytes for "500MB" / "1.5 GiB" / "200mb" / "5368709120" (binary units; fractions round down)."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a size (use e.g. 500MB, 1GB or a byte count)")
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"{text!r} is not a size: it is negative")
        return text
    match = _SIZE_RE.match(text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r} is not a size (use e.g. 500MB, 1GB or a byte count)")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimal literals
        raise ValueError(f"{text!r} is not a size (use e.g. 500MB, 1GB or a byte count)") from exc
    return int(number * _UNITS[match.group(2).lower()])


def format_size(n: int) -> str:
    """Short human form for messages ("500 MiB", "1.5 GiB", "312 B"); parse_size reads it back."""
    if n < 0:
        return f"-{format_size(-n)}"
    for factor, unit in _FORMAT_STEPS:
        if n >= factor:
            value = n / factor
            text = f"{value:.0f}" if n % factor == 0 else f"{value:.1f}"
            return f"{text} {unit}"
    return f"{n} B"
