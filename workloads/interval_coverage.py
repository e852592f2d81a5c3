"""How often the report's 95% intervals over trials cover the true value, by simulation.

`python -m workloads.interval_coverage [--draws N] [--seed S]` draws N data sets of 3 and of 5
trials from known distributions and prints, for each method, the share of data sets whose
interval contains the true value:

- a mean: trials ~ Normal(10, 2); the Student-t interval (`workloads.intervals`) against the
  percentile bootstrap over trials the report used before (`workloads.bootstrap`);
- a ratio of two labels' means: trials ~ LogNormal (sigma 0.25 and 0.35; true ratio of the
  means known); the log-ratio t interval against the bootstrap ratio (each side resampled).

The t-based intervals are computed for all data sets at once; the bootstrap ones one data set
at a time with the very functions the report used, so the comparison is with what it printed.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from workloads.bootstrap import mean_of_rows, ratio, resample
from workloads.intervals import log_ratio_bounds, t_bounds

MEAN, SD = 10.0, 2.0
# LogNormal(mu, sigma): mean exp(mu + sigma^2 / 2)
TOP, BOTTOM = (1.0, 0.25), (0.6, 0.35)
BOOTSTRAP_RESAMPLES = 2000


def true_ratio() -> float:
    (mu_top, s_top), (mu_bottom, s_bottom) = TOP, BOTTOM
    return math.exp(mu_top + s_top**2 / 2) / math.exp(mu_bottom + s_bottom**2 / 2)


def normal_sets(n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(MEAN, SD, size=(draws, n))


def lognormal_sets(n: int, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    top = rng.lognormal(TOP[0], TOP[1], size=(draws, n))
    return top, rng.lognormal(BOTTOM[0], BOTTOM[1], size=(draws, n))


def t_coverage(n: int, draws: int, rng: np.random.Generator) -> float:
    _, low, high = t_bounds(normal_sets(n, draws, rng))
    return float(np.mean((low <= MEAN) & (high >= MEAN)))


def log_ratio_coverage(n: int, draws: int, rng: np.random.Generator) -> float:
    _, low, high = log_ratio_bounds(*lognormal_sets(n, draws, rng))
    truth = true_ratio()
    return float(np.mean((low <= truth) & (truth <= high)))


def bootstrap_coverage(n: int, draws: int, rng: np.random.Generator) -> float:
    """The old method: percentile bootstrap of the mean over the n trials."""
    hits = 0
    for i, values in enumerate(normal_sets(n, draws, rng)):
        estimate = resample(values, mean_of_rows, "trials", seed=i).estimate()
        if estimate.low is not None and estimate.high is not None:
            hits += estimate.low <= MEAN <= estimate.high
    return hits / draws


def bootstrap_ratio_coverage(n: int, draws: int, rng: np.random.Generator) -> float:
    """The old method: ratio of the two bootstrap means, each side resampled on its own."""
    tops, bottoms = lognormal_sets(n, draws, rng)
    truth = true_ratio()
    hits = 0
    for i, (top, bottom) in enumerate(zip(tops, bottoms, strict=True)):
        upper = resample(top, mean_of_rows, "trials", seed=2 * i)
        lower = resample(bottom, mean_of_rows, "trials", seed=2 * i + 1)
        estimate = ratio(upper, lower, "trials")
        if estimate.low is not None and estimate.high is not None:
            hits += estimate.low <= truth <= estimate.high
    return hits / draws


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(f"coverage of 95% intervals, {args.draws} simulated data sets each")
    print(
        f"{'trials':>6}  {'mean: t':>8}  {'mean: bootstrap':>15}  {'ratio: log t':>12}  "
        f"{'ratio: bootstrap':>16}"
    )
    for n in (3, 5):
        row = (
            t_coverage(n, args.draws, rng),
            bootstrap_coverage(n, args.draws, rng),
            log_ratio_coverage(n, args.draws, rng),
            bootstrap_ratio_coverage(n, args.draws, rng),
        )
        print(f"{n:>6}  {row[0]:>8.1%}  {row[1]:>15.1%}  {row[2]:>12.1%}  {row[3]:>16.1%}")


if __name__ == "__main__":
    main()
