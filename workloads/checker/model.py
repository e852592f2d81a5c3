"""The sequential specification: one register per key.

The search asks one question over and over: "if this operation took effect now, in this state,
is what the client saw possible, and what is the state afterwards?" Each operation is compiled
once into a transition function answering exactly that, so the search loop never looks at the
operation's fields again.

State is the key's value, None when the key is absent. Rules:

- read: the value observed equals the state (None: the key was absent);
- get: the same, except that an absent key reads as "" (the Jepsen kv / 6.824 convention);
- write, put: the state becomes the value; delete: the key becomes absent;
- append: the state becomes state + value (an absent key counts as "");
- cas (expected, new) that succeeded: legal only if state == expected, then state = new;
- an operation with unknown outcome is never illegal: what it could not do (a cas whose
  expectation does not hold, an append to a non-string) it did not do. "Never happened" is
  covered by leaving it out, which the search may always do (see search.py).
- any operation that failed took no effect, and a read without an ok result tells nothing:
  `relevant` drops both before the search.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from enum import Enum
from typing import TypeAlias

from workloads.checker.history import Operation, Value


class Illegal(Enum):
    """Returned by a transition when the operation cannot take effect in that state."""

    ILLEGAL = "illegal"


ILLEGAL = Illegal.ILLEGAL

Transition: TypeAlias = Callable[[Value], "Value | Illegal"]

INITIAL_STATE: Value = None
"""Every key starts absent."""


def relevant(op: Operation) -> bool:
    """Whether an operation can constrain the history at all (see the module rules)."""
    if op.outcome == "fail":
        return False
    return not (op.outcome == "unknown" and op.f in ("read", "get"))


REGISTER_FUNCTIONS = frozenset({"read", "write", "delete", "cas"})


class Nothing(Enum):
    """Stands for "no value" where None (absent) is a real value."""

    NOTHING = "nothing"

    __hash__ = object.__hash__  # the one member is a singleton; Enum's own hash is slow Python


NOTHING = Nothing.NOTHING


def cas_pair(op: Operation) -> tuple[Value, Value]:
    """(expected, new) of a cas."""
    assert isinstance(op.value, tuple)
    expected, new = op.value
    return expected, new


def is_register_history(ops: Sequence[Operation]) -> bool:
    """True if only read, write, delete and cas occur: then a value can only be seen by a read
    or a cas that names it, and only be set by an operation that names it (not so with get and
    append, where "" and absent read alike and values are built up)."""
    return all(op.f in REGISTER_FUNCTIONS for op in ops)


def must_see(op: Operation) -> Value | Nothing:
    """The value a register operation can only take effect on, if it must take effect at all:
    an ok read sees its value, an ok cas its expected value."""
    if op.outcome == "unknown":
        return NOTHING
    if op.f == "read":
        return op.value
    if op.f == "cas":
        return cas_pair(op)[0]
    return NOTHING


def may_set(op: Operation) -> Value | Nothing:
    """The value a register operation leaves behind if it takes effect (NOTHING for a read)."""
    if op.f == "cas":
        return cas_pair(op)[1]
    if op.f == "delete":
        return None
    return NOTHING if op.f == "read" else op.value


def without_unobserved(ops: Sequence[Operation]) -> list[Operation]:
    """Drop the unknown-outcome operations of one register whose effect nobody could see.

    Say an unknown-outcome write, delete or cas sets value v, and no read returns v and no cas
    expects v. If it took effect, the next operation that finds the register holding v cannot
    be a read or a cas that succeeds (none expects v), so v is overwritten unseen; an order
    with the operation left out is just as valid. Dropping such a cas may leave the value it
    expects unobserved, hence the fixpoint. Each dropped operation spares the search a branch
    that never closes (it could be linearized at any later moment).
    """
    if not is_register_history(ops):
        return list(ops)
    observers: Counter[Value] = Counter()
    producers: dict[Value, list[int]] = {}
    for i, op in enumerate(ops):
        if op.f in ("read", "cas"):  # unknown cas included: it may still need its value
            observers[op.value if op.f == "read" else cas_pair(op)[0]] += 1
        if op.outcome == "unknown" and op.f != "read":
            producers.setdefault(may_set(op), []).append(i)
    dropped: set[int] = set()
    unseen = [value for value in producers if observers[value] == 0]
    while unseen:
        for i in producers.pop(unseen.pop(), []):
            dropped.add(i)
            if ops[i].f == "cas":
                expected = cas_pair(ops[i])[0]
                observers[expected] -= 1
                if observers[expected] == 0 and expected in producers:
                    unseen.append(expected)
    return [op for i, op in enumerate(ops) if i not in dropped]


def transition(op: Operation) -> Transition:
    """Compile one relevant operation into its transition function."""
    if op.outcome == "unknown" and op.f in ("read", "get"):
        raise ValueError("a read with unknown outcome is not relevant: drop it")
    value = op.value
    match op.f:
        case "read" | "get":
            if op.f == "get" and value == "":
                return _read_empty_or_absent
            return _reader(value)
        case "write" | "put":
            return _writer(value)
        case "delete":
            return _writer(None)
        case "append":
            assert isinstance(value, str)
            if op.outcome == "unknown":
                return _lenient(_appender(value))
            return _appender(value)
        case "cas":
            expected, new = cas_pair(op)
            if op.outcome == "unknown":
                return _maybe_cas(expected, new)
            return _cas(expected, new)
        case _:
            raise ValueError(f"no transition for operation {op.f!r}")


def _lenient(step: Transition) -> Transition:
    def lenient(state: Value) -> Value | Illegal:
        after = step(state)
        return state if after is ILLEGAL else after

    return lenient


def _read_empty_or_absent(state: Value) -> Value | Illegal:
    return state if state is None or state == "" else ILLEGAL


def _reader(observed: Value) -> Transition:
    def read(state: Value) -> Value | Illegal:
        return state if state == observed else ILLEGAL

    return read


def _writer(value: Value) -> Transition:
    def write(state: Value) -> Value | Illegal:
        return value

    return write


def _appender(suffix: str) -> Transition:
    def append(state: Value) -> Value | Illegal:
        if state is None:
            return suffix
        if isinstance(state, str):
            return state + suffix
        return ILLEGAL

    return append


def _cas(expected: Value, new: Value) -> Transition:
    def cas(state: Value) -> Value | Illegal:
        return new if state == expected else ILLEGAL

    return cas


def _maybe_cas(expected: Value, new: Value) -> Transition:
    def maybe_cas(state: Value) -> Value | Illegal:
        return new if state == expected else state

    return maybe_cas
