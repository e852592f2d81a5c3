"""The run folder format: what is written reads back the same, compressed or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from workloads.checker import check_operations, read_history
from workloads.results import FaultRecord, OpRecord, RunRecord, read_run, write_run


def record() -> RunRecord:
    ops = [
        OpRecord(0, "write", "k", "v1", 0.10, 0.12, "ok"),
        OpRecord(1, "read", "k", "v1", 0.13, 0.14, "ok", "linearizable"),
        OpRecord(2, "cas", "k", ("v1", "v2"), 0.15, None, "unknown"),
        OpRecord(3, "read", "k", "stale", 0.16, 0.17, "ok", "local"),
    ]
    return RunRecord(
        metadata={"scenario": "s", "window": [0.0, 1.0]},
        ops=ops,
        timeseries=[{"t": 0.1, "node": "n1", "up": True, "role": "leader", "commit": 3}],
        links=[{"src": "n1", "dst": "n2", "bytes": 100, "messages": 2}],
        regions={"n1": "a", "n2": "a"},
        nodes={"n1": {"region": "a", "cpu_seconds": None}},
        faults=[FaultRecord(0.5, "crash", ("n1",), "crash n1")],
    )


@pytest.mark.parametrize("compress", [False, True])
def test_a_run_reads_back_as_written(tmp_path: Path, compress: bool) -> None:
    original = record()
    folder = write_run(original, tmp_path, "run", compress)
    assert (folder / ("ops.jsonl.gz" if compress else "ops.jsonl")).exists()
    assert (folder / "history.jsonl").exists() is not compress
    again = read_run(folder)
    assert again.ops == original.ops
    assert again.timeseries == original.timeseries
    assert again.faults == original.faults
    assert (again.links, again.regions, again.nodes) == (
        original.links,
        original.regions,
        original.nodes,
    )


def test_history_file_is_what_the_checker_reads(tmp_path: Path) -> None:
    """Local reads are left out (they may be stale by design); the rest checks as recorded."""
    folder = write_run(record(), tmp_path, "run")
    history = read_history(folder / "history.jsonl", "jsonl")
    assert sorted(op.f for op in history) == ["cas", "read", "write"]
    assert check_operations(history).verdict == "linearizable"
