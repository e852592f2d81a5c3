"""The numbers of one run: what a report row and `summary.json` hold.

`summarize(record)` is a pure function of a run folder's contents (plus the checker's time
budget). Its choices, stated once:

- **Measured window.** metadata["window"] = [start, end] in run seconds. Throughput counts the
  operations that *completed* ok inside it; latency percentiles use the ok operations that were
  meant to *start* inside it (open loop: the scheduled start, so a backlog shows up as latency
  instead of being left out); failed/unknown counts use the invocation time.
- **Correctness** is judged over the whole history (warm-up and cool-down included): the
  checker's verdict, and acknowledged writes lost as defined in `workloads.lost_writes`.
- **Unavailability after a fault.** Ok completions are counted in 100 ms bins starting at the
  fault. The pre-fault rate is the ok rate over the 2 s before it (the whole window's rate if
  less than 0.5 s of run precedes it). A bin is healthy at >= 50% of that rate. The fault's
  dip is the first two unhealthy bins in a row that start less than `DIP_WITHIN` (1 s) after
  the fault is in force (`FaultRecord.in_force`: a partition applied over HTTP lands a little
  after it starts, and operations already committed keep completing for a moment, so the first
  bins after the fault can still be healthy). No such dip: the fault never dented throughput
  and scores 0. Otherwise the window runs from the fault to the first bin after the dip that,
  together with the next bin, is healthy again; a rate that never recovers scores the time to
  the end of the data (the window's end or the last operation, whichever is later;
  `recovered` False: a lower bound).
  Resolution: one bin (100 ms). Faults that undo another (`restart`, `resume`, `heal`, a
  detail starting with "undo", a slow-link/slow-disk whose detail adds nothing such as the
  simulator's "slow-link n5") and faults the driver skipped (kind or detail "skip...") are
  not scored.
- **Election time**: from the fault to the first sample showing a leader of a higher term than
  the one leading at the fault, looking no further than the next fault (None: no new leader).
- **Leader costs.** Leader CPU is each node's CPU use over the window (cores), averaged with
  its leader_time as the weight. Leader egress is each node's bytes sent over its peer links in
  the window, weighted the same way (exact when one node led throughout; with a leader change
  it mixes leader and follower traffic in proportion). Both are divided by the acknowledged
  writes (write/cas/delete ok) that completed in the window. Cross-region bytes: links whose
  ends are in different regions (links.json `regions`).
- **Commit lag**: at each sample with a leader (up, role "leader", highest term), the leader's
  commit index minus that of every follower that is up.
- **Ceiling** (bandwidth-capped scenarios only): the acked writes/s the egress caps allow,
  predicted from the replication tree and observed from the bytes the pipes carried; see
  `workloads.ceiling`. Compare it with `write_throughput`.
- **Load generator**: metadata["driver"]["cpu_share"] (share of the whole machine, 0..1) and
  ["ceiling"] (ops/s the load generator reaches against a no-op server; None if unknown).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workloads.ceiling import Ceiling, run_ceiling
from workloads.checker import check_operations
from workloads.lost_writes import acked_writes_lost
from workloads.results import FaultRecord, RunRecord
from workloads.run_series import (
    MUTATIONS,
    commit_lag_series,
    count_in,
    measured_window,
    new_leader_after,
    ok_completions,
    rate_windows,
    start_time,
)

BIN = 0.1  # seconds per bin when looking for the end of an unavailability window
PRE_FAULT = 2.0  # seconds before a fault that define its "normal" rate
MIN_PRE_FAULT = 0.5
RECOVERED_FRACTION = 0.5
DIP_WITHIN = 1.0  # seconds after a fault is in force within which its dip must begin
UNDO_KINDS = frozenset({"restart", "resume", "heal"})
SLOWDOWNS = frozenset({"slow-link", "slow-disk"})
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """Latency of the ok operations of one kind, in seconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float


@dataclass(frozen=True, slots=True)
class FaultImpact:
    """What one fault did to availability (times in seconds)."""

    t: float
    kind: str
    nodes: tuple[str, ...]
    detail: str
    pre_rate: float  # ok ops/s before the fault
    unavailable: float | None  # None: no load before the fault to compare with
    recovered: bool  # False: `unavailable` is a lower bound (never back to 50%)
    election: float | None  # None: no new leader before the next fault
    new_leader: str | None


@dataclass(frozen=True, slots=True)
class FollowerLag:
    """Commit-index lag (leader commit - follower commit, entries) over the window."""

    node: str
    samples: int
    mean: float
    p99: float
    max: int


@dataclass(slots=True)
class RunSummary:
    run: str
    scenario: str
    label: str
    protocol: str
    engine: str
    trial: int
    seed: Any
    window: tuple[float, float]
    ok_ops: int
    failed_ops: int
    unknown_ops: int
    acked_writes: int  # write/cas/delete ok, completed in the window
    throughput: float  # ok ops/s, all kinds
    write_throughput: float  # acked writes/s
    throughput_windows: list[float]  # ok ops/s in each whole second of the window
    latency: dict[str, LatencyStats]  # "all", and per kind ("read:local" for non-lin reads)
    verdict: str
    verdict_detail: str
    check_seconds: float
    acked_lost: int | None
    lost_detail: str
    faults: list[FaultImpact] = field(default_factory=list)
    leader_cpu: float | None = None  # cores used by the leader
    leader_cpu_per_write: float | None = None  # CPU seconds per acked write
    leader_egress_per_write: float | None = None  # bytes
    cross_region_per_write: float | None = None  # bytes over links between regions
    link_bytes_per_write: float | None = None  # bytes over all peer links
    commit_lag: list[FollowerLag] = field(default_factory=list)
    driver_cpu_share: float | None = None  # of the whole machine, 0..1
    driver_ceiling: float | None = None  # ops/s the load generator can drive, if calibrated
    # keys on which some member's own final state differs from the linearizable one (None: the
    # members were not read one by one; etcd's are)
    member_divergence: int | None = None
    # bandwidth-capped scenarios: the throughput the caps allow (workloads.ceiling)
    ceiling: Ceiling | None = None

    @property
    def failover(self) -> float | None:
        """Mean unavailability window over the run's scored faults (None: no fault)."""
        windows = [f.unavailable for f in self.faults if f.unavailable is not None]
        return float(np.mean(windows)) if windows else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failover"] = self.failover
        return data


def summarize(record: RunRecord, budget: float = 10.0, run: str = "") -> RunSummary:
    """The summary of one run (see the module docstring for every definition)."""
    meta = record.metadata
    start, end = measured_window(record)
    length = end - start
    completions = ok_completions(record.ops)
    in_window_ok = count_in(completions, start, end)
    acked = [
        op
        for op in record.ops
        if op.f in MUTATIONS
        and op.outcome == "ok"
        and op.complete is not None
        and start <= op.complete < end
    ]
    started_in = [op for op in record.ops if start <= start_time(op) < end]
    check = check_operations(record.history(), budget=budget)
    final_state = meta.get("final_state")
    loss = acked_writes_lost(
        record.ops,
        check.verdict,
        final_state if isinstance(final_state, dict) else None,
        partial=meta.get("final_state_partial") is True,
        unread=_unread_keys(meta),
    )
    summary = RunSummary(
        run=run,
        scenario=str(meta.get("scenario", "?")),
        label=str(meta.get("label", meta.get("protocol", "?"))),
        protocol=str(meta.get("protocol", "?")),
        engine=str(meta.get("engine", "?")),
        trial=_int(meta.get("trial"), 0),
        seed=meta.get("seed"),
        window=(start, end),
        ok_ops=in_window_ok,
        failed_ops=sum(1 for op in started_in if op.outcome == "fail"),
        unknown_ops=sum(1 for op in started_in if op.outcome == "unknown"),
        acked_writes=len(acked),
        throughput=in_window_ok / length,
        write_throughput=len(acked) / length,
        throughput_windows=rate_windows(completions, start, end),
        latency=latency_stats(record, (start, end)),
        verdict=check.verdict,
        verdict_detail=check.detail,
        check_seconds=check.elapsed,
        acked_lost=loss.lost,
        lost_detail=loss.detail,
        faults=fault_impacts(record, (start, end)),
        commit_lag=follower_lag(record, (start, end)),
    )
    _add_costs(summary, record, length)
    summary.ceiling = run_ceiling(record, len(acked))
    real = meta.get("real")
    divergence = real.get("member_divergence") if isinstance(real, dict) else None
    if isinstance(divergence, dict) and isinstance(divergence.get("keys"), dict):
        summary.member_divergence = len(divergence["keys"])
    driver = meta.get("driver")
    if isinstance(driver, dict):
        summary.driver_cpu_share = _float(driver.get("cpu_share"))
        summary.driver_ceiling = _float(driver.get("ceiling", driver.get("calibrated_ceiling")))
    return summary


def save_summary(summary: RunSummary, folder: Path) -> Path:
    """Write `summary.json` into a run folder (what results.py's docstring promises)."""
    path = folder / "summary.json"
    path.write_text(json.dumps(summary.to_dict(), indent=1, sort_keys=True, default=str) + "\n")
    return path


# ---- latency ------------------------------------------------------------------------------------


def op_kind(f: str, consistency: str | None) -> str:
    """Reads that are not linearizable are their own kind: they cost far less."""
    if f == "read" and consistency not in (None, "linearizable"):
        return f"read:{consistency}"
    return f


def window_latencies(record: RunRecord, window: tuple[float, float]) -> dict[str, np.ndarray]:
    """Latencies (s) of the ok operations meant to start in the window: "all" and per kind."""
    kinds: dict[str, list[float]] = {"all": []}
    for op in record.ops:
        latency = op.latency
        if op.outcome != "ok" or latency is None or not window[0] <= start_time(op) < window[1]:
            continue
        kinds["all"].append(latency)
        kinds.setdefault(op_kind(op.f, op.consistency), []).append(latency)
    return {kind: np.asarray(values, dtype=float) for kind, values in kinds.items()}


def latency_stats(record: RunRecord, window: tuple[float, float]) -> dict[str, LatencyStats]:
    out: dict[str, LatencyStats] = {}
    for kind, values in window_latencies(record, window).items():
        if values.size == 0:
            continue
        p50, p90, p99 = (float(x) for x in np.percentile(values, PERCENTILES))
        out[kind] = LatencyStats(int(values.size), p50, p90, p99, float(values.max()))
    return out


# ---- faults -------------------------------------------------------------------------------------


def scored_faults(faults: list[FaultRecord]) -> list[FaultRecord]:
    """The faults that do something, in time order: not an undo of an earlier one, not one
    the driver skipped."""
    return sorted((f for f in faults if not _is_undo(f)), key=lambda f: f.t)


def _is_undo(fault: FaultRecord) -> bool:
    detail = fault.detail.lower()
    if fault.kind in UNDO_KINDS or fault.kind == "skipped" or detail.startswith(("undo", "skip")):
        return True
    # the simulator's slow-link/slow-disk with nothing added ("slow-link n5") clears the fault
    return fault.kind in SLOWDOWNS and bool(detail) and not re.search(r"\+|loss|jitter", detail)


def fault_impacts(record: RunRecord, window: tuple[float, float]) -> list[FaultImpact]:
    completions = ok_completions(record.ops)
    horizon = max(
        [window[1], *(op.complete if op.complete is not None else op.invoke for op in record.ops)]
    )
    first = min((op.invoke for op in record.ops), default=window[0])
    whole_rate = count_in(completions, *window) / (window[1] - window[0])
    every_fault = sorted(record.faults, key=lambda f: f.t)
    impacts = []
    for fault in scored_faults(record.faults):
        pre_start = max(fault.t - PRE_FAULT, first)
        if fault.t - pre_start >= MIN_PRE_FAULT:
            pre_rate = count_in(completions, pre_start, fault.t) / (fault.t - pre_start)
        else:
            pre_rate = whole_rate
        unavailable, recovered = _unavailable(
            completions, fault.t, fault.in_force + DIP_WITHIN, pre_rate, horizon
        )
        later = [f.t for f in every_fault if f.t > fault.t]
        elected = new_leader_after(record, fault.t, later[0] if later else None)
        impacts.append(
            FaultImpact(
                t=fault.t,
                kind=fault.kind,
                nodes=tuple(fault.nodes),
                detail=fault.detail,
                pre_rate=pre_rate,
                unavailable=unavailable,
                recovered=recovered,
                election=elected[0] - fault.t if elected else None,
                new_leader=elected[1] if elected else None,
            )
        )
    return impacts


def _unavailable(
    completions: np.ndarray, t: float, dip_by: float, pre_rate: float, horizon: float
) -> tuple[float | None, bool]:
    """Seconds from `t` until the rate is back after a dip that starts before `dip_by`."""
    if pre_rate <= 0:
        return None, False
    threshold = RECOVERED_FRACTION * pre_rate * BIN
    bins = max(0, int(np.ceil((horizon - t) / BIN - 1e-9)))
    edges = t + BIN * np.arange(bins + 1)
    counts = np.diff(np.searchsorted(completions, edges, side="left"))
    healthy = counts >= threshold
    dip = next(
        (
            i
            for i in range(bins)
            if edges[i] < dip_by and not healthy[i] and (i + 1 >= bins or not healthy[i + 1])
        ),
        None,
    )
    if dip is None:
        return 0.0, True
    for i in range(dip, bins):
        if healthy[i] and (i + 1 >= bins or healthy[i + 1]):
            return i * BIN, True
    return max(0.0, horizon - t), False


# ---- commit lag and costs -----------------------------------------------------------------------


def follower_lag(record: RunRecord, window: tuple[float, float]) -> list[FollowerLag]:
    lags: dict[str, list[int]] = {}
    for _, node, lag in commit_lag_series(record, window):
        lags.setdefault(node, []).append(lag)
    out = []
    for node in sorted(lags):
        values = np.asarray(lags[node], dtype=float)
        out.append(
            FollowerLag(
                node,
                int(values.size),
                float(values.mean()),
                float(np.percentile(values, 99)),
                int(values.max()),
            )
        )
    return out


def _add_costs(summary: RunSummary, record: RunRecord, length: float) -> None:
    led = {
        node: _float(info.get("leader_time")) or 0.0
        for node, info in record.nodes.items()
        if isinstance(info, dict)
    }
    total_led = sum(led.values())
    egress: dict[str, float] = {}
    all_bytes = cross = 0.0
    for link in record.links:
        sent = _float(link.get("bytes")) or 0.0
        src, dst = str(link.get("src")), str(link.get("dst"))
        egress[src] = egress.get(src, 0.0) + sent
        all_bytes += sent
        if src in record.regions and dst in record.regions:
            cross += sent if record.regions[src] != record.regions[dst] else 0.0
    writes = summary.acked_writes
    if writes and record.links:
        summary.link_bytes_per_write = all_bytes / writes
        summary.cross_region_per_write = cross / writes
    if total_led <= 0:
        return
    if writes and record.links:
        leader_bytes = sum(egress.get(node, 0.0) * w for node, w in led.items()) / total_led
        summary.leader_egress_per_write = leader_bytes / writes
    cpu = {
        node: _float(info.get("cpu_seconds"))
        for node, info in record.nodes.items()
        if isinstance(info, dict)
    }
    if all(cpu.get(node) is not None for node, w in led.items() if w > 0):
        seconds = sum((cpu[node] or 0.0) * w for node, w in led.items()) / total_led
        summary.leader_cpu = seconds / length
        if writes:
            summary.leader_cpu_per_write = seconds / writes


def _unread_keys(meta: dict[str, Any]) -> list[str]:
    """Keys the driver could not read at the end: top level, or in its engine's section."""
    found = meta.get("final_state_unread")
    for section in meta.values():
        if found is None and isinstance(section, dict):
            found = section.get("final_state_unread")
    return [str(key) for key in found] if isinstance(found, list) else []


def _float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
