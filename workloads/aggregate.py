"""Runs grouped by (scenario, label), each headline metric with a 95% bootstrap interval.

With two or more trials the unit is the trial (the statistic: the mean of the per-trial
values). With a single trial there is no spread between trials to resample, so latency is
resampled over that trial's operations, throughput over its whole 1-s windows and the failover
time over its faults; bytes per write has no finer unit and gets no interval. Each estimate
names its basis, and the tables print it.

Ratios compare each pull label with the push label of the same scenario, resampling both
groups independently (`workloads.bootstrap.ratio`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workloads.bootstrap import (
    Estimate,
    Resampled,
    Statistic,
    mean_of_rows,
    percentile_of_rows,
    ratio,
    resample,
)
from workloads.checker import LINEARIZABLE
from workloads.results import RunRecord
from workloads.summary import RunSummary, window_latencies

BASELINE = "push"


@dataclass(frozen=True, slots=True)
class Metric:
    key: str
    title: str
    unit: str
    scale: float  # multiply the stored value (SI units) by this to print it in `unit`
    per_trial: Callable[[RunSummary], float | None]
    better: str  # "lower" | "higher": how to read a ratio


METRICS = (
    Metric("median", "median latency", "ms", 1e3, lambda s: _p(s, "p50"), "lower"),
    Metric("p99", "p99 latency", "ms", 1e3, lambda s: _p(s, "p99"), "lower"),
    Metric("throughput", "throughput", "ops/s", 1.0, lambda s: s.throughput, "higher"),
    Metric("failover", "failover time", "s", 1.0, lambda s: s.failover, "lower"),
    Metric(
        "bytes_per_write",
        "leader egress per write",
        "B",
        1.0,
        lambda s: s.leader_egress_per_write,
        "lower",
    ),
)
METRIC_BY_KEY = {m.key: m for m in METRICS}


def _p(summary: RunSummary, which: str) -> float | None:
    stats = summary.latency.get("all")
    return None if stats is None else float(getattr(stats, which))


@dataclass(slots=True)
class RunData:
    """One run folder, loaded and summarized."""

    folder: Path
    record: RunRecord
    summary: RunSummary


@dataclass(slots=True)
class GroupStats:
    scenario: str
    label: str
    runs: list[RunData]
    estimates: dict[str, Estimate] = field(default_factory=dict)
    resampled: dict[str, Resampled] = field(default_factory=dict, repr=False)

    @property
    def trials(self) -> int:
        return len(self.runs)

    @property
    def verdicts(self) -> list[str]:
        return [run.summary.verdict for run in self.runs]

    @property
    def lost(self) -> int | None:
        """Acknowledged writes lost over all trials (None when some trial cannot tell)."""
        counts = [run.summary.acked_lost for run in self.runs]
        return None if any(c is None for c in counts) else sum(c or 0 for c in counts)

    @property
    def correct(self) -> bool:
        return all(v == LINEARIZABLE for v in self.verdicts) and self.lost == 0

    def basis(self) -> str:
        """What the intervals of this group resampled, in a few words."""
        if self.trials > 1:
            return f"{self.trials} trials"
        parts = []
        for key in ("median", "throughput", "failover"):
            estimate = self.estimates.get(key)
            if estimate is not None and estimate.has_interval:
                parts.append(f"{METRIC_BY_KEY[key].title.split()[0]}: {estimate.basis}")
        return "1 trial; " + ("; ".join(parts) if parts else "no interval")

    def mean_of(self, value: Callable[[RunSummary], float | None]) -> float | None:
        values = [v for run in self.runs if (v := value(run.summary)) is not None]
        return float(np.mean(values)) if values else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "label": self.label,
            "trials": self.trials,
            "runs": [run.folder.name for run in self.runs],
            "verdicts": self.verdicts,
            "acked_lost": self.lost,
            "basis": self.basis(),
            "estimates": {key: e.to_dict() for key, e in self.estimates.items()},
        }


@dataclass(slots=True)
class RatioStats:
    """Each metric of `label` divided by the same metric of `baseline` (same scenario)."""

    scenario: str
    label: str
    baseline: str
    estimates: dict[str, Estimate]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "label": self.label,
            "baseline": self.baseline,
            "estimates": {key: e.to_dict() for key, e in self.estimates.items()},
        }


def label_order(label: str) -> tuple[int, str]:
    """push first, then pull, then pull:<policy> alphabetically, then anything else."""
    if label == BASELINE:
        return 0, ""
    if label == "pull":
        return 1, ""
    return (2, label) if label.startswith("pull:") else (3, label)


def group_runs(runs: Sequence[RunData]) -> list[GroupStats]:
    """Runs grouped by (scenario, label) and ordered for reading, trials sorted."""
    groups: dict[tuple[str, str], list[RunData]] = {}
    for run in runs:
        groups.setdefault((run.summary.scenario, run.summary.label), []).append(run)
    ordered = sorted(groups, key=lambda k: (k[0], label_order(k[1])))
    out = []
    for key in ordered:
        members = sorted(groups[key], key=lambda r: (r.summary.trial, r.folder.name))
        out.append(GroupStats(key[0], key[1], members))
    return out


def aggregate(runs: Sequence[RunData]) -> tuple[list[GroupStats], list[RatioStats]]:
    """Groups with their estimates, and the pull/push ratios."""
    groups = group_runs(runs)
    for group in groups:
        for metric in METRICS:
            sampled = _resample(group, metric)
            group.resampled[metric.key] = sampled
            group.estimates[metric.key] = sampled.estimate()
    return groups, ratios(groups)


def ratios(groups: Sequence[GroupStats]) -> list[RatioStats]:
    out = []
    for group in groups:
        if not group.label.startswith("pull"):
            continue
        baseline = next(
            (g for g in groups if g.scenario == group.scenario and g.label == BASELINE), None
        )
        if baseline is None:
            continue
        estimates = {}
        for metric in METRICS:
            top, bottom = group.resampled[metric.key], baseline.resampled[metric.key]
            basis = top.basis if top.basis == bottom.basis else f"{top.basis} / {bottom.basis}"
            estimates[metric.key] = ratio(top, bottom, basis)
        out.append(RatioStats(group.scenario, group.label, BASELINE, estimates))
    return out


def _resample(group: GroupStats, metric: Metric) -> Resampled:
    seed = zlib.crc32(f"{group.scenario}|{group.label}|{metric.key}".encode())
    if group.trials > 1:
        values = [v for run in group.runs if (v := metric.per_trial(run.summary)) is not None]
        point = float(np.mean(values)) if values else None
        return resample(values, mean_of_rows, f"{len(values)} trials", point, seed=seed)
    run = group.runs[0]
    summary = run.summary
    point = metric.per_trial(summary)
    units: Sequence[float] | np.ndarray
    statistic: Statistic = mean_of_rows
    if metric.key in ("median", "p99"):
        units = window_latencies(run.record, summary.window)["all"]
        statistic = percentile_of_rows(50 if metric.key == "median" else 99)
        basis = f"{len(units)} ops"
    elif metric.key == "throughput":
        units = summary.throughput_windows
        basis = f"{len(units)} 1-s windows"
    elif metric.key == "failover":
        units = [f.unavailable for f in summary.faults if f.unavailable is not None]
        basis = f"{len(units)} faults"
    else:
        units = [] if point is None else [point]
        basis = "1 trial"
    if point is None:
        return Resampled(None, None, basis, 0)
    if len(units) < 2:
        return Resampled(point, None, basis, len(units))
    return resample(units, statistic, basis, point, seed=seed)
