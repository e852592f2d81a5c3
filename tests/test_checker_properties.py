"""Property tests: histories made by running the model are linearizable, and one impossible read
makes them not linearizable."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from workloads.checker import Operation, check_operations
from workloads.checker.history import READS, Value
from workloads.checker.model import ILLEGAL, INITIAL_STATE, transition

KEYS = ("a", "b", "c")
NEVER_WRITTEN = "never-written"
CURRENT = "current"  # a cas planned to expect whatever the key holds when it takes effect


@dataclass(frozen=True)
class Plan:
    """An operation to run against the model, with the moment inside its interval at which it
    takes effect (`point`). `value` is the argument (for a cas: (expected or CURRENT, new))."""

    invoke: float
    point: float
    complete: float
    key: str
    f: str
    value: Value
    outcome: str


@st.composite
def plans(draw: st.DrawFn) -> list[Plan]:
    """Up to 40 overlapping operations on three keys; values from a small set (many equal
    writes) or all distinct (as a careful workload would write them)."""
    unique = draw(st.booleans())
    result = []
    for number in range(draw(st.integers(1, 40))):
        invoke = draw(st.integers(0, 80)) / 2
        duration = draw(st.integers(0, 20)) / 2
        point = invoke + duration * draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]))
        f = draw(st.sampled_from(["read", "read", "write", "delete", "cas"]))
        value: Value = number if unique else draw(st.integers(0, 3))
        if f == "cas":
            expected = draw(st.sampled_from([CURRENT, CURRENT, None, 0, 1, 2, 3]))
            value = (expected, value)
        outcome = "unknown" if f != "read" and draw(st.integers(0, 4)) == 0 else "ok"
        key = draw(st.sampled_from(KEYS))
        result.append(Plan(invoke, point, invoke + duration, key, f, value, outcome))
    return result


def run_model(plans: list[Plan], seed: int) -> list[Operation]:
    """Apply the operations in the order of their points to a dict of registers and record
    what each client saw. An unknown-outcome operation takes effect or not at random; a cas
    whose expectation does not hold fails."""
    luck = random.Random(seed)
    state: dict[str, Value] = {}
    ops = []
    for process, plan in enumerate(sorted(plans, key=lambda p: p.point)):
        current = state.get(plan.key)
        end = plan.complete if plan.outcome == "ok" else None
        value, new = plan.value, plan.value
        if plan.f == "read":
            value = current
        elif plan.f == "delete":
            value = new = None
        elif plan.f == "cas":
            assert isinstance(plan.value, tuple)
            expected, new = plan.value
            value = (current if expected == CURRENT else expected, new)
            if current != value[0]:
                ops.append(
                    Operation(process, "cas", plan.key, value, plan.invoke, plan.complete, "fail")
                )
                continue
        if plan.f != "read" and (plan.outcome == "ok" or luck.random() < 0.5):
            state[plan.key] = new
        ops.append(Operation(process, plan.f, plan.key, value, plan.invoke, end, plan.outcome))
    luck.shuffle(ops)
    return ops


@settings(max_examples=150, deadline=None)
@given(plans(), st.integers(0, 2**32))
def test_a_history_produced_by_the_model_is_linearizable(planned: list[Plan], seed: int) -> None:
    ops = run_model(planned, seed)
    result = check_operations(ops, budget=None)
    assert result.verdict == "linearizable", result.detail


@settings(max_examples=150, deadline=None)
@given(plans(), st.integers(0, 2**32), st.data())
def test_one_read_of_a_value_never_written_breaks_linearizability(
    planned: list[Plan], seed: int, data: st.DataObject
) -> None:
    ops = run_model(planned, seed)
    reads = [i for i, o in enumerate(ops) if o.f == "read" and o.outcome == "ok"]
    if not reads:
        ops.append(Operation(99, "read", "a", None, 0.0, 1.0, "ok"))
        reads = [len(ops) - 1]
    victim = data.draw(st.sampled_from(reads))
    ops[victim] = replace(ops[victim], value=NEVER_WRITTEN)
    result = check_operations(ops, budget=None)
    assert result.verdict == "not-linearizable"
    failed = [k for k in result.keys if k.verdict == "not-linearizable"]
    assert [k.failed_at for k in failed] == [ops[victim]]


# --- against a brute-force oracle -----------------------------------------------------------


def brute_final_states(ops: list[Operation]) -> set[Value]:
    """Every state some valid order of `ops` ends in, by trying every order: the definition,
    with none of the search's shortcuts. Failed operations and reads of unknown outcome tell
    nothing; the others with unknown outcome may be placed anywhere after their invocation,
    or left out."""
    live = [o for o in ops if o.outcome != "fail" and not (o.outcome == "unknown" and o.f in READS)]
    steps = [transition(o) for o in live]
    finals: set[Value] = set()

    def extend(placed: frozenset[int], state: Value) -> None:
        if all(i in placed or live[i].completed_at == math.inf for i in range(len(live))):
            finals.add(state)
        for i, o in enumerate(live):
            if i in placed:
                continue
            if any(j not in placed and live[j].completed_at < o.invoke for j in range(len(live))):
                continue  # something that finished before `o` began is not placed yet
            after = steps[i](state)
            if after is not ILLEGAL:
                extend(placed | {i}, after)

    extend(frozenset(), INITIAL_STATE)
    return finals


def cut(ops: list[Operation], at: float, without: Operation | None = None) -> list[Operation]:
    """The history right after time `at`: later invocations gone, running operations unknown
    (failed ones stay failed: they took no effect, whenever they ended)."""
    return [
        replace(o, complete=None, outcome="unknown")
        if o.completed_at > at and o.outcome != "fail"
        else o
        for o in ops
        if o.invoke < at and o is not without
    ]


@st.composite
def small_histories(
    draw: st.DrawFn, unknown_share: int = 1, most: int = 6, kv_only: bool = False
) -> list[Operation]:
    """Up to `most` operations on one key with distinct event times, any outcome, any values
    (so that many are not linearizable): register operations, or get/put/append. `unknown_share`
    weighs unknown outcomes (against three ok and one fail)."""
    n = draw(st.integers(1, most))
    times = draw(st.permutations(range(2 * n)))
    values = st.integers(0, 2) if draw(st.booleans()) else st.integers(0, 9)
    kv = kv_only or draw(st.booleans())
    if kv:
        values = st.sampled_from(["", "a", "b", "ab", "ba"])
    ops = []
    for i in range(n):
        invoke, complete = sorted(times[2 * i : 2 * i + 2])
        f = draw(
            st.sampled_from(
                ["get", "get", "put", "append"]
                if kv
                else ["read", "read", "write", "delete", "cas"]
            )
        )
        value: Value = draw(values if kv else st.none() | values)
        if f == "append":
            value = draw(st.sampled_from(["a", "b"]))
        elif f == "cas":
            value = (draw(st.none() | values), draw(values))
        elif f == "delete":
            value = None
        outcome = draw(st.sampled_from(["ok", "ok", "ok", "fail"] + ["unknown"] * unknown_share))
        end = None if outcome == "unknown" else float(complete)
        ops.append(Operation(i, f, "k", value, float(invoke), end, outcome))
    return ops


@settings(max_examples=400, deadline=None)
@given(small_histories())
def test_verdict_culprit_and_states_agree_with_brute_force(ops: list[Operation]) -> None:
    assert_agrees_with_brute_force(ops)


@settings(max_examples=1500, deadline=None)
@given(small_histories(unknown_share=2))
def test_every_small_failing_history_is_caught_with_its_culprit(ops: list[Operation]) -> None:
    # The corpus of failing histories: the search's pruning must never turn one into a pass,
    # and the culprit and states must still be exact.
    assume(not brute_final_states(ops))
    assert_agrees_with_brute_force(ops)


@settings(max_examples=500, deadline=None)
@given(small_histories(most=7, kv_only=True))
def test_append_histories_agree_with_brute_force(ops: list[Operation]) -> None:
    # Longer get/put/append histories: enough concurrent appends and puts for the text rules
    # (a dead text, a text only a put can save) to come into play.
    assert_agrees_with_brute_force(ops)


def assert_agrees_with_brute_force(ops: list[Operation]) -> None:
    result = check_operations(ops, budget=None)
    linearizable = bool(brute_final_states(ops))
    assert result.verdict == ("linearizable" if linearizable else "not-linearizable")
    if linearizable:
        return
    # The culprit ends the smallest failing prefix; the states are those just before it.
    (key,) = result.keys
    completions = sorted(o.completed_at for o in ops if o.outcome == "ok")
    first_bad = next(t for t in completions if not brute_final_states(cut(ops, t)))
    assert key.failed_at is not None
    assert key.failed_at.completed_at == first_bad
    assert key.states == frozenset(brute_final_states(cut(ops, first_bad, without=key.failed_at)))
