"""95% intervals over trials: a Student-t interval for a mean, a log-scale interval for a ratio.

Trials are few (3 to 5), so a bootstrap over them can only reshuffle those few values: its
interval is about [min, max] and covers the true mean far less often than 95%
(`python -m workloads.interval_coverage` measures it). Over trials we therefore use:

- **a mean**: mean +- t(0.975, n-1) * s / sqrt(n), s the sample standard deviation;
- **a ratio of two labels' means** (A/B): on the log scale, so that 0.5x and 2x are symmetric.
  log(mean A / mean B) +- t(0.975, df) * se, with the delta-method standard error
  se^2 = s_A^2 / (n_A mean_A^2) + s_B^2 / (n_B mean_B^2) and Welch-Satterthwaite degrees of
  freedom; the interval is exponentiated back. The point estimate stays the ratio of the means
  shown in the summary table.

Below MIN_TRIALS values there is no interval: the estimate says "too few trials". The array
functions work along the last axis, so a coverage simulation can run 10,000 data sets at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

LEVEL = 0.95
MIN_TRIALS = 3
TOO_FEW = "too few trials"
T_METHOD = "Student t over trials"
LOG_RATIO_METHOD = "log-ratio t (delta method, Welch df) over trials"
BOOTSTRAP_METHOD = "percentile bootstrap"


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate and its interval. `low`/`high` are None when there is no interval;
    `basis` says what the units were, `n` how many, `method` how the interval was made
    (TOO_FEW when there were not enough trials for one)."""

    value: float | None
    low: float | None = None
    high: float | None = None
    basis: str = ""
    n: int = 0
    method: str = ""

    @property
    def has_interval(self) -> bool:
        return self.low is not None and self.high is not None

    @property
    def too_few(self) -> bool:
        return self.method == TOO_FEW

    def excludes(self, value: float) -> bool:
        """Whether the interval exists and lies wholly on one side of `value`."""
        if self.low is None or self.high is None:
            return False
        return self.high < value or self.low > value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def t_quantile(df: np.ndarray | float, level: float = LEVEL) -> np.ndarray:
    return np.asarray(stats.t.ppf(0.5 + level / 2, df), dtype=float)


def t_bounds(values: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, low, high) of the t-interval along the last axis (at least 2 values)."""
    n = values.shape[-1]
    mean = values.mean(axis=-1)
    half = t_quantile(n - 1, level) * values.std(axis=-1, ddof=1) / np.sqrt(n)
    return mean, mean - half, mean + half


def log_ratio_bounds(
    top: np.ndarray, bottom: np.ndarray, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean top / mean bottom, low, high) along the last axis; means must be positive.

    Each side needs at least 2 values; a side without spread contributes no variance, and
    when neither side has any the interval is the point itself.
    """
    n_top, n_bottom = top.shape[-1], bottom.shape[-1]
    mean_top, mean_bottom = top.mean(axis=-1), bottom.mean(axis=-1)
    var_top = top.var(axis=-1, ddof=1) / (n_top * mean_top**2)
    var_bottom = bottom.var(axis=-1, ddof=1) / (n_bottom * mean_bottom**2)
    total = var_top + var_bottom
    spread = var_top**2 / (n_top - 1) + var_bottom**2 / (n_bottom - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = np.where(spread > 0, total**2 / np.where(spread > 0, spread, 1.0), np.inf)
    half = t_quantile(df, level) * np.sqrt(total)
    ratio = mean_top / mean_bottom
    return ratio, ratio * np.exp(-half), ratio * np.exp(half)


def mean_interval(values: Sequence[float], basis: str = "") -> Estimate:
    """The mean of per-trial values with its t-interval (TOO_FEW below MIN_TRIALS)."""
    data = np.asarray(values, dtype=float)
    basis = basis or f"{data.size} trials"
    if data.size == 0:
        return Estimate(None, basis="no data")
    if data.size < MIN_TRIALS:
        return Estimate(float(data.mean()), basis=basis, n=int(data.size), method=TOO_FEW)
    mean, low, high = t_bounds(data)
    return Estimate(float(mean), float(low), float(high), basis, int(data.size), T_METHOD)


def ratio_interval(top: Sequence[float], bottom: Sequence[float], basis: str = "") -> Estimate:
    """mean(top) / mean(bottom) with its log-scale interval (TOO_FEW below MIN_TRIALS on
    either side; no interval when a mean is not positive, as the log needs)."""
    upper, lower = np.asarray(top, dtype=float), np.asarray(bottom, dtype=float)
    basis = basis or f"{upper.size} / {lower.size} trials"
    n = int(min(upper.size, lower.size))
    if upper.size == 0 or lower.size == 0:
        return Estimate(None, basis="no data")
    mean_top, mean_bottom = float(upper.mean()), float(lower.mean())
    point = mean_top / mean_bottom if mean_bottom else None
    if n < MIN_TRIALS:
        return Estimate(point, basis=basis, n=n, method=TOO_FEW)
    if point is None or mean_top <= 0 or mean_bottom <= 0:
        return Estimate(point, basis=basis, n=n, method="no interval (a mean is 0)")
    ratio, low, high = log_ratio_bounds(upper, lower)
    return Estimate(float(ratio), float(low), float(high), basis, n, LOG_RATIO_METHOD)


def t_errorbar(values: Sequence[float]) -> tuple[float, float]:
    """(low, high) for a plot's error bar: the t-interval, NaN below MIN_TRIALS (no bar)."""
    estimate = mean_interval(values)
    if estimate.low is None or estimate.high is None:
        return float("nan"), float("nan")
    return estimate.low, estimate.high
