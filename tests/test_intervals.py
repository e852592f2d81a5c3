"""The intervals over trials: coverage measured by simulation, the log-ratio's symmetry, and
what fewer than 3 trials give."""

from __future__ import annotations

import numpy as np
import pytest

from workloads.findings import NO_DIFFERENCE, verdict
from workloads.interval_coverage import log_ratio_coverage, t_coverage
from workloads.intervals import (
    LOG_RATIO_METHOD,
    MIN_TRIALS,
    T_METHOD,
    TOO_FEW,
    Estimate,
    mean_interval,
    ratio_interval,
    t_errorbar,
)
from workloads.report import format_estimate, format_ratio

DRAWS = 10_000


@pytest.mark.parametrize("n", [3, 5])
def test_t_interval_covers_the_true_mean_95_percent_of_the_time(n: int) -> None:
    coverage = t_coverage(n, DRAWS, np.random.default_rng(100 + n))
    print(f"t-interval coverage, {n} trials: {coverage:.1%}")
    assert 0.93 <= coverage <= 0.97


@pytest.mark.parametrize("n", [3, 5])
def test_log_ratio_interval_covers_the_true_ratio_95_percent_of_the_time(n: int) -> None:
    coverage = log_ratio_coverage(n, DRAWS, np.random.default_rng(200 + n))
    print(f"log-ratio interval coverage, {n} trials: {coverage:.1%}")
    assert 0.93 <= coverage <= 0.97


def test_mean_interval_is_the_student_t_interval() -> None:
    estimate = mean_interval([9.0, 10.0, 11.0])
    # mean 10, s = 1, t(0.975, 2) = 4.303: half-width 4.303 / sqrt(3) = 2.484
    assert estimate.value == pytest.approx(10.0)
    assert estimate.low == pytest.approx(10.0 - 2.4841, abs=1e-3)
    assert estimate.high == pytest.approx(10.0 + 2.4841, abs=1e-3)
    assert (estimate.n, estimate.method, estimate.basis) == (3, T_METHOD, "3 trials")


def test_ratio_interval_is_symmetric_on_the_log_scale() -> None:
    top, bottom = [2.0, 2.4, 1.8, 2.2], [1.0, 1.1, 0.9]
    forward, backward = ratio_interval(top, bottom), ratio_interval(bottom, top)
    assert forward.value == pytest.approx(np.mean(top) / np.mean(bottom))
    assert forward.method == LOG_RATIO_METHOD and forward.n == 3
    assert forward.low is not None and forward.high is not None
    assert backward.low is not None and backward.high is not None
    # A/B and B/A are reciprocal, and the point sits at the geometric middle of its interval
    assert backward.low == pytest.approx(1 / forward.high)
    assert backward.high == pytest.approx(1 / forward.low)
    assert forward.value == pytest.approx(np.sqrt(forward.low * forward.high))


def test_ratio_without_spread_is_exact() -> None:
    estimate = ratio_interval([6.0, 6.0, 6.0], [2.0, 2.0, 2.0])
    assert (estimate.value, estimate.low, estimate.high) == (3.0, 3.0, 3.0)


@pytest.mark.parametrize("count", [1, 2])
def test_fewer_than_three_trials_give_no_interval(count: int) -> None:
    values = [10.0, 12.0][:count]
    mean = mean_interval(values)
    assert mean.value == pytest.approx(np.mean(values))
    assert (mean.low, mean.high, mean.method, mean.n) == (None, None, TOO_FEW, count)
    assert format_estimate(mean) == f"{np.mean(values):.1f} (too few trials)"
    ratio = ratio_interval(values, [5.0, 5.0, 5.0, 5.0])
    assert ratio.too_few and not ratio.has_interval
    assert format_ratio(ratio).endswith("x (too few trials)")
    assert verdict(ratio, "median", "pull") == TOO_FEW
    assert np.isnan(t_errorbar(values)).all()
    assert MIN_TRIALS == 3


def test_no_data_and_zero_means() -> None:
    assert mean_interval([]).value is None
    assert ratio_interval([], [1.0, 2.0, 3.0]).value is None
    zero = ratio_interval([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert zero.value is None and not zero.has_interval
    none_sent = ratio_interval([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert none_sent.value == 0.0 and not none_sent.has_interval


def test_a_verdict_needs_the_interval_to_exclude_one() -> None:
    slower = Estimate(1.2, 1.1, 1.3, method=LOG_RATIO_METHOD, n=5)
    unclear = Estimate(1.2, 0.9, 1.5, method=LOG_RATIO_METHOD, n=5)
    more = Estimate(1.2, 1.05, 1.4, method=LOG_RATIO_METHOD, n=5)
    assert verdict(slower, "median", "pull") == "pull slower at p50"
    assert verdict(Estimate(0.8, 0.7, 0.9, n=5), "median", "pull") == "pull faster at p50"
    assert verdict(unclear, "median", "pull") == NO_DIFFERENCE
    assert verdict(more, "throughput", "push") == "push more ops/s"
    assert verdict(Estimate(None), "median", "pull") == ""
