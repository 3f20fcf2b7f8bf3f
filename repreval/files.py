"""Reading a file the user named (a dataset, a checkpoint, a landmark file, a suite) without hanging or
tracebacks: what is at a path, opening only regular files (a FIFO is refused, never waited on), bounded reads,
and paths quoted short in messages. No torch here: ``validate`` and ``list`` use it."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from .errors import ReprevalError


def shown(value) -> str:
    """``value`` (a path, an option's value) quoted for a message, cut to 120 characters."""
    if isinstance(value, int) and value.bit_length() > 256:  # repr of a 5,000-digit int raises ValueError
        return f"a {value.bit_length()}-bit integer"
    text = repr(os.fspath(value) if isinstance(value, os.PathLike) else value)
    return text if len(text) <= 120 else text[:117] + "..."


def _reason(exc: OSError | ValueError) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def file_kind(path: str | os.PathLike, what: str, where: str | None = None) -> str:
    """``file``, ``directory``, ``missing`` or ``special`` (a FIFO, device or socket), following symlinks; a
    one-line ReprevalError when the system refuses to look the path up (too long, a link loop, a NUL byte)."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "missing"
    except (OSError, ValueError) as exc:
        raise ReprevalError(
            f"{what} {shown(path)} cannot be looked up ({_reason(exc)})", where=where, fix="check the path"
        ) from None
    if stat.S_ISREG(mode):
        return "file"
    return "directory" if stat.S_ISDIR(mode) else "special"


def regular_file(path: str | os.PathLike, what: str, where: str | None = None) -> None:
    """Nothing if ``path`` is a regular file (or a link to one); a one-line ReprevalError otherwise."""
    kind = file_kind(path, what, where)
    if kind != "file":
        problem = {"missing": "does not exist", "directory": "is a directory"}.get(kind, "is a FIFO, device or socket")
        raise ReprevalError(f"{what} {shown(path)} {problem}", where=where, fix="check the path")


@contextmanager
def open_regular(path: str | os.PathLike, what: str, where: str | None = None) -> Iterator[BinaryIO]:
    """``path`` opened for reading if it is a regular file; a one-line ReprevalError otherwise. Opening never
    blocks (a FIFO is refused, not waited on)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ReprevalError(f"{what} {shown(path)} does not exist", where=where, fix="check the path") from None
    except (OSError, ValueError) as exc:
        raise ReprevalError(
            f"cannot open {what} {shown(path)} ({_reason(exc)})", where=where, fix="check the path"
        ) from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ReprevalError(
            f"{what} {shown(path)} is not a regular file (a folder, FIFO, device or socket)",
            where=where,
            fix="point at a regular file",
        )
    with os.fdopen(descriptor, "rb") as handle:
        yield handle


def read_bounded(path: str | os.PathLike, what: str, where: str | None, limit: int) -> bytes:
    """The bytes of regular file ``path``; a one-line ReprevalError when it is not a regular file, cannot be
    read, or is larger than ``limit`` bytes."""
    with open_regular(path, what, where) as handle:
        try:
            content = handle.read(limit + 1)
        except OSError as exc:
            raise ReprevalError(
                f"cannot read {what} {shown(path)} ({_reason(exc)})", where=where, fix="check the path"
            ) from None
    if len(content) > limit:
        raise ReprevalError(f"{what} {shown(path)} is larger than {limit:,} bytes", where=where, fix="shorten the file")
    return content
