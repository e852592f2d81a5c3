"""The checker against real Jepsen histories (porcupine's test data) with known verdicts."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
from linearizability_data import ETCD_LOGS, KV_FILES, expected_etcd, expected_kv

from workloads.checker import Operation, check_operations, read_history


def test_the_shared_data_is_all_there() -> None:
    # Guards the parametrized tests below against silently running on nothing.
    assert len(ETCD_LOGS) == 52
    assert sorted(expected_etcd()) == [p.name for p in ETCD_LOGS]
    assert len(KV_FILES) == 4


@pytest.mark.parametrize("path", ETCD_LOGS, ids=lambda p: p.name)
def test_etcd_log_verdict_matches_expected(path: Path) -> None:
    result = check_operations(read_history(path), budget=None)
    assert result.verdict == expected_etcd()[path.name]


@pytest.mark.parametrize("path", KV_FILES, ids=lambda p: p.name)
def test_kv_history_verdict_matches_its_name(path: Path) -> None:
    result = check_operations(read_history(path), budget=None)
    assert result.verdict == expected_kv(path)


def test_formats_are_inferred_from_content() -> None:
    assert read_history(ETCD_LOGS[0]) == read_history(ETCD_LOGS[0], "jepsen-etcd")
    assert read_history(KV_FILES[0]) == read_history(KV_FILES[0], "jepsen-kv")


def prefix(ops: list[Operation], cut: float) -> list[Operation]:
    """The history as it stood at time `cut`: later invocations are gone, operations still
    running have an unknown outcome."""
    return [
        replace(op, complete=None, outcome="unknown") if op.completed_at > cut else op
        for op in ops
        if op.invoke <= cut
    ]


BAD = [p for p in ETCD_LOGS if expected_etcd()[p.name] == "not-linearizable"] + [
    p for p in KV_FILES if expected_kv(p) == "not-linearizable"
]


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.name)
def test_failure_names_where_the_smallest_bad_prefix_ends(path: Path) -> None:
    ops = read_history(path)
    result = check_operations(ops, budget=None)
    failing = [k for k in result.keys if k.verdict == "not-linearizable"]
    assert failing
    for key_result in failing:
        culprit = key_result.failed_at
        assert culprit is not None
        assert culprit.key == key_result.key
        assert culprit.describe() in key_result.detail
        key_ops = [op for op in ops if op.key == key_result.key]
        end = culprit.completed_at
        assert math.isfinite(end)
        # Times in Jepsen logs are line numbers, so no two events share one.
        before = check_operations(prefix(key_ops, end - 0.5), budget=None)
        including = check_operations(prefix(key_ops, end), budget=None)
        assert before.verdict == "linearizable"
        assert including.verdict == "not-linearizable"
