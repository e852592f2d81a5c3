"""Time series derived from one run's raw data, shared by the summary and the plots.

Everything here is a pure function of a `RunRecord`: completion counts binned in time, who led
when, and how far each follower's commit index trailed the leader's. Keeping it in one place is
what makes a plot and a table number agree.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workloads.results import SAMPLE_INTERVAL, OpRecord, RunRecord

MUTATIONS = frozenset({"write", "cas", "delete"})
LEADER_ROLE = "leader"


def measured_window(record: RunRecord) -> tuple[float, float]:
    """metadata["window"], or (when a driver left it out) the span of the operations."""
    window = record.metadata.get("window")
    if isinstance(window, list | tuple) and len(window) == 2:
        start, end = (float(x) for x in window)
        if end > start:
            return start, end
    starts = [op.invoke for op in record.ops]
    ends = [op.complete for op in record.ops if op.complete is not None]
    if not starts:
        return 0.0, 1.0
    start = min(starts)
    end = max([*ends, *starts])
    return start, end if end > start else start + 1.0


def start_time(op: OpRecord) -> float:
    """When the operation was meant to start (open loop: its scheduled time)."""
    return op.intended if op.intended is not None else op.invoke


def ok_completions(ops: Iterable[OpRecord]) -> np.ndarray:
    """Sorted completion times of the operations that succeeded."""
    times = [op.complete for op in ops if op.outcome == "ok" and op.complete is not None]
    return np.sort(np.asarray(times, dtype=float))


def count_in(times: np.ndarray, start: float, end: float) -> int:
    """How many of the sorted `times` fall in [start, end)."""
    lo = int(np.searchsorted(times, start, side="left"))
    hi = int(np.searchsorted(times, end, side="left"))
    return hi - lo


def binned_counts(times: np.ndarray, start: float, width: float, bins: int) -> np.ndarray:
    """Counts of sorted `times` in consecutive bins [start + i*width, start + (i+1)*width)."""
    if bins <= 0:
        return np.zeros(0, dtype=int)
    edges = start + width * np.arange(bins + 1)
    positions = np.searchsorted(times, edges, side="left")
    return np.diff(positions)


def full_windows(start: float, end: float, width: float) -> int:
    """How many whole windows of `width` fit in [start, end) (tolerant of float rounding)."""
    return max(0, math.floor((end - start) / width + 1e-9))


def rate_windows(times: np.ndarray, start: float, end: float, width: float = 1.0) -> list[float]:
    """Ops/s in each whole `width`-second window from `start` (a partial last one is dropped)."""
    counts = binned_counts(times, start, width, full_windows(start, end, width))
    return [float(c) / width for c in counts]


def throughput_series(record: RunRecord, width: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """(bin start times, ok ops/s) over the whole run, for plotting."""
    times = ok_completions(record.ops)
    if times.size == 0:
        return np.zeros(0), np.zeros(0)
    first = min(op.invoke for op in record.ops)
    start = math.floor(first / width) * width
    bins = max(1, math.ceil((float(times[-1]) - start) / width + 1e-9))
    counts = binned_counts(times, start, width, bins)
    return start + width * np.arange(bins), counts / width


# ---- the time series of node samples ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One node's state at one sample time (a row of timeseries.jsonl)."""

    t: float
    node: str
    up: bool
    role: str
    term: int
    commit: int


def samples(record: RunRecord) -> list[Sample]:
    """The rows of the time series that carry what the summary needs; malformed rows skipped."""
    out: list[Sample] = []
    for row in record.timeseries:
        try:
            out.append(
                Sample(
                    float(row["t"]),
                    str(row["node"]),
                    bool(row.get("up", True)),
                    str(row.get("role", "")),
                    int(row.get("term", 0) or 0),
                    int(row.get("commit", 0) or 0),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return out


def by_sample_time(rows: Sequence[Sample]) -> list[tuple[float, list[Sample]]]:
    """Rows grouped by sample tick (times rounded to the sampling grid), in time order."""
    groups: dict[int, list[Sample]] = defaultdict(list)
    for row in rows:
        groups[round(row.t / SAMPLE_INTERVAL)].append(row)
    return [(tick * SAMPLE_INTERVAL, groups[tick]) for tick in sorted(groups)]


def leader_of(rows: Sequence[Sample]) -> Sample | None:
    """The node that leads at this instant: up, role leader, highest term (None: no leader)."""
    leaders = [r for r in rows if r.up and r.role == LEADER_ROLE]
    return max(leaders, key=lambda r: (r.term, r.commit)) if leaders else None


def commit_lag_series(
    record: RunRecord, window: tuple[float, float] | None = None
) -> list[tuple[float, str, int]]:
    """(time, follower, leader commit - follower commit) at each sample with a leader.

    Only followers that are up are counted: a crashed node has no commit index to compare.
    """
    out: list[tuple[float, str, int]] = []
    for t, rows in by_sample_time(samples(record)):
        if window is not None and not window[0] <= t < window[1]:
            continue
        leader = leader_of(rows)
        if leader is None:
            continue
        for row in rows:
            if row.node != leader.node and row.up:
                out.append((t, row.node, leader.commit - row.commit))
    return out


def new_leader_after(
    record: RunRecord, t: float, until: float | None = None
) -> tuple[float, str] | None:
    """When (and who) a leader of a higher term than the one leading at `t` is first seen.

    The search stops at `until` (the next fault), so that an election caused by a later fault
    is not blamed on this one. None: no such leader in that span.
    """
    ticks = by_sample_time(samples(record))
    before = [rows for when, rows in ticks if when <= t + 1e-9]
    old = leader_of(before[-1]) if before else None
    old_term = old.term if old is not None else -1
    for when, rows in ticks:
        if when <= t + 1e-9 or (until is not None and when > until):
            continue
        leader = leader_of(rows)
        if leader is not None and leader.term > old_term:
            return when, leader.node
    return None


def link_matrix(links: Sequence[dict[str, Any]], nodes: Sequence[str]) -> np.ndarray:
    """Bytes per directed link as a len(nodes) x len(nodes) matrix (src rows, dst columns)."""
    index = {node: i for i, node in enumerate(nodes)}
    matrix = np.zeros((len(nodes), len(nodes)), dtype=float)
    for link in links:
        src, dst = str(link.get("src")), str(link.get("dst"))
        if src in index and dst in index:
            matrix[index[src], index[dst]] += float(link.get("bytes", 0) or 0)
    return matrix
