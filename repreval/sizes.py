"""Memory sizes as people write them: ``4GiB``, ``512 MB``, ``1073741824`` (suites, plugin options)."""

from __future__ import annotations

import re

from .errors import ReprevalError

#: Unit -> bytes (binary: a kilobyte is 1024 bytes, as memory is sold)
UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
}


def parse_bytes(value: str | int, where: str = "") -> int:
    """``4GiB``, ``512 MB``, ``1073741824`` -> bytes (binary units); anything else, a number of bytes past 2**63
    included, is a one-line error (never an overflow)."""
    shown = repr(value)[:40] if not isinstance(value, int) or value.bit_length() < 64 else "an integer past 2**63"
    number: float
    if isinstance(value, int) and not isinstance(value, bool):
        number, unit = value, ""
    else:
        match = re.fullmatch(r"\s*([0-9]+)(\.[0-9]+)?\s*([A-Za-z]*)\s*", value) if isinstance(value, str) else None
        if not match or match.group(3).lower() not in UNITS:
            raise ReprevalError(f"cannot read {shown} as a size", where=where, fix="write e.g. 4GiB or 512MiB")
        whole, fraction, unit = match.group(1).lstrip("0"), match.group(2) or "", match.group(3).lower()
        if len(whole) > 19:  # at least 10**19 bytes, past 2**63 whatever the unit (and too long for a float)
            number = float(2**63)
        else:
            number = int(whole or "0") + float(f"0{fraction}")
    size = int(number * UNITS[unit])
    if size >= 2**63:
        raise ReprevalError(f"{shown} is more memory than any machine has", where=where, fix="write e.g. 4GiB")
    if size < 1:
        raise ReprevalError("the memory budget must be positive", where=where)
    return size
