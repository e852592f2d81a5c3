"""One small hand-made history per rule of the checker."""

from __future__ import annotations

from workloads.checker import Operation, check_operations
from workloads.checker.history import Value

LIN, NOT = "linearizable", "not-linearizable"


def op(
    process: int,
    f: str,
    value: Value,
    invoke: float,
    complete: float | None,
    outcome: str = "ok",
    key: str = "x",
) -> Operation:
    return Operation(process, f, key, value, invoke, complete, outcome)


def verdict(*ops: Operation) -> str:
    return check_operations(ops, budget=None).verdict


def test_empty_history_is_linearizable() -> None:
    assert verdict() == LIN


def test_read_overlapping_a_write_may_see_either_value() -> None:
    write = op(1, "write", 1, 0, 10)
    assert verdict(write, op(2, "read", 1, 1, 5)) == LIN
    assert verdict(write, op(2, "read", None, 1, 5)) == LIN
    assert verdict(write, op(2, "read", 2, 1, 5)) == NOT


def test_stale_read_after_a_completed_write_is_not_linearizable() -> None:
    read = op(2, "read", None, 2, 3)
    result = check_operations([op(1, "write", 1, 0, 1), read], budget=None)
    assert result.verdict == NOT
    assert result.keys[0].failed_at == read
    assert "read -> absent" in result.detail
    assert "'x'" in result.detail


def test_real_time_order_of_writes_is_respected() -> None:
    read_first = op(3, "read", 1, 4, 5)
    assert verdict(op(1, "write", 1, 0, 1), op(2, "write", 2, 2, 3), read_first) == NOT
    assert verdict(op(1, "write", 1, 0, 3), op(2, "write", 2, 2, 3), read_first) == LIN


def test_two_reads_cannot_see_the_register_go_back() -> None:
    write = op(1, "write", 1, 0, 10)
    assert verdict(write, op(2, "read", 1, 1, 2), op(3, "read", None, 3, 4)) == NOT
    assert verdict(write, op(2, "read", None, 1, 2), op(3, "read", 1, 3, 4)) == LIN


def test_operations_touching_at_one_instant_count_as_concurrent() -> None:
    assert verdict(op(1, "write", 1, 0, 5), op(2, "read", None, 5, 6)) == LIN


def test_unknown_write_may_be_observed_later() -> None:
    unknown = op(1, "write", 1, 0, None, "unknown")
    assert verdict(unknown, op(2, "read", 1, 50, 51)) == LIN


def test_unknown_write_may_never_take_effect() -> None:
    unknown = op(1, "write", 1, 0, None, "unknown")
    assert verdict(unknown, op(2, "read", None, 50, 51)) == LIN
    # ...but once observed it cannot be undone
    seen = op(2, "read", 1, 50, 51)
    assert verdict(unknown, seen, op(3, "read", None, 60, 61)) == NOT


def test_unknown_write_cannot_take_effect_before_its_invocation() -> None:
    assert verdict(op(2, "read", 1, 0, 1), op(1, "write", 1, 5, None, "unknown")) == NOT


def test_unknown_outcome_with_a_completion_time_still_counts_as_unknown() -> None:
    unknown = op(1, "write", 1, 0, 2, "unknown")
    assert verdict(unknown, op(2, "read", 1, 50, 51)) == LIN
    assert verdict(unknown, op(2, "read", None, 50, 51)) == LIN


def test_failed_cas_takes_no_effect() -> None:
    write, cas = op(1, "write", 1, 0, 1), op(2, "cas", (1, 2), 2, 3, "fail")
    assert verdict(write, cas, op(3, "read", 2, 4, 5)) == NOT
    assert verdict(write, cas, op(3, "read", 1, 4, 5)) == LIN


def test_successful_cas_needs_its_expected_value() -> None:
    write = op(1, "write", 1, 0, 1)
    assert verdict(write, op(2, "cas", (1, 2), 2, 3), op(3, "read", 2, 4, 5)) == LIN
    assert verdict(write, op(2, "cas", (5, 2), 2, 3)) == NOT


def test_cas_expecting_none_needs_an_absent_key() -> None:
    assert verdict(op(1, "cas", (None, 7), 0, 1), op(2, "read", 7, 2, 3)) == LIN
    assert verdict(op(1, "write", 1, 0, 1), op(2, "cas", (None, 7), 2, 3)) == NOT


def test_unknown_cas_takes_effect_only_if_its_expectation_holds() -> None:
    write = op(1, "write", 1, 0, 1)
    maybe = op(2, "cas", (1, 2), 2, None, "unknown")
    assert verdict(write, maybe, op(3, "read", 2, 4, 5)) == LIN
    assert verdict(write, maybe, op(3, "read", 1, 4, 5)) == LIN
    mismatched = op(2, "cas", (9, 2), 2, None, "unknown")
    assert verdict(write, mismatched, op(3, "read", 2, 4, 5)) == NOT


def test_failed_and_unknown_reads_tell_nothing() -> None:
    write = op(1, "write", 1, 0, 1)
    assert verdict(write, op(2, "read", 42, 2, 3, "fail")) == LIN
    assert verdict(write, op(2, "read", 42, 2, None, "unknown")) == LIN


def test_failed_write_takes_no_effect() -> None:
    failed = op(1, "write", 1, 0, 1, "fail")
    assert verdict(failed, op(2, "read", 1, 2, 3)) == NOT
    assert verdict(failed, op(2, "read", None, 2, 3)) == LIN


def test_delete_makes_the_key_absent() -> None:
    write, delete = op(1, "write", 1, 0, 1), op(1, "delete", None, 2, 3)
    assert verdict(write, delete, op(2, "read", None, 4, 5)) == LIN
    assert verdict(write, delete, op(2, "read", 1, 4, 5)) == NOT


def test_put_append_get() -> None:
    put, append = op(1, "put", "a", 0, 1), op(1, "append", "b", 2, 3)
    assert verdict(put, append, op(2, "get", "ab", 4, 5)) == LIN
    assert verdict(put, append, op(2, "get", "ba", 4, 5)) == NOT
    assert verdict(op(1, "append", "b", 0, 1), op(2, "get", "b", 2, 3)) == LIN


def test_get_of_an_absent_key_reads_empty() -> None:
    assert verdict(op(1, "get", "", 0, 1)) == LIN
    assert verdict(op(1, "put", "x", 0, 1), op(2, "get", "", 2, 3)) == NOT


def test_keys_are_independent() -> None:
    # One register would forbid this (read absent after a completed write); two keys allow it.
    write_a = op(1, "write", 1, 0, 1, key="a")
    assert verdict(write_a, op(2, "read", None, 2, 3, key="b")) == LIN
    # A value written on one key is never seen on another.
    result = check_operations([write_a, op(2, "read", 1, 2, 3, key="b")], budget=None)
    assert result.verdict == NOT
    assert [(k.key, k.verdict) for k in result.keys] == [("a", LIN), ("b", NOT)]


def test_every_failing_key_is_reported() -> None:
    ops = [op(1, "read", 1, 0, 1, key=k) for k in ("a", "b", "c")]
    result = check_operations(ops, budget=None)
    assert result.verdict == NOT
    assert all(f"key {k!r}" in result.detail for k in ("a", "b", "c"))


def crowd(writers: int) -> list[Operation]:
    """Many concurrent writes then a read of a value nobody wrote: the search must try every
    subset of writes before it can say no."""
    writes = [op(i, "write", i, 0, 10) for i in range(writers)]
    return [*writes, op(writers, "read", -1, 11, 12)]


def test_exhausted_budget_gives_unknown_never_a_guess() -> None:
    history = crowd(12)
    assert check_operations(history, budget=None).verdict == NOT
    result = check_operations(history, budget=None, max_steps=100)
    assert result.verdict == "unknown"
    assert result.steps == 100
    assert "budget exhausted" in result.detail


def test_step_budget_is_shared_by_keys_and_failures_still_win() -> None:
    quick_failure = [op(100, "read", 5, 0, 1, key="a-first")]
    history = quick_failure + [
        Operation(o.process, o.f, "b-crowd", o.value, o.invoke, o.complete, o.outcome)
        for o in crowd(12)
    ]
    result = check_operations(history, budget=None, max_steps=100)
    assert [k.verdict for k in result.keys] == [NOT, "unknown"]
    assert result.verdict == NOT


def test_small_keys_are_searched_first_so_their_failure_is_found() -> None:
    # The crowded key sorts first by name, yet the one-operation key still gets its verdict.
    history = [
        Operation(o.process, o.f, "a-crowd", o.value, o.invoke, o.complete, o.outcome)
        for o in crowd(12)
    ] + [op(100, "read", 5, 0, 1, key="b-quick-failure")]
    result = check_operations(history, budget=None, max_steps=100)
    assert [(k.key, k.verdict) for k in result.keys] == [
        ("a-crowd", "unknown"),
        ("b-quick-failure", NOT),
    ]
    assert result.verdict == NOT


def test_failure_is_pinned_to_the_earliest_completion_when_the_budget_allows() -> None:
    stale = op(2, "read", None, 2, 3)
    last = op(4, "read", 2, 6, 7)
    history = [op(1, "write", 1, 0, 1), stale, op(3, "write", 2, 4, 5), last]
    full = check_operations(history, budget=None)
    assert full.verdict == NOT
    assert full.keys[0].failed_at == stale
    assert full.keys[0].states == frozenset({1})
    # Enough steps for the verdict, none left to narrow it down: the whole history is the
    # smallest prefix known to fail, and the detail says so.
    tight = check_operations(history, budget=None, max_steps=full.steps)
    assert tight.verdict == NOT
    assert tight.keys[0].failed_at == last
    assert tight.keys[0].states is None
    assert "budget ran out" in tight.detail


def test_unknown_write_may_take_effect_after_a_later_write_to_be_read() -> None:
    # The search places an unknown-outcome write only right before what observes it.
    history = [op(1, "write", 1, 0, 1), op(2, "write", 2, 2, None, "unknown")]
    history += [op(3, "write", 3, 3, 4), op(4, "read", 2, 5, 6)]
    assert verdict(*history) == LIN
    assert verdict(*history[:3], op(4, "read", 1, 5, 6)) == NOT


def test_unknown_writes_may_chain_through_an_unknown_cas() -> None:
    chain = [op(1, "write", 5, 0, None, "unknown"), op(2, "cas", (5, 6), 0, None, "unknown")]
    assert verdict(*chain, op(3, "read", 6, 10, 11)) == LIN
    assert verdict(chain[1], op(3, "read", 6, 10, 11)) == NOT


def test_appends_a_put_will_erase_may_come_in_any_order() -> None:
    before = op(1, "append", "a", 0, 1)
    racing = [op(2, "put", "b", 2, 20), op(3, "append", "c", 2, 20), op(4, "append", "X", 2, 20)]
    assert verdict(before, *racing, op(5, "get", "bX", 2, 19)) == LIN
    # Without the put nothing can take the text back to a start of "bX".
    assert verdict(before, *racing[1:], op(5, "get", "bX", 2, 19)) == NOT


def test_a_get_may_read_a_text_before_a_put_replaces_it() -> None:
    # The text "a" cannot lead to "bX" without the put, yet "ab" may be read before the put.
    history = [op(1, "append", "a", 0, 1), op(2, "put", "b", 2, 20), op(3, "append", "b", 2, 20)]
    history += [op(4, "append", "X", 2, 20), op(5, "get", "bX", 2, 19), op(6, "get", "ab", 2, 20)]
    assert verdict(*history) == LIN
