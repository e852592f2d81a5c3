"""Where a node's memory goes over time: a diagnostic a node runs only when asked.

Why: a soak shows resident memory (RSS) creeping up, and RSS alone cannot say whether Python
objects pile up, the C heap fragments, or an extension library allocates behind Python's back.
With ``RAFTBENCH_MEMTRACE=DIR`` in its environment a node appends one JSON line every
``RAFTBENCH_MEMTRACE_PERIOD`` seconds (default 30) to ``DIR/<node id>.jsonl`` holding:

* ``rss``, ``rss_anon`` (``/proc/self/status``: resident, and the anonymous part: heap and mmaps);
* ``mapped``: resident bytes of glibc's main heap, of other anonymous mappings, of files;
* ``malloc``: glibc's ``mallinfo2()`` (``arena`` heap bytes got by brk, ``uordblks`` in use,
  ``fordblks`` free but kept, ``hblkhd`` in separate mmaps, ``keepcost`` trimmable top);
* ``pymalloc``: the arenas pymalloc (Python's allocator for objects of 512 bytes or less) holds
  from the kernel, and the bytes in its blocks in use and free;
* ``py_blocks`` (``sys.getallocatedblocks()``), ``gc_counts`` and collections per generation,
  and the number of gc-tracked objects;
* with ``RAFTBENCH_MEMTRACE_FRAMES=N`` (N >= 1; 0, the default, leaves tracemalloc off, since it
  costs CPU on every allocation): the bytes traced by tracemalloc (every allocation made through
  Python's allocators, which C libraries calling ``malloc`` directly do not use) and the lines
  whose traced memory grew most since the first sample and since the previous one.

Comparing the growth of ``rss`` with that of ``uordblks`` and of the traced bytes tells which
of those three places grows. Nothing here changes what the node does; the sampling runs on the
node's event loop, between its other work.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from cluster.env_numbers import env_number, positive_seconds
from cluster.heap_trim import libc

MEMTRACE_ENV = "RAFTBENCH_MEMTRACE"
PERIOD_ENV = "RAFTBENCH_MEMTRACE_PERIOD"
FRAMES_ENV = "RAFTBENCH_MEMTRACE_FRAMES"
TOP_LINES = 15  # lines listed per comparison


class MemtraceError(ValueError):
    """The memtrace environment variables are malformed."""


@dataclass(frozen=True, slots=True)
class MemtraceSettings:
    path: Path  # the JSON-lines file this node appends to
    period: float  # seconds between samples
    frames: int  # tracemalloc frames per allocation; 0: tracemalloc off


def settings_from_env(
    node_id: str, environ: Mapping[str, str] | None = None
) -> MemtraceSettings | None:
    """The settings the environment asks for; None when `RAFTBENCH_MEMTRACE` is unset or empty."""
    env = os.environ if environ is None else environ
    directory = env.get(MEMTRACE_ENV, "")
    if not directory:
        return None
    period = positive_seconds(
        PERIOD_ENV, env_number(env, PERIOD_ENV, "30", MemtraceError), MemtraceError
    )
    frames = env_number(env, FRAMES_ENV, "0", MemtraceError)
    if frames != int(frames):
        raise MemtraceError(f"{FRAMES_ENV}={frames}: must be a whole number")
    if frames < 0:
        raise MemtraceError(f"{FRAMES_ENV}={frames}: must be >= 0")
    return MemtraceSettings(Path(directory) / f"{node_id}.jsonl", period, int(frames))


_MALLINFO_FIELDS = (
    "arena",
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",
    "usmblks",
    "fsmblks",
    "uordblks",
    "fordblks",
    "keepcost",
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO_FIELDS]


def mallinfo() -> dict[str, int] | None:
    """glibc's heap statistics of this process (main arena and the others); None off glibc."""
    function = getattr(libc(), "mallinfo2", None)
    if function is None:
        return None
    function.restype = _MallInfo2
    info = function()
    return {name: int(getattr(info, name)) for name in _MALLINFO_FIELDS}


def status_memory() -> dict[str, int]:
    """``VmRSS`` and ``RssAnon`` of this process, in bytes (from ``/proc/self/status``)."""
    out: dict[str, int] = {}
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def mapped_memory() -> dict[str, int]:
    """Resident bytes by kind of mapping (``/proc/self/smaps``): ``heap`` is glibc's main heap
    (brk), ``anon`` every other anonymous mapping (pymalloc's arenas, large malloc blocks, other
    arenas, thread stacks), ``file`` mapped files (code, libraries)."""
    out = {"heap": 0, "anon": 0, "file": 0}
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return out
    kind = "anon"
    for line in text.splitlines():
        head = line.split(maxsplit=6)
        if not head:
            continue
        if "-" in head[0] and ":" not in head[0]:  # a mapping's first line: range perms ... path
            path = head[5] if len(head) > 5 else ""
            kind = "heap" if path == "[heap]" else "file" if path.startswith("/") else "anon"
        elif head[0] == "Rss:":
            out[kind] += int(head[1]) * 1024
    return out


_PYMALLOC_FIELDS = {
    "# arenas allocated current": "arenas",
    "# arenas allocated total": "arenas_total",
    "# arenas reclaimed": "arenas_reclaimed",
    "# arenas highwater mark": "arenas_highwater",
    "# bytes in allocated blocks": "allocated",
    "# bytes in available blocks": "available",
    "unused pools": "unused_pools",
}


def pymalloc_stats() -> dict[str, int]:
    """pymalloc's arena count (1 MiB each on 64-bit 3.11), its high-water mark, and the bytes in
    blocks in use and free inside its pools, from ``sys._debugmallocstats()``.

    That function prints to the C-level stderr, so fd 2 points at a temporary file meanwhile."""
    with tempfile.TemporaryFile() as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read().decode(errors="replace")
    out: dict[str, int] = {}
    for line in text.splitlines():
        label, _, value = line.partition("=")
        for prefix, key in _PYMALLOC_FIELDS.items():
            if label.strip().startswith(prefix) and key not in out:
                with contextlib.suppress(ValueError):
                    out[key] = int(value.strip().replace(",", "").split()[0])
    if "unused_pools" not in out:  # "N unused pools * 16384 bytes = ..." has its count first
        for line in text.splitlines():
            if "unused pools" in line:
                with contextlib.suppress(ValueError):
                    out["unused_pools"] = int(line.split()[0])
    return out


def _top(stats: list[tracemalloc.StatisticDiff]) -> list[dict[str, Any]]:
    out = []
    for stat in stats[:TOP_LINES]:
        frame = stat.traceback[0]
        out.append(
            {
                "where": f"{frame.filename}:{frame.lineno}",
                "size_diff": stat.size_diff,
                "count_diff": stat.count_diff,
                "size": stat.size,
                "count": stat.count,
            }
        )
    return out


_IGNORED = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
    tracemalloc.Filter(False, "<unknown>"),
)


class MemorySampler:
    """Takes the samples described in the module docstring; `sample()` gives one as a dict."""

    def __init__(self, settings: MemtraceSettings) -> None:
        self.settings = settings
        self._start = time.monotonic()
        self._first: tracemalloc.Snapshot | None = None
        self._previous: tracemalloc.Snapshot | None = None
        if settings.frames and not tracemalloc.is_tracing():
            tracemalloc.start(settings.frames)

    def sample(self) -> dict[str, Any]:
        memory = status_memory()
        record: dict[str, Any] = {
            "t": round(time.monotonic() - self._start, 3),
            "rss": memory.get("VmRSS"),
            "rss_anon": memory.get("RssAnon"),
            "malloc": mallinfo(),
            "mapped": mapped_memory(),
            "py_blocks": sys.getallocatedblocks(),
            "pymalloc": pymalloc_stats(),
            "gc_counts": list(gc.get_count()),
            "gc_collections": [g["collections"] for g in gc.get_stats()],
            "gc_objects": len(gc.get_objects()),
        }
        if tracemalloc.is_tracing():
            current, peak = tracemalloc.get_traced_memory()
            snapshot = tracemalloc.take_snapshot().filter_traces(_IGNORED)
            record["traced"] = current
            record["traced_peak"] = peak
            if self._first is None:
                self._first = snapshot
            else:
                record["top_since_first"] = _top(snapshot.compare_to(self._first, "lineno"))
            if self._previous is not None:
                record["top_since_previous"] = _top(snapshot.compare_to(self._previous, "lineno"))
            self._previous = snapshot
        return record

    def write(self, record: dict[str, Any]) -> None:
        with self.settings.path.open("a") as out:
            out.write(json.dumps(record) + "\n")


async def run_memtrace(settings: MemtraceSettings) -> None:
    """Sample every `settings.period` seconds until cancelled (the node's task group)."""
    settings.path.parent.mkdir(parents=True, exist_ok=True)
    sampler = MemorySampler(settings)
    while True:
        sampler.write(sampler.sample())
        await anyio.sleep(settings.period)
