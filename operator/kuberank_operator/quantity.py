"""Kubernetes resource quantities (`16Gi`, `512M`, `1e9`) as numbers of bytes."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

# Kubernetes' suffixes: binary (Ki = 2**10 ...) and decimal (k = 10**3 ...), and milli.
SUFFIXES: dict[str, int | Decimal] = {
    "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "m": Decimal("0.001"), "": 1,
}  # fmt: skip
QUANTITY = re.compile(
    r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E|m)?"
)


def quantity_bytes(quantity: int | str) -> int:
    """The whole number of bytes a memory quantity stands for (ValueError if not one)."""
    match = QUANTITY.fullmatch(str(quantity).strip())
    if match is None:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity (e.g. 4Gi, 512Mi, 1e9)")
    number, suffix = match.groups()
    try:
        value = Decimal(number) * SUFFIXES[suffix or ""]
    except InvalidOperation:
        raise ValueError(f"{quantity!r} is not a Kubernetes quantity") from None
    return int(value.to_integral_value(rounding="ROUND_CEILING"))
