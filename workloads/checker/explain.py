"""Where a non-linearizable key history goes wrong, for a person to look at.

The answer is the smallest failing prefix. Cut the history right after some operation's
completion: operations still running at the cut may or may not have taken effect (reads among
them tell nothing), later ones have not started. Such prefixes fail from some completion on
(a valid order of a longer prefix would give one of a shorter), and the operation whose
completion ends the smallest failing prefix is the one at which every linearization fails.

The search's furthest reach is a lower bound for that completion (every state it reached is a
valid order of what came before); a binary search over prefixes from there finds it exactly.
Then one more search lists the states in which the culprit could have taken effect: every
state a valid order of the prefix before its completion, without the culprit, can end in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from workloads.checker.history import READS, Operation, Value
from workloads.checker.model import without_unobserved
from workloads.checker.search import Budget, search, timeline


@dataclass(frozen=True, slots=True)
class Failure:
    """The operation whose completion no linearization survives, and the states in which it
    could have taken effect (None when the budget ran out before they were known). `exact` is
    False when the budget ran out first: then `culprit` is only the earliest completion known
    to fail."""

    culprit: Operation
    states: frozenset[Value] | None
    exact: bool


def explain(ops: Sequence[Operation], reached: Operation, budget: Budget) -> Failure:
    """Find the smallest failing prefix of `ops` (the relevant operations of one key, not
    linearizable), starting from `reached`, an operation whose return the search got to."""
    events = timeline(ops)
    returns = [pos for pos, (at, kind, _) in enumerate(events) if kind == 1 and at != math.inf]
    start = next(pos for pos, (_, kind, i) in enumerate(events) if kind == 1 and ops[i] is reached)
    # returns[lo] is the first candidate, returns[hi] is known to fail (the whole history).
    lo = next(k for k, pos in enumerate(returns) if pos >= start)
    hi = len(returns) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        verdict = search(_prefix(ops, events, returns[mid]), budget).verdict
        if verdict == "unknown":
            return Failure(ops[events[returns[hi]][2]], None, exact=False)
        if verdict == "not-linearizable":
            hi = mid
        else:
            lo = mid + 1
    cut = returns[hi]
    culprit = events[cut][2]
    found = search(_prefix(ops, events, cut, keep=False), budget, all_states=True)
    states = found.states if found.verdict == "linearizable" else None
    return Failure(ops[culprit], states, exact=True)


def _prefix(
    ops: Sequence[Operation], events: list[tuple[float, int, int]], cut: int, keep: bool = True
) -> list[Operation]:
    """The history as it stood right after entry `cut` (a return). With keep=False, the
    operation of that return is left out: the history just before it could take effect."""
    culprit = events[cut][2]
    started: dict[int, bool] = {}  # operation -> completed by the cut
    for _, kind, i in events[: cut + 1]:
        started[i] = kind == 1
    result = []
    for i, done in started.items():
        op = ops[i]
        if i == culprit and not keep:
            continue
        if done:
            result.append(op)
        elif op.f not in READS:
            result.append(replace(op, complete=None, outcome="unknown"))
    # Dropping unseen unknown-outcome operations keeps the verdict but not the final states.
    return without_unobserved(result) if keep else result
