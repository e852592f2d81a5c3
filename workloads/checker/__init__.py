"""Linearizability checker for key-value histories.

Read a history (`read_history`) or build `Operation`s directly, then `check_operations`. The
search (Wing & Gong with Lowe's memoisation, split per key) lives in `search` (its rules for
appended text in `texts`), the per-key register model in `model`, the file formats in `readers`.
"""

from workloads.checker.check import (
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    UNKNOWN,
    CheckResult,
    KeyResult,
    check_operations,
)
from workloads.checker.history import HistoryError, Operation
from workloads.checker.readers import FORMATS, parse_lines, read_history

__all__ = [
    "FORMATS",
    "LINEARIZABLE",
    "NOT_LINEARIZABLE",
    "UNKNOWN",
    "CheckResult",
    "HistoryError",
    "KeyResult",
    "Operation",
    "check_operations",
    "parse_lines",
    "read_history",
]
