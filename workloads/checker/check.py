"""Checking a whole history: one independent search per key, one verdict.

Linearizability is compositional (Herlihy & Wing): a history is linearizable if and only if its
restriction to each key is. Splitting by key first is what keeps the search small
(the "P-compositionality" of Horn & Kroening).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from workloads.checker.explain import Failure, explain
from workloads.checker.history import Operation, Value, short_value
from workloads.checker.model import relevant, without_unobserved
from workloads.checker.search import Budget, search

LINEARIZABLE = "linearizable"
NOT_LINEARIZABLE = "not-linearizable"
UNKNOWN = "unknown"
MAX_SHOWN_STATES = 6


@dataclass(frozen=True, slots=True)
class KeyResult:
    """The verdict for one key.

    For a failure, `failed_at` is the operation whose completion no linearization survives
    (the end of the smallest failing prefix, see explain.py) and `states` the values the key
    could hold just before it (None if the budget ran out first). `operations` counts the
    operations searched (failed ones and reads with unknown outcome are left out).
    """

    key: str
    verdict: str
    operations: int
    steps: int
    detail: str = ""
    failed_at: Operation | None = None
    states: frozenset[Value] | None = None


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The verdict for a history.

    `verdict` is "linearizable", "not-linearizable" (some key has no linearization; this wins
    over "unknown" on other keys) or "unknown" (the budget ran out before a verdict; never a
    guess). `detail` explains failures and unknowns in a line or two; `keys` has one entry per
    key that was searched.
    """

    verdict: str
    elapsed: float
    detail: str = ""
    keys: tuple[KeyResult, ...] = ()

    @property
    def steps(self) -> int:
        return sum(k.steps for k in self.keys)


def check_operations(
    ops: Sequence[Operation], budget: float | None = 10.0, max_steps: int | None = None
) -> CheckResult:
    """Decide whether `ops` are linearizable against the per-key register model.

    `budget` is in seconds of wall-clock time (None: no limit), `max_steps` bounds the number of
    search steps (deterministic, unlike time); both are shared by all keys.
    """
    started = time.monotonic()
    limit = Budget(budget, max_steps)
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        if relevant(op):
            by_key[op.key].append(op)

    results: list[KeyResult] = []
    # Smallest keys first: a failure on a small key is then found before a large key can use
    # up the budget. Keys after one that ran out of budget are still searched: a small one may
    # still finish (the clock is read every CHECK_EVERY steps) and a failure there is definite.
    for key in sorted(by_key, key=lambda k: (len(by_key[k]), k)):
        results.append(_check_key(key, by_key[key], limit))
    results.sort(key=lambda r: r.key)
    elapsed = time.monotonic() - started

    failed = [r for r in results if r.verdict == NOT_LINEARIZABLE]
    if failed:
        return CheckResult(
            NOT_LINEARIZABLE, elapsed, "; ".join(r.detail for r in failed), tuple(results)
        )
    if any(r.verdict == UNKNOWN for r in results):
        unknown = next(r for r in results if r.verdict == UNKNOWN)
        return CheckResult(UNKNOWN, elapsed, unknown.detail, tuple(results))
    return CheckResult(LINEARIZABLE, elapsed, "", tuple(results))


def _check_key(key: str, relevant_ops: list[Operation], limit: Budget) -> KeyResult:
    ops = without_unobserved(relevant_ops)
    found = search(ops, limit)
    if found.verdict == NOT_LINEARIZABLE:
        assert found.reached is not None
        failure = explain(relevant_ops, ops[found.reached], limit)
        return KeyResult(
            key,
            found.verdict,
            len(ops),
            found.steps,
            _describe_failure(key, failure),
            failure.culprit,
            failure.states,
        )
    if found.verdict == UNKNOWN:
        detail = f"key {key!r}: budget exhausted after {found.steps} steps ({len(ops)} operations)"
        return KeyResult(key, found.verdict, len(ops), found.steps, detail)
    return KeyResult(key, found.verdict, len(ops), found.steps)


def _describe_failure(key: str, failure: Failure) -> str:
    if not failure.exact:
        return (
            f"key {key!r}: no linearization survives the completion of "
            f"{failure.culprit.describe()} (the budget ran out before an earlier failing "
            f"completion could be ruled out)"
        )
    text = f"key {key!r}: no linearization survives the completion of {failure.culprit.describe()}"
    if failure.states is not None:
        shown = sorted(short_value(s) for s in failure.states)
        more = f" and {len(shown) - MAX_SHOWN_STATES} more" if len(shown) > MAX_SHOWN_STATES else ""
        text += f"; just before, the key could hold: {', '.join(shown[:MAX_SHOWN_STATES])}{more}"
    return text
