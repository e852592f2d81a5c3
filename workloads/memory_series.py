"""Memory over time: each node's resident memory (RSS) and the log it holds, and whether the
memory stays flat after warm-up. Pure functions of a `RunRecord`, shared by tables and figures.

What "flat" means here, so that a reader can check it:

- **Span:** the last 80% of the measured window (`TAIL`). The warm-up before the window and its
  first 20% are left out: a node's heap, caches and log grow to their working size there.
- **Slope:** that span is cut into `BLOCKS` consecutive blocks of equal length; a
  least-squares line is fitted through the mean RSS of each block (MiB against seconds).
- **Interval:** 95%, Student t on that fit (BLOCKS - 2 degrees of freedom). Why blocks: RSS
  moves in steps that persist, so 100 ms samples are far from independent, and a line through
  them claims an interval far too narrow; the means of 10 blocks of ~50 s each (batch means)
  are much closer to independent. Still, a step that happens once and stays counts as growth
  spread over the span: that is what the verdict is about.
- **Growth** is the slope times 600 s: MiB per 10 minutes, with the same interval.
- **Verdict** per node: *grows* when the whole interval of its growth is above
  `TOLERANCE_MIB` per 10 minutes, *flat* when the whole interval is below it, *unclear*
  otherwise (the run cannot tell: too short or too noisy). A label grows when one of its
  nodes grows in some trial; it is flat when every node of every trial is flat.

The tolerance (1 MiB per 10 min) is what a 10-minute run can resolve on a ~40 MiB Python
process, not a promise for days: a node growing just under it would still gain ~6 MiB an hour.
Runs without RSS samples (the simulator, which has no processes) get no verdict; their in-memory
log (`log_entries`) is still shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from protocols.types import NodeId
from workloads.results import RunRecord
from workloads.run_series import measured_window

MIB = 1024 * 1024
TAIL = 0.8  # the share of the measured window the slope is fitted over (its end)
BLOCKS = 10  # consecutive blocks the span is cut into (batch means)
PER = 600.0  # growth is given per this many seconds (10 minutes)
TOLERANCE_MIB = 1.0  # MiB per 10 minutes: at or below this a node counts as flat
LEVEL = 0.95
GROWS, FLAT, UNCLEAR = "grows", "flat", "unclear"


@dataclass(frozen=True, slots=True)
class MemoryTrend:
    """One node's memory over the fitted span (see the module docstring)."""

    node: NodeId
    span: tuple[float, float]  # run seconds the slope is fitted over
    blocks: int  # block means the line is fitted through
    start_mib: float  # fitted RSS at the start and end of the span
    end_mib: float
    peak_mib: float  # highest RSS sample in the span
    growth: float  # MiB per 10 minutes
    low: float | None  # its 95% interval (None: too few blocks)
    high: float | None
    verdict: str  # GROWS | FLAT | UNCLEAR

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class LogHeld:
    """The log one node held in memory after warm-up, and how often it compacted."""

    node: NodeId
    max_entries: int  # most entries held in memory at a sample in the span
    mean_entries: float
    snapshots: int  # distinct snapshot indexes seen over the whole run (≈ snapshots taken)
    last_snapshot: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_span(record: RunRecord) -> tuple[float, float]:
    """The last `TAIL` of the measured window."""
    start, end = measured_window(record)
    return end - TAIL * (end - start), end


def node_series(record: RunRecord, node: NodeId, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(times, values) of one numeric time-series column of `node`, whole run, in time order."""
    points = sorted(
        (float(row["t"]), float(row[column]))
        for row in record.timeseries
        if row.get("node") == node and _number(row.get(column))
    )
    if not points:
        return np.zeros(0), np.zeros(0)
    t, v = zip(*points, strict=True)
    return np.asarray(t), np.asarray(v)


def nodes_of(record: RunRecord) -> list[NodeId]:
    return sorted({str(row["node"]) for row in record.timeseries if "node" in row})


def has_rss(record: RunRecord) -> bool:
    return any(_number(row.get("rss")) for row in record.timeseries)


def has_log_counts(record: RunRecord) -> bool:
    return any(_number(row.get("log_entries")) for row in record.timeseries)


def memory_trend(record: RunRecord, node: NodeId) -> MemoryTrend | None:
    """`node`'s RSS trend over the fitted span; None without RSS samples there."""
    span = fit_span(record)
    t, rss = node_series(record, node, "rss")
    inside = (t >= span[0]) & (t <= span[1])
    t, mib = t[inside], rss[inside] / MIB
    if t.size == 0:
        return None
    centres, means = _block_means(t, mib, span)
    slope, low, high = slope_interval(centres, means)
    if slope is None:
        return None
    intercept = float(np.mean(means) - slope * np.mean(centres))
    growth = slope * PER
    low_g = None if low is None else low * PER
    high_g = None if high is None else high * PER
    return MemoryTrend(
        node=node,
        span=span,
        blocks=int(centres.size),
        start_mib=intercept + slope * span[0],
        end_mib=intercept + slope * span[1],
        peak_mib=float(np.max(mib)),
        growth=growth,
        low=low_g,
        high=high_g,
        verdict=verdict(low_g, high_g),
    )


def block_slope(
    t: np.ndarray, v: np.ndarray, span: tuple[float, float]
) -> tuple[float | None, float | None, float | None]:
    """Slope of v on t through the means of `BLOCKS` equal blocks of `span`, with its 95%
    interval (batch means; see the module docstring)."""
    centres, means = _block_means(t, v, span)
    return slope_interval(centres, means)


def slope_interval(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None, float | None]:
    """Least-squares slope of y on x with its 95% Student-t interval. (None, None, None) below
    2 points; no interval below 3."""
    n = int(x.size)
    if n < 2 or float(np.ptp(x)) == 0.0:
        return None, None, None
    if float(np.ptp(y)) == 0.0:
        # Every point equal (RSS that did not move a page over the span): the line is exact,
        # slope 0 with nothing left to vary, where linregress gives an undefined (NaN) error.
        return 0.0, (0.0 if n >= 3 else None), (0.0 if n >= 3 else None)
    fit = stats.linregress(x, y)
    slope = float(fit.slope)
    if n < 3:
        return slope, None, None
    half = float(stats.t.ppf(0.5 + LEVEL / 2, n - 2)) * float(fit.stderr)
    return slope, slope - half, slope + half


def verdict(low: float | None, high: float | None) -> str:
    """GROWS, FLAT or UNCLEAR for a growth interval in MiB per 10 minutes."""
    if low is None or high is None:
        return UNCLEAR
    if low > TOLERANCE_MIB:
        return GROWS
    if high < TOLERANCE_MIB:
        return FLAT
    return UNCLEAR


def label_verdict(trends: Sequence[MemoryTrend]) -> str:
    """A label grows if one node grows; it is flat if every node is flat."""
    verdicts = {trend.verdict for trend in trends}
    if not verdicts:
        return UNCLEAR
    if GROWS in verdicts:
        return GROWS
    return FLAT if verdicts == {FLAT} else UNCLEAR


def log_held(record: RunRecord, node: NodeId) -> LogHeld | None:
    """How much log `node` held in memory over the fitted span; None without counts."""
    span = fit_span(record)
    t, entries = node_series(record, node, "log_entries")
    inside = (t >= span[0]) & (t <= span[1])
    if not inside.any():
        return None
    _, index = node_series(record, node, "snapshot_index")
    taken = {int(i) for i in index if i > 0}
    return LogHeld(
        node=node,
        max_entries=int(np.max(entries[inside])),
        mean_entries=float(np.mean(entries[inside])),
        snapshots=len(taken),
        last_snapshot=max(taken, default=0),
    )


def _block_means(
    t: np.ndarray, v: np.ndarray, span: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean time and mean value of the samples in each of `BLOCKS` equal blocks of `span`
    (blocks without samples left out)."""
    width = (span[1] - span[0]) / BLOCKS
    keys = np.minimum(np.floor((t - span[0]) / width), BLOCKS - 1).astype(np.int64)
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return (
        np.bincount(inverse, weights=t) / counts,
        np.bincount(inverse, weights=v) / counts,
    )


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


__all__ = [
    "FLAT",
    "GROWS",
    "TOLERANCE_MIB",
    "UNCLEAR",
    "LogHeld",
    "MemoryTrend",
    "block_slope",
    "fit_span",
    "has_log_counts",
    "has_rss",
    "label_verdict",
    "log_held",
    "memory_trend",
    "node_series",
    "nodes_of",
    "slope_interval",
    "verdict",
]
