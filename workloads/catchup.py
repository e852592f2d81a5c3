"""A new member's catch-up, as both drivers record it and as the report measures it.

Definitions (the same on the simulator and on real processes):

- **Catch-up time**: from the moment the add is requested at the leader to the first moment the
  newcomer has applied the configuration entry that added it, so everything committed before
  the add. The simulator watches the newcomer every millisecond of virtual time; the real driver
  polls its /status every 20 ms (so real times are up to ~20 ms late, plus one poll's latency).
- **Transferred**: the peer bytes the newcomer received during catch-up, per sender (the
  simulator's link counters; a real node's /metrics). The sender of most of them **served** it.
  Entries: what it applied beyond the snapshot it installed (applied minus snapshot index when
  it caught up); the snapshot index says how much came as a snapshot (0: none).
- **Primary's CPU and egress**: the leader at the add, during catch-up against the window of
  the same length just before the add, as rates (CPU seconds per second; bytes sent to peers
  per second). During: the primary's counters read at the add and at the catch-up (the
  simulator's link counters; a real node's /proc and /metrics). Before: the node time series
  (cumulative counters sampled every 100 ms, linearly interpolated: for a window shorter than
  a sample interval, that is the rate over the interval around it; the load is steady then).
  A newcomer that never caught up: during is [add, end of the run], from the time series.
  The simulator has no CPU (n/a).

A removed member is stopped once the leader's configuration has dropped it (real: the process
stops; simulator: the node crashes), as an operator would decommission it.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from protocols.types import NodeId

SHORTEST = 0.001  # seconds: a window is never shorter (a catch-up seen at its first look)
METADATA_KEY = "membership"  # metadata[...] = {"changes": [...], "catchups": [...]}


@dataclass(slots=True)
class CatchUpObservation:
    """What a driver saw of one newcomer (run-clock seconds; `caught_up` None: never)."""

    node: NodeId
    added: float  # the add was requested
    index: int  # the configuration entry that added it
    primary: NodeId  # the leader the add went to
    caught_up: float | None = None
    applied: int = 0  # at catch-up
    snapshot_index: int = 0  # at catch-up (0: it installed no snapshot)
    sync_source: NodeId | None = None  # at catch-up (pull)
    received: dict[NodeId, int] = field(default_factory=dict)  # peer bytes in the window
    promoted: float | None = None  # promoted to voter (None: not, or stayed a learner)
    primary_sent: list[int] = field(default_factory=list)  # [at the add, at catch-up]
    primary_cpu: list[float] = field(default_factory=list)  # the same (empty: no CPU)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CatchUpObservation:
        received = raw.get("received") or {}
        return cls(
            node=str(raw["node"]),
            added=float(raw["added"]),
            index=int(raw["index"]),
            primary=str(raw["primary"]),
            caught_up=None if raw.get("caught_up") is None else float(raw["caught_up"]),
            applied=int(raw.get("applied") or 0),
            snapshot_index=int(raw.get("snapshot_index") or 0),
            sync_source=raw.get("sync_source"),
            received={str(k): int(v) for k, v in received.items()},
            promoted=None if raw.get("promoted") is None else float(raw["promoted"]),
            primary_sent=[int(v) for v in raw.get("primary_sent") or []],
            primary_cpu=[float(v) for v in raw.get("primary_cpu") or []],
        )


@dataclass(frozen=True, slots=True)
class CatchUp:
    """One newcomer's catch-up, measured (see the module docstring)."""

    node: NodeId
    primary: NodeId
    seconds: float | None  # None: it did not catch up before the run ended
    bytes_received: int
    served_by: NodeId | None
    entries: int
    snapshot_index: int
    primary_cpu_before: float | None  # CPU seconds per second
    primary_cpu_during: float | None
    primary_egress_before: float | None  # bytes per second
    primary_egress_during: float | None
    window: float  # seconds the rates were read over

    @property
    def caught_up(self) -> bool:
        return self.seconds is not None

    @property
    def extra_cpu(self) -> float | None:
        return _difference(self.primary_cpu_during, self.primary_cpu_before)

    @property
    def extra_egress(self) -> float | None:
        return _difference(self.primary_egress_during, self.primary_egress_before)


def _difference(during: float | None, before: float | None) -> float | None:
    return None if during is None or before is None else during - before


def observations(metadata: Mapping[str, Any]) -> list[CatchUpObservation]:
    section = metadata.get(METADATA_KEY) or {}
    return [CatchUpObservation.from_dict(raw) for raw in section.get("catchups") or []]


def skipped_reason(faults: Sequence[Any]) -> str | None:
    """Why the run's membership actions were not taken (a target without them), if so."""
    for fault in faults:
        detail = str(getattr(fault, "detail", ""))
        unsupported = detail.startswith("skipped (")  # the target's reason (real_driver)
        if getattr(fault, "kind", "") == "skipped" and unsupported and "add-node" in detail:
            return detail[len("skipped (") : detail.rindex("): ")]
    return None


def measure(
    observation: CatchUpObservation, rows: Sequence[Mapping[str, Any]], end: float
) -> CatchUp:
    """The catch-up of one observation, the primary's rates before it read from `rows` (the
    run's node time series); `end`: the last moment the run was watched."""
    start = observation.added
    seconds = None
    if observation.caught_up is not None:
        seconds = max(0.0, observation.caught_up - start)
    window = max(seconds if seconds is not None else end - start, SHORTEST)
    series = _series(rows, observation.primary)
    received = observation.received
    served = max(sorted(received), key=lambda peer: received[peer]) if received else None
    return CatchUp(
        node=observation.node,
        primary=observation.primary,
        seconds=seconds,
        bytes_received=sum(received.values()),
        served_by=served if served is not None and received[served] > 0 else None,
        entries=max(0, observation.applied - observation.snapshot_index),
        snapshot_index=observation.snapshot_index,
        primary_cpu_before=_rate(series, "cpu", start - window, start),
        primary_cpu_during=_during(observation.primary_cpu, seconds, series, "cpu", start, window),
        primary_egress_before=_rate(series, "sent", start - window, start),
        primary_egress_during=_during(
            observation.primary_sent, seconds, series, "sent", start, window
        ),
        window=window,
    )


def _during(
    edges: Sequence[float],
    seconds: float | None,
    series: Sequence[Mapping[str, Any]],
    key: str,
    start: float,
    window: float,
) -> float | None:
    """The rate over the catch-up: from the readings at its two ends when there are both,
    else from the time series (a newcomer that never caught up)."""
    if seconds is not None:
        if len(edges) != 2:
            return None
        return (edges[1] - edges[0]) / window
    return _rate(series, key, start, start + window)


def catch_ups(metadata: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> list[CatchUp]:
    """Every newcomer of one run, measured."""
    window = metadata.get("window") or [0.0, 0.0]
    end = float(window[1]) if len(window) > 1 else 0.0
    last = max((float(row["t"]) for row in rows), default=end)
    return [measure(obs, rows, max(end, last)) for obs in observations(metadata)]


def _series(rows: Sequence[Mapping[str, Any]], node: NodeId) -> list[Mapping[str, Any]]:
    return sorted((row for row in rows if row.get("node") == node), key=lambda r: float(r["t"]))


def _rate(series: Sequence[Mapping[str, Any]], key: str, t0: float, t1: float) -> float | None:
    """The growth per second of a cumulative counter over [t0, t1] (None: not sampled, or
    the window is not covered by samples)."""
    points = [(float(row["t"]), float(row[key])) for row in series if row.get(key) is not None]
    if len(points) < 2 or t1 <= t0 or t0 < points[0][0] or t1 > points[-1][0]:
        return None
    return (_at(points, t1) - _at(points, t0)) / (t1 - t0)


def _at(points: Sequence[tuple[float, float]], t: float) -> float:
    """The counter at `t`, linearly interpolated between the samples around it."""
    times = [p[0] for p in points]
    right = bisect.bisect_left(times, t)
    if right < len(points) and times[right] == t:
        return points[right][1]
    left = max(right - 1, 0)
    right = min(right, len(points) - 1)
    (ta, va), (tb, vb) = points[left], points[right]
    if tb == ta:
        return va
    return va + (vb - va) * (t - ta) / (tb - ta)


__all__ = [
    "METADATA_KEY",
    "SHORTEST",
    "CatchUp",
    "CatchUpObservation",
    "catch_ups",
    "measure",
    "observations",
    "skipped_reason",
]
