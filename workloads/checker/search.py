"""The linearizability search for the operations on one key.

Theory of operation (Wing & Gong's search, with Lowe's memoisation, as in Knossos and porcupine):
every operation becomes two entries, its call and its return, in one list ordered by time
(`timeline`). Walking the list from its head, a call may be linearized now if the model accepts
it in the current state; it is then lifted out of the list together with its return, and the
walk restarts from the head. Meeting a return means its operation should already have taken
effect: the last choice is undone and the next call after it is tried instead. Backtracking
past the first choice means no order works.

Two orders that linearize the same operations and end in the same state have the same future,
so each (set, state) pair is expanded once; sets are int bitmasks. The list is an array-backed
doubly linked list, so lifting and restoring an entry is O(1) ("dancing links").

Five reductions keep the search small; each only skips work that cannot lead to a valid order.
They matter most for failing histories, where the search must rule out every order before the
bad operation, not find one:

1. Unknown outcomes. Such an operation is never illegal (model.py) and nothing has to follow it
   in real time, so it can always be put off to the very end, where its effect does not matter.
   Hence the search succeeds once every known-outcome operation is placed, and a state that
   differs from one already seen only by having linearized *more* unknown-outcome operations
   (same known-outcome set, same model state) is not expanded: the memo keeps, per
   (known-outcome set, state), the minimal unknown-outcome sets seen.
2. Reads first. A read legal now may be linearized now without loss (it changes no state, and
   moving an operation earlier never breaks real-time order), so when the branch through a
   legal read fails, the state before it has failed too: no sibling is tried.
3. Values still owed (registers only: read, write, delete, cas). Leaving value v is a dead end
   if some known-outcome read or cas still to be placed needs v and no operation left can set
   v again. With unique written values this cuts off a wrong order at the first step instead
   of at the return that exposes it.
4. Unknown outcomes are placed only where they are observed (registers only). Take a valid order
   with as few unknown-outcome operations placed as possible. In it each of them changes the
   state (else drop it), and the operation right after it reads or cas-expects the value it
   left: a write or delete after it would hide its effect (drop it), a read or cas of another
   value would be illegal, an unknown-outcome cas of another value would change nothing. So an
   unknown-outcome operation is tried only where it changes the state, and then the next
   operation placed must observe the new value (`waiting`, part of the memo key). Without this,
   k pending timed-out writes give 2^k configurations to rule out at every step: a failing etcd
   history went from minutes to milliseconds.
5. Text still to be read (histories with append). Appends only extend the text, so leaving a
   text that is not a prefix of what the next get to return reads is a dead end unless some
   operation that may go before that get (every call ahead of its return) can replace the text
   with a prefix of it (a put). This cuts a wrong order of concurrent appends at once instead of
   at the get, where the memo cannot help (every order gives a different text).

Reductions 3, 4 and 5 may stop a branch before the return that exposes it, so the furthest
return the search reaches bounds the smallest failing prefix from below only; explain.py pins it
down.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from workloads.checker.history import READS, Operation, Value
from workloads.checker.model import (
    ILLEGAL,
    INITIAL_STATE,
    Transition,
    is_register_history,
    may_set,
    must_see,
    transition,
)
from workloads.checker.texts import DOOMED, Texts, grows

CHECK_EVERY = 2048
"""Steps between two looks at the clock: often enough to stop promptly, rare enough to be free."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What the search found for one key.

    `verdict` is "linearizable", "not-linearizable" or "unknown" (budget exhausted). For a
    failure, `reached` is the index (into the operations given) of the operation whose return
    was the furthest any partial order reached. With `all_states`, `states` holds every state
    a complete order can end in (the verdict is then "linearizable" if there is one).
    """

    verdict: str
    steps: int
    reached: int | None = None
    states: frozenset[Value] = frozenset()


class Budget:
    """When to give up: a wall-clock deadline and/or a number of search steps, shared by keys."""

    def __init__(self, seconds: float | None = None, steps: int | None = None) -> None:
        self.deadline = None if seconds is None else time.monotonic() + seconds
        self.steps_left = steps

    def grant(self, used: int) -> int:
        """Charge the `used` steps taken since the last grant and return how many more may be
        taken before asking again (0: the budget is exhausted)."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            return 0
        if self.steps_left is None:
            return CHECK_EVERY
        self.steps_left = max(0, self.steps_left - used)
        return min(CHECK_EVERY, self.steps_left)


def timeline(ops: Sequence[Operation]) -> list[tuple[float, int, int]]:
    """(time, 0 for call | 1 for return, operation index), in search order: by time, calls
    before returns at equal times (operations touching at an instant count as concurrent)."""
    events = [(op.invoke, 0, i) for i, op in enumerate(ops)]
    events += [(op.completed_at, 1, i) for i, op in enumerate(ops)]
    events.sort()
    return events


def search(ops: Sequence[Operation], budget: Budget, all_states: bool = False) -> SearchResult:
    """Decide whether `ops` (all on one key, all relevant) are linearizable.

    With `all_states`, do not stop at the first valid order: collect the state every valid
    order (with any of the unknown-outcome operations applied at the end) can end in.
    """
    n = len(ops)
    events = timeline(ops)
    # Entry positions 0..2n-1 follow the timeline; head and tail are sentinels.
    head, tail = 2 * n, 2 * n + 1
    is_call = [kind == 0 for _, kind, _ in events]
    op_at = [i for _, _, i in events]
    where = {(kind, i): pos for pos, (_, kind, i) in enumerate(events)}
    partner = [where[(1 - kind, i)] for _, kind, i in events]
    bit = [1 << i for i in op_at]
    unknown = [ops[i].completed_at == math.inf for i in op_at]
    pure = [ops[i].f in READS for i in op_at]
    transitions = [transition(op) for op in ops]
    step_at: list[Transition] = [transitions[i] for i in op_at]  # only used at calls
    nxt = [*range(1, 2 * n), tail, 0, -1]
    prv = [*range(-1, 2 * n - 1), -1, 2 * n - 1]
    if n:
        prv[0] = head

    # Reduction 3: values owed by operations still to place, and who can still set them.
    guard = is_register_history(ops)
    seen_by_op = [must_see(op) for op in ops]
    set_by_op = [may_set(op) for op in ops]
    sees = [seen_by_op[i] for i in op_at]
    sets = [set_by_op[i] for i in op_at]
    owed: Counter[Value] = Counter(sees[p] for p in range(2 * n) if is_call[p])
    settable: Counter[Value] = Counter(sets[p] for p in range(2 * n) if is_call[p])

    # Reduction 4: an unknown-outcome register operation is placed only where it changes the
    # state, and then the next operation placed must observe the value it left (`waiting`).
    observes = [ops[i].f in ("read", "cas") for i in op_at]
    waiting_bit = 1 << n  # set in the memo key while waiting: it is part of the configuration

    # Reduction 5 (histories with append): see texts.py.
    text_rules = Texts(ops, op_at, is_call) if not guard and grows(ops) else None
    doomed_step = text_rules.doomed_step if text_rules else []

    to_place = sum(op.completed_at != math.inf for op in ops)  # known-outcome ops left
    state: Value = INITIAL_STATE
    known = 0  # bitmask of linearized operations with a known outcome
    maybe = 0  # bitmask of linearized operations with unknown outcome
    waiting = False
    stack: list[tuple[int, Value, bool]] = []
    seen: dict[tuple[int, Value], list[int]] = {}
    finals: set[Value] = set()
    best = -1
    steps = 0
    granted = 0  # steps may go up to `granted` before the budget is asked again
    charged = 0
    entry = nxt[head]
    while True:
        if not to_place:
            if not all_states:
                break
            finals.add(state)
        if steps == granted:
            more = budget.grant(steps - charged)
            charged = steps
            if more == 0:
                return SearchResult("unknown", steps)
            granted += more
        steps += 1
        if entry == tail:
            pass  # everything is linearized (only when collecting all states): backtrack
        elif is_call[entry]:
            after = doomed_step[entry] if state is DOOMED else step_at[entry](state)
            if text_rules and after is not ILLEGAL and after is not DOOMED and after != state:
                after = text_rules.settle(after, entry, nxt, head)
            if after is ILLEGAL or (
                guard
                and (
                    (
                        after != state
                        and owed[state] > (sees[entry] == state)
                        and not settable[state]
                    )
                    or (waiting and not observes[entry])
                    or (unknown[entry] and after == state)
                )
            ):
                entry = nxt[entry]
                continue
            will_wait = guard and unknown[entry]
            if unknown[entry]:
                grown_known, grown_maybe = known, maybe | bit[entry]
            else:
                grown_known, grown_maybe = known | bit[entry], maybe
            memo_key = (grown_known | waiting_bit if will_wait else grown_known, after)
            minimal = seen.get(memo_key)
            if minimal is None:
                seen[memo_key] = [grown_maybe]
                fresh = True
            else:
                fresh = _admit(minimal, grown_maybe)
            if fresh:
                stack.append((entry, state, waiting))
                state, known, maybe, waiting = after, grown_known, grown_maybe, will_wait
                to_place -= not unknown[entry]
                owed[sees[entry]] -= 1
                settable[sets[entry]] -= 1
                # lift the call and its return out of the list
                p, q = prv[entry], nxt[entry]
                nxt[p] = q
                prv[q] = p
                ret = partner[entry]
                p, q = prv[ret], nxt[ret]
                nxt[p] = q
                prv[q] = p
                entry = nxt[head]
                continue
            if not pure[entry]:
                entry = nxt[entry]
                continue
            # else: a read leading where every order already failed, so this state fails too
        elif entry > best:
            best = entry
        # Dead end: undo choices until one has an untried alternative.
        while True:
            if not stack:
                budget.grant(steps - charged)
                if finals:
                    return SearchResult("linearizable", steps, states=frozenset(finals))
                return SearchResult("not-linearizable", steps, reached=op_at[max(best, 0)])
            entry, state, waiting = stack.pop()
            if unknown[entry]:
                maybe &= ~bit[entry]
            else:
                known &= ~bit[entry]
                to_place += 1
            owed[sees[entry]] += 1
            settable[sets[entry]] += 1
            # put the return back, then the call (reverse order of lifting)
            ret = partner[entry]
            nxt[prv[ret]] = ret
            prv[nxt[ret]] = ret
            nxt[prv[entry]] = entry
            prv[nxt[entry]] = entry
            if not pure[entry]:
                break
            # a read failed: nothing else from the state before it can work either
        entry = nxt[entry]
    budget.grant(steps - charged)
    return SearchResult("linearizable", steps)


def _admit(minimal: list[int], candidate: int) -> bool:
    """Record `candidate` among the minimal unknown-outcome sets seen with one (known-outcome
    set, state), unless one of them is a subset of it (then it has nothing new to explore)."""
    for seen in minimal:
        if seen & ~candidate == 0:
            return False
    minimal[:] = [seen for seen in minimal if candidate & ~seen != 0]
    minimal.append(candidate)
    return True
