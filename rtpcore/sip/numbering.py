"""Phone numbers as SBCs rewrite them (+E.164, national, extension): normalise, then compare as evidence."""
from __future__ import annotations

import re
from dataclasses import dataclass

# Shortest digit string taken as a number at all; "1" or "12" are service codes, not identities.
MIN_NUMBER_DIGITS = 3
# A trailing-digit agreement this long ties two formats of one number without a configured plan (old rule).
SUFFIX_DIGITS = 8
# Numbers up to this many digits are extensions: one that ends a longer number is weak evidence.
MAX_EXTENSION_DIGITS = 6
# E.164 allows 15 digits; leave room for routing prefixes written in front.
MAX_NUMBER_DIGITS = 20
_VISUAL_SEPARATORS = re.compile(r"[\s().\-]")
_NUMBER = re.compile(rf"^\+?\d{{{MIN_NUMBER_DIGITS},{MAX_NUMBER_DIGITS}}}$")
INTERNATIONAL = "+"


@dataclass(frozen=True, slots=True)
class NumberPlan:
    """How the core side writes numbers, so `020 7946 0000` and `+44 20 7946 0000` compare equal."""

    country_code: str | None = None        # e.g. "44": national numbers get +44 in front
    national_prefix: str = "0"             # trunk prefix dropped before the country code is added
    international_prefix: str = "00"       # "0044…" is "+44…"
    strip_prefixes: tuple[str, ...] = ()   # routing/carrier-select prefixes removed first, longest first

    @property
    def configured(self) -> bool:
        """True when a country code or strip prefixes make national and routed numbers comparable."""
        return self.country_code is not None or bool(self.strip_prefixes)

    def normalise(self, user: str | None) -> str | None:
        """'+<digits>' for an international number, '<digits>' otherwise; None when the user part is no number."""
        if not user:
            return None
        text = _VISUAL_SEPARATORS.sub("", user.split(";", 1)[0])
        if not _NUMBER.match(text):
            return None
        if text.startswith(INTERNATIONAL):
            return text
        for prefix in sorted(self.strip_prefixes, key=len, reverse=True):
            if text.startswith(prefix) and len(text) - len(prefix) >= MIN_NUMBER_DIGITS:
                text = text[len(prefix):]
                break
        if self.international_prefix and text.startswith(self.international_prefix):
            rest = text[len(self.international_prefix):]
            return INTERNATIONAL + rest if len(rest) >= MIN_NUMBER_DIGITS else text
        if self.country_code and self.national_prefix and text.startswith(self.national_prefix):
            return INTERNATIONAL + self.country_code + text[len(self.national_prefix):]
        return text


@dataclass(frozen=True, slots=True)
class NumberMatch:
    """How two sets of numbers relate: points for the link score and a sentence for --explain."""

    points: float
    detail: str


def _common_suffix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(reversed(a), reversed(b)):
        if x != y:
            break
        n += 1
    return n


def compare_numbers(up: tuple[str, ...], down: tuple[str, ...], what: str, full: float) -> NumberMatch | None:
    """Best agreement between normalised numbers; two long numbers with different endings count against."""
    if not up or not down:
        return None
    best: NumberMatch | None = None
    contradiction: tuple[str, str] | None = None
    for u in up:
        for d in down:
            if u == d:
                return NumberMatch(full, f"{what} {u} on both sides")
            du, dd = u.lstrip(INTERNATIONAL), d.lstrip(INTERNATIONAL)
            tail = _common_suffix(du, dd)
            if tail >= SUFFIX_DIGITS:
                match = NumberMatch(full - 1, f"{what} {u} and {d} agree on their last {tail} digits")
            elif min(len(du), len(dd)) <= MAX_EXTENSION_DIGITS and tail == min(len(du), len(dd)):
                match = NumberMatch(1.0, f"{what} {d if len(dd) < len(du) else u} is the end of {u if len(dd) < len(du) else d} (extension)")
            else:
                if min(len(du), len(dd)) >= SUFFIX_DIGITS:
                    contradiction = (u, d)  # a format change keeps the subscriber digits; these differ
                continue
            if best is None or match.points > best.points:
                best = match
    if best is not None:
        return best
    if contradiction is not None:
        return NumberMatch(-2.0, f"{what} differs: {contradiction[0]} vs {contradiction[1]}")
    return None
