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
    """``4GiB``, ``512 MB``, ``1073741824`` -> bytes (binary units)."""
    number: float
    if isinstance(value, int):
        number, unit = value, ""
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if not match or match.group(2).lower() not in UNITS:
            raise ReprevalError(f"cannot read {value!r} as a size", where=where, fix="write e.g. 4GiB or 512MiB")
        number, unit = float(match.group(1)), match.group(2).lower()
    size = int(number * UNITS[unit])
    if size >= 2**63:
        raise ReprevalError(f"{value!r} is more memory than any machine has", where=where, fix="write e.g. 4GiB")
    if size < 1:
        raise ReprevalError("the memory budget must be positive", where=where)
    return size
