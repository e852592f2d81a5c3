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
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces or parentheses.
    rest = raw[raw.rindex(")") + 2 :].split()
    cpu = (int(rest[11]) + int(rest[12])) / CLK_TCK
    return ProcStat(pid, rest[0], int(rest[19]), cpu, rss_bytes(pid))


def rss_bytes(pid: int) -> int | None:
    """Resident bytes of `pid` (``/proc/<pid>/statm``), None when it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
        return int(fields[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


__all__ = ["CLK_TCK", "PAGE_SIZE", "ProcStat", "read_stat", "rss_bytes"]
