"""The operation model every history reader produces and the checker consumes.

A history is a list of `Operation`s, each one a client call with the interval in which it was
outstanding. Readers turn event logs (invoke, then ok/fail/info) into this form; the simulator
and the driver may build it directly. Keeping the checker's input this small is what lets it be
fed from any source.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

Value = Hashable
"""A register value. `None` stands for "the key is absent"."""

FUNCTIONS = frozenset({"read", "write", "delete", "cas", "put", "get", "append"})
OUTCOMES = frozenset({"ok", "fail", "unknown"})
READS = frozenset({"read", "get"})


class HistoryError(ValueError):
    """A history that cannot be read: the message names the file and line when there is one."""

    def __init__(self, message: str, path: Path | str | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


@dataclass(frozen=True, slots=True)
class Operation:
    """One client operation on one key.

    `value` is what the operation wrote (write, put, append), the pair `(expected, new)` for a
    compare-and-set (`expected` None: the key must be absent), or what a read observed (get,
    read; None when the key was absent). A delete carries None. `complete` is None (or
    infinity) when the outcome is unknown: the operation may then have taken effect at any
    moment after `invoke`, or never. A failed operation ("fail") took no effect.
    """

    process: int
    f: str
    key: str
    value: Value
    invoke: float
    complete: float | None
    outcome: str

    def __post_init__(self) -> None:
        if self.f not in FUNCTIONS:
            raise HistoryError(f"unknown operation {self.f!r}")
        if self.outcome not in OUTCOMES:
            raise HistoryError(f"unknown outcome {self.outcome!r}")
        if self.f == "cas" and not (isinstance(self.value, tuple) and len(self.value) == 2):
            raise HistoryError(f"cas needs an (expected, new) pair, got {self.value!r}")
        if self.f == "append" and not isinstance(self.value, str):
            raise HistoryError(f"append needs a string, got {self.value!r}")
        try:
            hash(self.value)
        except TypeError:
            raise HistoryError(f"value {self.value!r} is not hashable") from None
        if math.isnan(self.invoke):
            raise HistoryError("invocation time is NaN")
        if self.complete is not None and not self.complete >= self.invoke:
            raise HistoryError(
                f"operation completes ({self.complete}) before it is invoked ({self.invoke})"
            )
        if self.outcome != "unknown" and self.completed_at == math.inf:
            raise HistoryError(f"a {self.outcome!r} operation needs a completion time")

    @property
    def completed_at(self) -> float:
        """The completion time, infinity when the outcome is unknown."""
        if self.complete is None or self.outcome == "unknown":
            return math.inf
        return self.complete

    def describe(self) -> str:
        """A short human-readable form, for verdict explanations."""
        if self.f == "cas" and isinstance(self.value, tuple):
            expected, new = self.value
            what = f"cas {short_value(expected)} -> {short_value(new)}"
        elif self.f in READS:
            what = f"{self.f} -> {short_value(self.value)}"
        elif self.f == "delete":
            what = "delete"
        else:
            what = f"{self.f} {short_value(self.value)}"
        end = "?" if self.completed_at == math.inf else f"{self.completed_at:g}"
        return f"process {self.process} {what} [{self.outcome}, t={self.invoke:g}..{end}]"


def short_value(value: object, limit: int = 40) -> str:
    """A value as shown in explanations: `absent` for None; a long value keeps both ends
    (appended values differ at the end)."""
    text = "absent" if value is None else repr(value)
    if len(text) <= limit:
        return text
    keep = (limit - 3) // 2
    return text[:keep] + "..." + text[-keep:]
