"""Percentile-bootstrap confidence intervals, for a statistic and for a ratio of two.

Used within one trial, where the units are many (operations, 1-s windows); over a handful of
trials `workloads.intervals` is used instead (a bootstrap of 3 values under-covers).

A 95% interval is the 2.5th and 97.5th percentiles of the statistic over resamples drawn with
replacement from the sampling units (operations or 1-s windows of a single trial).
The generator is seeded, so a report regenerated from the same results prints the same
intervals. Resamples are drawn in chunks so that a million latencies do not need a
resamples x n matrix in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from workloads.intervals import BOOTSTRAP_METHOD, Estimate

Statistic = Callable[[np.ndarray], np.ndarray]
"""Maps a (resamples, n) array to one value per row."""

RESAMPLES = 2000
LEVEL = 0.95
SEED = 20_240_601
CHUNK_CELLS = 2_000_000  # values per chunk of resamples
WORK_CELLS = 100_000_000  # above this many resampled values, fewer resamples (at least 500)
MIN_RESAMPLES = 500


def mean_of_rows(values: np.ndarray) -> np.ndarray:
    return np.asarray(values.mean(axis=1))


def percentile_of_rows(q: float) -> Statistic:
    def statistic(values: np.ndarray) -> np.ndarray:
        return np.asarray(np.percentile(values, q, axis=1))

    return statistic


def replicates(
    samples: Sequence[float] | np.ndarray,
    statistic: Statistic,
    rng: np.random.Generator,
    resamples: int = RESAMPLES,
) -> np.ndarray:
    """The statistic over `resamples` bootstrap resamples of `samples`.

    A very large sample (a million latencies) gets fewer resamples, never under 500, to keep
    the work bounded; its interval is narrow anyway.
    """
    data = np.asarray(samples, dtype=float)
    n = data.size
    resamples = min(resamples, max(MIN_RESAMPLES, WORK_CELLS // max(n, 1)))
    rows = max(1, CHUNK_CELLS // max(n, 1))
    out = np.empty(resamples, dtype=float)
    done = 0
    while done < resamples:
        size = min(rows, resamples - done)
        # 32-bit indexes: numpy draws them several times faster than 64-bit ones
        picks = rng.integers(0, n, size=(size, n), dtype=np.int32)
        out[done : done + size] = statistic(data[picks])
        done += size
    return out


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True, slots=True)
class Resampled:
    """A statistic's point value and its bootstrap replicates (None: a single unit)."""

    point: float | None
    reps: np.ndarray | None
    basis: str
    n: int

    def estimate(self) -> Estimate:
        if self.point is None:
            return Estimate(None, basis=self.basis or "no data")
        if self.reps is None:
            return Estimate(self.point, basis=self.basis, n=self.n)
        low, high = interval(self.reps)
        return Estimate(self.point, low, high, self.basis, self.n, BOOTSTRAP_METHOD)


def resample(
    samples: Sequence[float] | np.ndarray,
    statistic: Statistic,
    basis: str,
    point: float | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Resampled:
    """Point estimate (`point`, else the statistic of the data) and bootstrap replicates."""
    data = np.asarray(samples, dtype=float)
    if data.size == 0:
        return Resampled(None, None, "no data", 0)
    value = point if point is not None else float(statistic(data[np.newaxis, :])[0])
    if data.size == 1:
        return Resampled(value, None, basis, 1)
    reps = replicates(data, statistic, np.random.default_rng(seed), resamples)
    return Resampled(value, reps, basis, int(data.size))


def bootstrap(
    samples: Sequence[float] | np.ndarray,
    statistic: Statistic,
    basis: str,
    point: float | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """Point estimate with its 95% percentile-bootstrap interval."""
    return resample(samples, statistic, basis, point, resamples, seed).estimate()


def ratio(top: Resampled, bottom: Resampled, basis: str) -> Estimate:
    """top / bottom, each side's replicates drawn independently (a single unit counts as a
    constant). Replicates with a zero denominator are dropped."""
    if top.point is None or bottom.point is None:
        return Estimate(None, basis="no data")
    point = top.point / bottom.point if bottom.point else None
    if top.reps is None and bottom.reps is None:
        return Estimate(point, basis=basis, n=1)
    size = min(r.size for r in (top.reps, bottom.reps) if r is not None)
    upper = top.reps[:size] if top.reps is not None else np.full(size, top.point)
    lower = bottom.reps[:size] if bottom.reps is not None else np.full(size, bottom.point)
    usable = lower != 0
    if point is None or not usable.any():
        return Estimate(point, basis=basis, n=min(top.n, bottom.n))
    low, high = interval(upper[usable] / lower[usable])
    return Estimate(point, low, high, basis, min(top.n, bottom.n), BOOTSTRAP_METHOD)


def bootstrap_ratio(
    numerator: Sequence[float] | np.ndarray,
    denominator: Sequence[float] | np.ndarray,
    statistic: Statistic,
    basis: str,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Estimate:
    """statistic(numerator) / statistic(denominator) with a 95% bootstrap interval."""
    top = resample(numerator, statistic, basis, resamples=resamples, seed=seed)
    bottom = resample(denominator, statistic, basis, resamples=resamples, seed=seed + 1)
    return ratio(top, bottom, basis)
