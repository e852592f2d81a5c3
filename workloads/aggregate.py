"""Runs grouped by (scenario, label), each headline metric with a 95% interval, and ratios.

With three or more trials the unit is the trial: the estimate is the mean of the per-trial
values with a Student-t interval (`workloads.intervals`). With two trials there is no honest
interval ("too few trials"). With a single trial the spread between trials is unknown, so the
interval is a percentile bootstrap within that trial: latency over its operations, throughput
over its whole 1-s windows, the failover time over its faults (bytes and CPU per write have no
finer unit and get none). Each estimate names its basis and method, and the tables print them.

Ratios compare, per scenario, each pull label with `push`, and every label with `etcd` when an
`etcd` label is present (a production Raft as the external baseline): the ratio of the two
means with a log-scale interval over trials (`workloads.intervals.ratio_interval`), and each
trial's own ratio (trial t over trial t: same seed, run back to back) for the plots.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from workloads.bootstrap import (
    Resampled,
    Statistic,
    mean_of_rows,
    percentile_of_rows,
    resample,
)
from workloads.checker import LINEARIZABLE
from workloads.intervals import TOO_FEW, Estimate, mean_interval, ratio_interval
from workloads.results import RunRecord
from workloads.summary import RunSummary, window_latencies

BASELINE = "push"
EXTERNAL_BASELINE = "etcd"  # a production Raft, compared with every other label


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
    Metric(
        "cpu_per_write",
        "leader CPU per write",
        "µs",
        1e6,
        lambda s: s.leader_cpu_per_write,
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

    @property
    def not_applied(self) -> list[str]:
        """What the scenario asked for and this label's target did not take (a partition or an
        emulated latency etcd cannot have on loopback, a fault that failed): `skipped` fault
        records, once each. Such a label did not run the same scenario as the others."""
        details = (
            fault.detail
            for run in self.runs
            for fault in run.record.faults
            if fault.kind == "skipped" and not fault.detail.startswith("skipped (no leader)")
        )
        return list(dict.fromkeys(details))

    def basis(self) -> str:
        """How the intervals of this group were made, with their n, in a few words."""
        if self.trials >= 3:
            return f"t, {self.trials} trials"
        if self.trials == 2:
            return f"2 trials: {TOO_FEW}"
        parts = []
        for key in ("median", "throughput", "failover"):
            estimate = self.estimates.get(key)
            if estimate is not None and estimate.has_interval:
                parts.append(f"{METRIC_BY_KEY[key].title.split()[0]}: {estimate.basis}")
        return "1 trial, bootstrap within it; " + ("; ".join(parts) if parts else "no interval")

    def trial_values(self, metric: Metric) -> list[tuple[int, float]]:
        """(trial number, value of `metric`) of each trial that has one."""
        return [
            (run.summary.trial, value)
            for run in self.runs
            if (value := metric.per_trial(run.summary)) is not None
        ]

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
    trial_ratios: dict[str, list[float]] = field(default_factory=dict)  # paired by trial
    trials: tuple[int, int] = (0, 0)  # runs of label, of baseline

    @property
    def pair(self) -> str:
        return f"{self.label} / {self.baseline}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "label": self.label,
            "baseline": self.baseline,
            "estimates": {key: e.to_dict() for key, e in self.estimates.items()},
            "trial_ratios": self.trial_ratios,
            "trials": list(self.trials),
        }


def label_order(label: str) -> tuple[int, str]:
    """push first, then pull, then pull:<policy> alphabetically, anything else, etcd last."""
    if label == BASELINE:
        return 0, ""
    if label == "pull":
        return 1, ""
    if label == EXTERNAL_BASELINE:
        return 4, ""
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
    """Groups with their estimates, and the ratios between labels."""
    groups = group_runs(runs)
    for group in groups:
        for metric in METRICS:
            group.estimates[metric.key] = _estimate(group, metric)
    return groups, ratios(groups)


def ratio_pairs(labels: Sequence[str]) -> list[tuple[str, str]]:
    """(label, baseline) pairs of one scenario: pull*/push, then every label/etcd."""
    pairs = [(label, BASELINE) for label in labels if label.startswith("pull")]
    if BASELINE not in labels:
        pairs = []
    if EXTERNAL_BASELINE in labels:
        pairs += [(label, EXTERNAL_BASELINE) for label in labels if label != EXTERNAL_BASELINE]
    return pairs


def ratios(groups: Sequence[GroupStats]) -> list[RatioStats]:
    out = []
    for scenario in dict.fromkeys(g.scenario for g in groups):
        by_label = {g.label: g for g in groups if g.scenario == scenario}
        for label, baseline in ratio_pairs(list(by_label)):
            top, bottom = by_label[label], by_label[baseline]
            if top.not_applied or bottom.not_applied:
                continue  # not the same scenario on both sides: no ratio
            estimates, trial_ratios = {}, {}
            for metric in METRICS:
                upper, lower = top.trial_values(metric), bottom.trial_values(metric)
                estimates[metric.key] = ratio_interval([v for _, v in upper], [v for _, v in lower])
                trial_ratios[metric.key] = paired_ratios(upper, lower)
            counts = (top.trials, bottom.trials)
            out.append(RatioStats(scenario, label, baseline, estimates, trial_ratios, counts))
    return out


def paired_ratios(top: list[tuple[int, float]], bottom: list[tuple[int, float]]) -> list[float]:
    """top / bottom for each trial number that occurs once on each side (same seed, run back
    to back), in trial order; a zero denominator is left out."""
    upper, lower = _unique_trials(top), _unique_trials(bottom)
    return [upper[t] / lower[t] for t in sorted(upper) if lower.get(t)]


def _unique_trials(values: list[tuple[int, float]]) -> dict[int, float]:
    counts: dict[int, int] = {}
    for trial, _ in values:
        counts[trial] = counts.get(trial, 0) + 1
    return {trial: value for trial, value in values if counts[trial] == 1}


def _estimate(group: GroupStats, metric: Metric) -> Estimate:
    """Over trials when there are several, else a bootstrap within the one trial (and "too
    few trials" when that trial has no finer unit to resample)."""
    if group.trials > 1:
        values = [v for _, v in group.trial_values(metric)]
        return mean_interval(values, f"{len(values)} trials")
    estimate = _resample(group, metric).estimate()
    if estimate.value is not None and not estimate.has_interval:
        return replace(estimate, method=TOO_FEW)
    return estimate


def _resample(group: GroupStats, metric: Metric) -> Resampled:
    seed = zlib.crc32(f"{group.scenario}|{group.label}|{metric.key}".encode())
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
