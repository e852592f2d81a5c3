"""What /proc says about one process: state, start time, CPU and resident memory.

Why one module: the local launcher, the etcd target and the agent on SSH hosts all sample their
processes the same way, and the agent must start fast (standard library only, nothing else
imported). Resident memory is the `resident` field of ``/proc/<pid>/statm`` (pages; the same
counter as ``VmRSS`` in ``/proc/<pid>/status``), read right after ``/proc/<pid>/stat`` so a
caller that checked the start time knows whose memory it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ProcStat(NamedTuple):
    """One reading of a process: `rss` is resident bytes (None when /proc no longer had it)."""

    pid: int
    state: str  # the state letter of /proc/<pid>/stat (R, S, D, T, t, Z, X, ...)
    start_ticks: int  # start time after boot, in clock ticks: who this pid is
    cpu: float  # user + system CPU seconds so far
    rss: int | None


def read_stat(pid: int) -> ProcStat | None:
    """`pid`'s state, start time, CPU and resident bytes; None when there is no such process."""
    rest = _stat_fields(pid)
    if rest is None:
        return None
    return ProcStat(pid, rest[0], int(rest[19]), _cpu(rest), rss_bytes(pid))


def start_ticks(pid: int) -> int | None:
    """When `pid` started (clock ticks after boot): with the pid, who the process is."""
    rest = _stat_fields(pid)
    return None if rest is None else int(rest[19])


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` (all its threads); None when it is gone."""
    rest = _stat_fields(pid)
    return None if rest is None else _cpu(rest)


def _cpu(rest: list[str]) -> float:
    return (int(rest[11]) + int(rest[12])) / CLK_TCK  # utime + stime


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces or parentheses.
    return raw[raw.rindex(")") + 2 :].split()


def thread_run_ns(pid: int) -> dict[int, int] | None:
    """Nanoseconds each live thread of `pid` has run (``/proc/<pid>/task/<tid>/schedstat``,
    first field), by thread id; None when /proc does not have it.

    Why: utime and stime come in clock ticks (10 ms), so a few seconds of an idle node's CPU
    (tens of ms) read from them are off by up to a tick at each end, per process. The
    scheduler's own counter is exact, but per thread: a thread that exits takes its time
    with it, so a caller compares two readings with `run_seconds_between`.
    """
    run: dict[int, int] = {}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            run[int(task.name)] = int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended between the listing and the read: it ran nothing new
    return run or None


def run_seconds_between(before: dict[int, int], after: dict[int, int]) -> float | None:
    """CPU seconds the threads ran from reading `before` to `after`; None when a thread of
    `before` is gone (its time left with it: use utime+stime for that window instead)."""
    if not before.keys() <= after.keys():
        return None
    ran = [ns - before.get(tid, 0) for tid, ns in after.items()]
    if min(ran, default=0) < 0:
        return None  # a thread id was reused by a newer thread
    return sum(ran) / 1e9


def rss_bytes(pid: int) -> int | None:
    """Resident bytes of `pid` (``/proc/<pid>/statm``), None when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
        return int(fields[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


__all__ = [
    "CLK_TCK",
    "PAGE_SIZE",
    "ProcStat",
    "cpu_seconds",
    "read_stat",
    "rss_bytes",
    "run_seconds_between",
    "start_ticks",
    "thread_run_ns",
]
