"""Resource quantities ('500m', '1Gi', '2e3') as exact numbers, for comparisons and QoS, and back to text."""

from __future__ import annotations

import re
from fractions import Fraction
from math import ceil
from typing import Any

HUGEPAGES_PREFIX = "hugepages-"
"""Resources named hugepages-<page size> (hugepages-2Mi) count pre-allocated huge pages in bytes."""
_SUFFIXES = {
    "": Fraction(1),
    "n": Fraction(1, 10**9),
    "u": Fraction(1, 10**6),
    "m": Fraction(1, 1000),
    "k": Fraction(10**3),
    "M": Fraction(10**6),
    "G": Fraction(10**9),
    "T": Fraction(10**12),
    "P": Fraction(10**15),
    "E": Fraction(10**18),
    "Ki": Fraction(2**10),
    "Mi": Fraction(2**20),
    "Gi": Fraction(2**30),
    "Ti": Fraction(2**40),
    "Pi": Fraction(2**50),
    "Ei": Fraction(2**60),
}
_QUANTITY_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)$")


def parse_quantity(value: Any) -> Fraction | None:
    """The exact value of a quantity, or None when it is not one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Fraction(value)
    match = _QUANTITY_RE.match(str(value).strip())
    if not match:
        return None
    number, exponent, suffix = match.groups()
    result = Fraction(number)
    if exponent:
        return result * Fraction(10) ** int(exponent[1:])
    return result * _SUFFIXES[suffix or ""]


_DECIMAL = [("E", 18), ("P", 15), ("T", 12), ("G", 9), ("M", 6), ("k", 3), ("", 0), ("m", -3), ("u", -6), ("n", -9)]
_BINARY = [("Ei", 60), ("Pi", 50), ("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)]


def format_quantity(value: Fraction, binary: bool = False) -> str:
    """The canonical form of a quantity: the largest suffix giving an integer (binary ones if asked)."""
    if value == 0:
        return "0"
    if binary and value.denominator == 1:
        for suffix, power in _BINARY:
            if value % 2**power == 0:
                return f"{value // 2**power}{suffix}"
    for suffix, exponent in _DECIMAL:
        scaled = value / Fraction(10) ** exponent
        if scaled.denominator == 1:
            return f"{scaled.numerator}{suffix}"
    return f"{ceil(value * 10**9)}n"
