"""Failing variants of linearizable histories, each known to fail by construction.

- `unwritten_read`: the last ok read returns a value nobody wrote;
- `stale_read`: a read returns a value that had certainly been overwritten before it began;
- `future_read`: a read returns a value first written (or appended) only after it ended.
"""

from __future__ import annotations

import math
from dataclasses import replace

from workloads.checker import Operation
from workloads.checker.history import READS, Value
from workloads.checker.model import may_set

NEVER_WRITTEN = "never-written"


def _ok_reads(ops: list[Operation]) -> list[int]:
    """Indices of the completed reads, latest completion first."""
    reads = [i for i, op in enumerate(ops) if op.f in READS and op.outcome == "ok"]
    return sorted(reads, key=lambda i: ops[i].completed_at, reverse=True)


def unwritten_read(ops: list[Operation]) -> list[Operation] | None:
    """The last completed read returns NEVER_WRITTEN (None if there is no completed read)."""
    reads = _ok_reads(ops)
    if not reads:
        return None
    mutant = list(ops)
    mutant[reads[0]] = replace(ops[reads[0]], value=NEVER_WRITTEN)
    return mutant


def stale_read(ops: list[Operation]) -> list[Operation] | None:
    """The latest read that can be made stale returns an overwritten value (None if none can)."""
    for i in _ok_reads(ops):
        read = ops[i]
        same_key = [op for op in ops if op.key == read.key]
        if read.f == "read":
            value = _overwritten_register_value(same_key, read)
        else:
            value = _overwritten_text(same_key, read)
        if value is not None:
            mutant = list(ops)
            mutant[i] = replace(read, value=value)
            return mutant
    return None


def _overwritten_register_value(ops: list[Operation], read: Operation) -> Value | None:
    """A value v such that some completed write of another value began after every operation
    that can set v had completed and ended before `read` began: v cannot be read any more."""
    if any(op.f not in ("read", "write", "delete", "cas") for op in ops):
        return None
    last_set: dict[Value, float] = {None: -math.inf}  # the key starts absent
    for op in ops:
        if op.f != "read" and op.outcome != "fail":
            value = may_set(op)
            last_set[value] = max(last_set.get(value, -math.inf), op.completed_at)
    for writer in ops:
        if writer.f == "read" or writer.outcome != "ok" or writer.completed_at >= read.invoke:
            continue
        written = may_set(writer)
        for value, last in last_set.items():
            if value not in (written, read.value) and last < writer.invoke:
                return value
    return None


def _overwritten_text(ops: list[Operation], read: Operation) -> str | None:
    """For appends: the text the read saw, cut before an append that had completed before the
    read began, where no put can fall between the two (the text then still holds the append)."""
    text = read.value
    if not isinstance(text, str) or any(op.f not in ("get", "append", "put") for op in ops):
        return None
    puts = [op for op in ops if op.f == "put" and op.outcome != "fail"]
    for op in sorted(ops, key=lambda o: o.completed_at, reverse=True):
        if op.f != "append" or op.completed_at >= read.invoke or not isinstance(op.value, str):
            continue
        if any(put.completed_at >= op.invoke and put.invoke <= read.completed_at for put in puts):
            continue
        at = text.find(op.value)
        if at >= 0 and text.count(op.value) == 1:
            return text[:at]
    return None


def future_read(ops: list[Operation]) -> list[Operation] | None:
    """The earliest read that can see the future does (None if none can)."""
    for i in reversed(_ok_reads(ops)):
        read = ops[i]
        later = [
            op
            for op in ops
            if op.key == read.key and op.f not in READS and op.invoke > read.completed_at
        ]
        value = _future_value(ops, read, later)
        if value is not None:
            mutant = list(ops)
            mutant[i] = replace(read, value=value)
            return mutant
    return None


def _future_value(ops: list[Operation], read: Operation, later: list[Operation]) -> Value | None:
    """A value only operations invoked after `read` completed can produce: for a register,
    a value only they set; for text, the read's text plus an append only they make."""
    earlier = [op for op in ops if op.key == read.key and op not in later]
    if read.f == "read":
        possible = {None} | {may_set(op) for op in earlier if op.f not in READS}
        fresh = [may_set(op) for op in later if op.f in ("write", "cas")]
        return next((v for v in fresh if v not in possible), None)
    text = "" if read.value is None else read.value
    if not isinstance(text, str):
        return None
    for op in later:
        if not (op.f == "append" and isinstance(op.value, str) and op.value):
            continue
        if not any(isinstance(o.value, str) and op.value in o.value for o in earlier):
            return text + op.value
    return None
