"""Time series of bandwidth-capped runs: a node's egress rate, and how far down the sync tree
each member trails the leader. Pure functions of a `RunRecord`, shared by tables and figures.

Egress comes from the samples' cumulative `sent` bytes (real nodes: their /metrics, read every
half second; the simulator: its link counters at every sample), differenced between readings.

Replication delay by depth: for each sample of the leader, the time until a member's `last`
index reached the leader's `last` at that sample, with the member's index interpolated linearly
between its own samples (so the resolution is finer than the 100 ms grid while the rate is
steady). Members are grouped by their depth in the sync tree (`workloads.ceiling`); each hop a
chained member is away from the leader adds its source's delay to its own.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from protocols.types import NodeId
from workloads.results import RunRecord
from workloads.run_series import measured_window


def egress_series(record: RunRecord, node: NodeId) -> tuple[np.ndarray, np.ndarray]:
    """(time, bytes/s since the previous reading) of `node`'s peer egress, whole run."""
    times: list[float] = []
    sent: list[float] = []
    for row in record.timeseries:
        value = row.get("sent")
        if row.get("node") == node and isinstance(value, int | float):
            if sent and value == sent[-1]:
                continue  # the same reading again (metrics are read less often than status)
            times.append(float(row["t"]))
            sent.append(float(value))
    if len(times) < 2:
        return np.zeros(0), np.zeros(0)
    t = np.asarray(times)
    s = np.asarray(sent)
    dt = np.diff(t)
    keep = (dt > 0) & (np.diff(s) >= 0)  # a restarted node's counter starts again
    return t[1:][keep], (np.diff(s)[keep] / dt[keep])


@dataclass(frozen=True, slots=True)
class DepthDelay:
    """Replication delay of the members at one depth of the sync tree, in seconds."""

    depth: int
    members: tuple[NodeId, ...]
    samples: int
    p50: float
    p90: float


def replication_delays(
    record: RunRecord, leader: NodeId, depths: dict[NodeId, int | None]
) -> list[DepthDelay]:
    """Per depth (1, 2, ...), how long after the leader had an entry its members had it."""
    start, end = measured_window(record)
    series: dict[NodeId, list[tuple[float, float]]] = defaultdict(list)
    for row in record.timeseries:
        last, t = row.get("last"), row.get("t")
        if isinstance(last, int) and isinstance(t, int | float) and row.get("up", True):
            series[str(row.get("node"))].append((float(t), float(last)))
    reference = [(t, last) for t, last in series.get(leader, []) if start <= t < end]
    by_depth: dict[int, list[float]] = defaultdict(list)
    members: dict[int, list[NodeId]] = defaultdict(list)
    for member, depth in sorted(depths.items()):
        if member == leader or depth is None or depth < 1 or member not in series:
            continue
        members[depth].append(member)
        points = np.asarray(series[member])
        times, indexes = points[:, 0], np.maximum.accumulate(points[:, 1])
        for t, wanted in reference:
            position = int(np.searchsorted(indexes, wanted, side="left"))
            if position >= len(indexes):
                continue  # never reached within the run: not a delay we can state
            if position == 0:
                reached = float(times[0])
            else:
                i0, i1 = indexes[position - 1], indexes[position]
                t0, t1 = times[position - 1], times[position]
                reached = float(t1 if i1 == i0 else t0 + (wanted - i0) / (i1 - i0) * (t1 - t0))
            by_depth[depth].append(max(0.0, reached - t))
    out = []
    for depth in sorted(by_depth):
        values = np.asarray(by_depth[depth])
        out.append(
            DepthDelay(
                depth,
                tuple(members[depth]),
                len(values),
                float(np.percentile(values, 50)),
                float(np.percentile(values, 90)),
            )
        )
    return out


__all__ = ["DepthDelay", "egress_series", "replication_delays"]
