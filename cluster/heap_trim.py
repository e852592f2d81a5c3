"""Give the C heap's free pages back to the kernel now and then (glibc ``malloc_trim(0)``).

Why: glibc returns freed memory to the kernel only from the top of its main heap. Memory freed
below a block still in use stays resident, so a node whose allocations come and go (log
entries dropped by compaction, snapshot and batch buffers) keeps, as resident memory, the
highest heap it ever needed. ``malloc_trim(0)`` hands back every whole free page inside the
heap as well. It changes nothing the node computes; it costs one walk over the heap's free
chunks.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable, Mapping

import anyio

from cluster.env_numbers import env_number, positive_seconds

TRIM_ENV = "RAFTBENCH_MALLOC_TRIM"  # seconds between trims; unset or 0: never


class HeapTrimError(ValueError):
    """The trim period in the environment is malformed."""


def trim_period(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between trims the environment asks for; None: do not trim."""
    env = os.environ if environ is None else environ
    period = env_number(env, TRIM_ENV, "0", HeapTrimError)
    return None if period == 0 else positive_seconds(TRIM_ENV, period, HeapTrimError)


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The C library, loaded once (finding it runs ``ldconfig``); None where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def heap_trimmer() -> Callable[[], bool] | None:
    """glibc's ``malloc_trim(0)`` (True when it released memory); None off glibc."""
    function = getattr(libc(), "malloc_trim", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int

    def trim() -> bool:
        return bool(function(0))

    return trim


async def run_heap_trims(period: float) -> None:
    """Trim every `period` seconds until cancelled; returns at once off glibc."""
    trim = heap_trimmer()
    if trim is None:
        return
    while True:
        await anyio.sleep(period)
        trim()
