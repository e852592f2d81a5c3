"""Reduction 5 of the search (see search.py): the text still to be read, for histories with append.

Appends only extend the text. So once the text is not a prefix of what the next get to return
reads, only a put (with a start of that value) can save the branch: without one that may go
first, the branch is dead; with one, and with no get that could read what grows from the text
meanwhile, the exact text no longer matters and is replaced by DOOMED, which merges the many
orders of appends that the put will erase into one configuration.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

from workloads.checker.history import READS, Operation, Value
from workloads.checker.model import ILLEGAL, Illegal

KV_FUNCTIONS = frozenset({"get", "put", "append"})


class Doomed(Enum):
    """A text that no get can read before a put replaces it."""

    DOOMED = "doomed"

    __hash__ = object.__hash__  # a singleton; Enum's own hash is slow Python


DOOMED = Doomed.DOOMED


def grows(ops: Sequence[Operation]) -> bool:
    """Whether the reduction applies: some operation appends."""
    return any(op.f == "append" for op in ops)


class Texts:
    """Per-entry tables of the search's timeline (`op_at`: the operation of each entry)."""

    def __init__(
        self, ops: Sequence[Operation], op_at: Sequence[int], is_call: Sequence[bool]
    ) -> None:
        self.is_call = is_call
        kv_only = all(op.f in KV_FUNCTIONS for op in ops)
        self.resets = [ops[i].f not in ("append", "get", "read") for i in op_at]
        self.puts = [_put_text(ops[i]) for i in op_at]
        self.reads = [_read_text(ops[i]) for i in op_at]
        # What an operation leaves when the text is DOOMED (only reachable in kv-only histories).
        self.doomed_step: list[Value | Illegal] = [
            DOOMED if op.f == "append" else ILLEGAL if op.f == "get" else op.value
            for op in (ops[i] for i in op_at)
        ]
        self.kv_only = kv_only

    def settle(self, after: Value, entry: int, nxt: list[int], head: int) -> Value | Illegal:
        """`after` (the text placing call `entry` leaves), ILLEGAL if the branch is dead, or
        DOOMED if only a put can save it and no get can read it before."""
        text = "" if after is None else after
        if not isinstance(text, str):
            return after
        is_call, reads, tail = self.is_call, self.reads, head + 1
        pos = nxt[head]
        while pos != tail and (is_call[pos] or reads[pos] is None):
            pos = nxt[pos]  # find the next get to return
        if pos == tail:
            return after
        get_return = pos
        wanted = reads[pos]
        assert wanted is not None
        if wanted.startswith(text):
            return after
        rescued = observed = False
        pos = nxt[head]
        while pos != get_return:  # the calls that may go before that get
            if is_call[pos] and pos != entry:
                if self.resets[pos]:
                    put = self.puts[pos]
                    if put is None:
                        return after  # it may leave anything
                    rescued = rescued or wanted.startswith(put)
                else:
                    seen = reads[pos]
                    observed = observed or (seen is not None and seen.startswith(text))
            pos = nxt[pos]
        if not rescued:
            return ILLEGAL
        return after if observed or not self.kv_only else DOOMED


def _read_text(op: Operation) -> str | None:
    """What a get that completed must have read, as text (absent reads as ""), else None."""
    if op.f not in READS or op.completed_at == math.inf:
        return None
    if op.value is None:
        return ""
    return op.value if isinstance(op.value, str) else None


def _put_text(op: Operation) -> str | None:
    """The text a put leaves, None for anything else (then it may leave any text)."""
    return op.value if op.f == "put" and isinstance(op.value, str) else None
