"""The benchmark's generated histories: the many-client one passes, every mutant fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from linearizability_data import ETCD_LOGS, KV_FILES, expected_etcd, expected_kv

from workloads.bench_checker.__main__ import main
from workloads.bench_checker.mutants import future_read, stale_read, unwritten_read
from workloads.bench_checker.synthetic import kv_history
from workloads.checker import check_operations, read_history

PASSING = [p for p in ETCD_LOGS if expected_etcd()[p.name] == "linearizable"] + [
    p for p in KV_FILES if expected_kv(p) == "linearizable"
]


@pytest.mark.parametrize("path", PASSING, ids=lambda p: p.name)
def test_a_read_of_an_unwritten_value_fails_at_that_read(path: Path) -> None:
    ops = read_history(path)
    mutant = unwritten_read(ops)
    assert mutant is not None
    (changed,) = [new for old, new in zip(ops, mutant, strict=True) if old != new]
    result = check_operations(mutant, budget=None)
    assert result.verdict == "not-linearizable"
    assert [k.failed_at for k in result.keys if k.verdict == "not-linearizable"] == [changed]


def test_reads_of_values_written_only_later_fail() -> None:
    # Not every history has such a read (all values may be written early), most do.
    mutants = [m for m in (future_read(read_history(p)) for p in PASSING) if m is not None]
    assert len(mutants) > len(PASSING) // 2
    for mutant in mutants:
        assert check_operations(mutant, budget=None).verdict == "not-linearizable"


def test_a_many_client_history_passes_and_its_stale_read_fails() -> None:
    ops = kv_history(clients=20, keys=4, ops_per_client=8, seed=3)
    assert check_operations(ops, budget=None).verdict == "linearizable"
    mutant = stale_read(ops)
    assert mutant is not None
    assert check_operations(mutant, budget=None).verdict == "not-linearizable"


def test_the_benchmark_decides_everything_it_times(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(ETCD_LOGS[0].parents[1])]) == 0
    assert "unknown: 0   wrong verdicts: 0" in capsys.readouterr().out


def test_the_benchmark_says_when_the_data_is_missing(tmp_path: Path) -> None:
    assert main([str(tmp_path)]) == 2
