"""What a report found, in words: a verdict per ratio, the verdict line, the etcd sentence.

A difference is named only where the ratio's 95% interval excludes 1.0 (ratios need at least
3 trials per label, see `workloads.intervals`); otherwise the words say "no clear difference"
or "too few trials". Nothing here computes a number: it reads `RatioStats`.
"""

from __future__ import annotations

from collections.abc import Sequence

from workloads.aggregate import EXTERNAL_BASELINE, METRIC_BY_KEY, METRICS, RatioStats
from workloads.intervals import TOO_FEW, Estimate

NO_DIFFERENCE = "no clear difference"
NAMED_SCENARIOS = 3  # beyond this many scenarios, a verdict line gives a count

# (word when the ratio is below 1, word when above 1), after the numerator label
WORDS = {
    "median": ("faster at p50", "slower at p50"),
    "p99": ("faster at p99", "slower at p99"),
    "throughput": ("fewer ops/s", "more ops/s"),
    "failover": ("recovers sooner", "recovers later"),
    "bytes_per_write": ("sends fewer bytes/write", "sends more bytes/write"),
    "cpu_per_write": ("uses less CPU/write", "uses more CPU/write"),
}
RULE = "A difference is named only where the 95% interval of the ratio excludes 1.0."
ETCD_MEASURES = ("median", "throughput", "cpu_per_write", "failover")


def verdict(estimate: Estimate, key: str, label: str) -> str:
    """ "pull slower at p50", "no clear difference", "too few trials" or "" (no ratio)."""
    if estimate.value is None:
        return ""
    if estimate.too_few:
        return TOO_FEW
    if not estimate.excludes(1.0):
        return NO_DIFFERENCE if estimate.has_interval else ""
    below, above = WORDS[key]
    return f"{label} {below if estimate.value < 1.0 else above}"


def verdict_lines(ratios: Sequence[RatioStats]) -> list[str]:
    """One sentence per (label, baseline) pair, e.g. "**pull vs push:** slower at p50 in
    steady-write; no clear difference in the other 13 comparisons." (Markdown bold)."""
    pairs = list(dict.fromkeys((r.label, r.baseline) for r in ratios))
    return [_pair_line(label, baseline, ratios) for label, baseline in pairs]


def _pair_line(label: str, baseline: str, ratios: Sequence[RatioStats]) -> str:
    mine = [r for r in ratios if (r.label, r.baseline) == (label, baseline)]
    scenarios = len(mine)
    found: dict[tuple[str, int], list[str]] = {}
    same = few = 0
    for ratio in mine:
        for metric in METRICS:
            estimate = ratio.estimates[metric.key]
            if estimate.value is None:
                continue
            if estimate.too_few:
                few += 1
            elif estimate.excludes(1.0):
                side = 0 if estimate.value < 1.0 else 1
                found.setdefault((metric.key, side), []).append(ratio.scenario)
            else:
                same += 1
    parts = []
    for (key, side), where in found.items():
        names = (
            ", ".join(where)
            if len(where) <= NAMED_SCENARIOS
            else f"{len(where)} of {scenarios} scenarios"
        )
        parts.append(f"{WORDS[key][side]} in {names}")
    if same:
        other = "the other " if parts else ""
        parts.append(f"{NO_DIFFERENCE} in {other}{same} comparisons")
    if few:
        parts.append(f"{TOO_FEW} for {few} comparisons (3 per label needed)")
    if not parts:
        parts.append("nothing to compare")
    return f"**{label} vs {baseline}:** " + "; ".join(parts) + "."


def etcd_sentence(ratios: Sequence[RatioStats]) -> str | None:
    """How far each engine is from etcd on latency, throughput, CPU per write and failover,
    as one sentence (None when no scenario has an etcd label)."""
    against = [r for r in ratios if r.baseline == EXTERNAL_BASELINE]
    if not against:
        return None
    engines = list(dict.fromkeys(r.label for r in against))
    clauses = []
    for engine in engines:
        mine = [r for r in against if r.label == engine]
        measures = ", ".join(
            f"{METRIC_BY_KEY[key].title} {_spread([r.estimates[key] for r in mine])}"
            for key in ETCD_MEASURES
        )
        clauses.append(f"{engine}: {measures}")
    scope = "one scenario" if len({r.scenario for r in against}) == 1 else "range over scenarios"
    return (
        f"**Against {EXTERNAL_BASELINE}** (ratio of means, X / {EXTERNAL_BASELINE}; {scope}): "
        + "; ".join(clauses)
        + "."
    )


def _spread(estimates: Sequence[Estimate]) -> str:
    """`1.20x [1.10, 1.31]` for one scenario, `0.9x to 1.4x` over several, `n/a` for none."""
    values = [e.value for e in estimates if e.value is not None]
    if not values:
        return "n/a"
    if len(estimates) == 1:
        only = estimates[0]
        text = f"{values[0]:.2f}x"
        if only.low is not None and only.high is not None:
            text += f" [{only.low:.2f}, {only.high:.2f}]"
        return text
    low, high = min(values), max(values)
    return f"{low:.2f}x" if f"{low:.2f}" == f"{high:.2f}" else f"{low:.2f}x to {high:.2f}x"
