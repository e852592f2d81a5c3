"""Acknowledged writes lost: the final state of each key against the acknowledged history.

An *acknowledged write* is a write, cas or delete whose outcome is `ok`. It is *lost* when the
data shows it was undone. Two sources can show it:

1. The history. If the checker finds the history linearizable, every acknowledged write is
   ordered consistently with every read that followed it, so no read ever saw one undone: as
   far as the history can tell, none is lost. A non-linearizable (or undecided) history cannot
   say how many, so on its own it gives no count (None).
2. The final state, when the driver recorded the store after the run (metadata["final_state"]
   = {key: value}). It is taken as the whole store: a key that some mutation in the history
   touched and that is missing from it is absent (null) — except the keys the driver could
   not read (`final_state_unread`, top level or under the engine's section of the metadata),
   which are not checked, and unless metadata["final_state_partial"] is true (the driver read
   only some keys), when only the keys listed are checked.

   For one key, a mutating operation `w` (acknowledged, or with an unknown outcome — it may
   have taken effect at any time after its invocation; failed ones took no effect) *can be
   the last one applied* unless some acknowledged mutation `a` was invoked after `w`
   completed (then `a` is ordered after `w` in real time). The key's final value must be the
   value written by one of the operations that can be last (a delete writes null; the
   initial state, null, can be last only if nothing was acknowledged). Otherwise the final
   value comes from an operation `w` that was overtaken: every acknowledged mutation invoked
   after `w` completed is counted lost (taking the `w` that gives the fewest, when several
   wrote that value). A value that no operation wrote counts every acknowledged mutation of
   the key as lost.

The count reported is the final-state count when there is a final state, else 0 for a
linearizable history, else None ("cannot tell").
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from workloads.checker import LINEARIZABLE
from workloads.results import OpRecord
from workloads.run_series import MUTATIONS

_INITIAL = object()  # marks the key's initial (absent) state among the candidate writers


@dataclass(frozen=True, slots=True)
class LossCheck:
    """How many acknowledged writes the data shows lost (None: cannot tell) and why."""

    lost: int | None
    keys_checked: int
    detail: str


def written_value(op: OpRecord) -> Any:
    """What a mutation leaves in the key: the value, a cas's new value, None for a delete."""
    if op.f == "delete":
        return None
    if op.f == "cas" and isinstance(op.value, tuple | list) and len(op.value) == 2:
        return op.value[1]
    return op.value


def acked_writes_lost(
    ops: Sequence[OpRecord],
    verdict: str,
    final_state: Mapping[str, Any] | None,
    partial: bool = False,
    unread: Collection[str] = (),
) -> LossCheck:
    """Count acknowledged writes lost by the rule in the module docstring."""
    if final_state is None:
        if verdict == LINEARIZABLE:
            return LossCheck(0, 0, "history linearizable; no final-state reads to check")
        return LossCheck(None, 0, f"history {verdict} and no final-state reads: cannot count")
    by_key: dict[str, list[OpRecord]] = defaultdict(list)
    for op in ops:
        if op.f in MUTATIONS and op.outcome != "fail":
            by_key[op.key].append(op)
    keys = set(final_state) if partial else set(final_state) | set(by_key)
    keys -= set(unread) - set(final_state)
    lost = 0
    problems: list[str] = []
    for key in sorted(keys):
        final = final_state.get(key)
        count = _lost_on_key(by_key.get(key, []), final)
        if count:
            lost += count
            problems.append(f"{key!r} ends as {final!r}: {count} lost")
    detail = f"final state of {len(keys)} keys checked"
    if unread:
        detail += f" ({len(unread)} keys could not be read)"
    if problems:
        shown = "; ".join(problems[:3])
        more = f" (and {len(problems) - 3} more keys)" if len(problems) > 3 else ""
        detail += f": {shown}{more}"
    return LossCheck(lost, len(keys), detail)


def _lost_on_key(mutations: Sequence[OpRecord], final: Any) -> int:
    acked = [op for op in mutations if op.outcome == "ok"]
    writers: list[object] = [op for op in mutations if _same(written_value(op), final)]
    if final is None:
        writers.append(_INITIAL)
    if not writers:
        return len(acked)
    return min(_overtaken_by(writer, acked) for writer in writers)


def _overtaken_by(writer: object, acked: Sequence[OpRecord]) -> int:
    """How many acknowledged mutations were invoked after `writer` completed."""
    if writer is _INITIAL:
        return len(acked)
    assert isinstance(writer, OpRecord)
    done = writer.complete if writer.outcome == "ok" and writer.complete is not None else math.inf
    return sum(1 for op in acked if op.invoke > done)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return bool(a == b)
