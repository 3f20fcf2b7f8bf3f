"""What a run takes from the machine: torch's CPU threads and how freed memory is kept for reuse."""

from __future__ import annotations

import atexit
import ctypes
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn


def choose_threads(requested: int | None = None) -> int:
    """CPU threads for torch: ``requested``, or the cores of this process that other processes leave idle (at
    least 1). Threads spinning on cores another process uses slow a run down several times; one thread fewer
    costs little. Records carry the count (``extras.threads``)."""
    if requested:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, round(cores - busy_cores(cores))))


#: torch threads while training: a float sum split over more threads rounds differently, and a trained model
#: (and every score of it) must not depend on how busy the machine was when the run chose its threads
TRAINING_THREADS = 1


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` torch CPU threads, then restore the count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


#: /proc/stat and this process's CPU time when the CLI started: (all jiffies, idle jiffies, own CPU seconds)
_window_start: tuple[int, int, float] | None = None


def start_core_window() -> None:
    """Start the window over which :func:`busy_cores` watches other processes: the CLI calls this first, so
    the window spans its imports instead of a sleep."""
    global _window_start
    try:
        _window_start = _cpu_sample()
    except (OSError, ValueError, IndexError):
        _window_start = None


def busy_cores(cores: int, seconds: float = 0.2) -> float:
    """How many cores other processes keep busy: /proc/stat since :func:`start_core_window` (or over
    ``seconds`` from now when the window is shorter), less this process's own CPU time; elsewhere the load
    average."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    machine = os.cpu_count() or cores
    try:
        start = _window_start
        if start is None or (_cpu_sample()[0] - start[0]) / ticks / machine < seconds:
            start = _cpu_sample()
            time.sleep(seconds)
        end = _cpu_sample()
    except (OSError, ValueError, IndexError):
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    core_seconds = max(1, end[0] - start[0]) / ticks  # all cores together
    others = ((end[0] - start[0]) - (end[1] - start[1])) / ticks - (end[2] - start[2])
    return min(cores, max(0.0, machine * others / core_seconds))


def _cpu_sample() -> tuple[int, int, float]:
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4], sum(os.times()[:2])  # idle + iowait; own user + system


#: glibc mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Let glibc reuse freed tensor memory instead of handing it back to the system at once.

    By default glibc maps every allocation above 128 KiB (dynamically raised to 32 MiB at most) afresh and
    returns freed memory to the system, so each backward pass faults its gradient buffers in page by page:
    a CIFAR ResNet20 sweep spends about half its time there until the threshold has grown. Allocations up to
    32 MiB (glibc's ceiling) then come from the heap, and the heap is trimmed only above ``threshold``
    free bytes. Same numbers, fewer page faults; the process keeps its peak memory. Returns whether it applied
    (glibc on Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) and libc.mallopt(_M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):  # musl or another libc
        return False


def exit_now(code: int) -> NoReturn:
    """Exit with ``code`` once atexit handlers have run and output is flushed, skipping the interpreter's
    teardown (with torch loaded, about half a second of module clearing and library destructors: a tenth of
    a short suite's wall time). Every result file is closed by then: they are written atomically."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)
