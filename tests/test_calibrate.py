"""`raftbench calibrate`: the load generator's ceiling against the null server, and the
calibration file that real runs read it from."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import httpx
import pytest

from raftbench.cli import main
from workloads.calibrate import (
    CalibrationFileError,
    CalibrationPoint,
    calibrate,
    find_ceiling,
    load_calibration,
    save_calibration,
)
from workloads.null_server import NullServer


def point(processes: int, workers: int, batch: int, ops_s: float) -> CalibrationPoint:
    return CalibrationPoint(
        processes=processes,
        workers=workers,
        batch=batch,
        seconds=1.0,
        ops_s=ops_s,
        requests_s=ops_s / batch,
        cpu_share=0.5,
        server_cpu_share=0.3,
        p50_ms=1.0,
        p99_ms=2.0,
        server_processes=1,
        cores=2,
        measured="2026-01-01T00:00:00Z",
    )


def test_calibrate_against_the_null_server_reaches_a_positive_ceiling(tmp_path: Path) -> None:
    result = calibrate(processes=2, workers=4, batch=1, seconds=0.5, warmup=0.2, work_dir=tmp_path)
    assert result.ops_s > 0
    assert result.requests_s == result.ops_s  # one request per operation
    assert result.cpu_share > 0  # the generators worked, and it was measured
    assert result.p50_ms is not None and result.p99_ms is not None
    assert result.p99_ms >= result.p50_ms
    assert (result.processes, result.workers, result.batch) == (2, 4, 1)


def test_cli_measures_batched_requests_and_merges_into_the_file(tmp_path: Path) -> None:
    output = tmp_path / "calibration.json"
    save_calibration(output, [point(2, 32, 1, 1000.0)])
    code = main(
        [
            "calibrate", "--seconds", "0.5", "--warmup", "0.2", "--processes", "1",
            "--workers", "2", "--batch", "4", "--output", str(output),
        ]
    )  # fmt: skip
    assert code == 0
    entries = {p.key(): p for p in load_calibration(output)}
    assert set(entries) == {(2, 32, 1), (1, 2, 4)}  # the earlier entry is kept
    batched = entries[(1, 2, 4)]
    assert batched.ops_s > 0
    assert batched.requests_s == pytest.approx(batched.ops_s / 4, abs=0.1)


def test_the_null_server_answers_like_the_api() -> None:
    with NullServer() as server, httpx.Client(trust_env=False, timeout=10) as http:
        put = http.put(server.url + "/kv/k", json={"value": "v", "client_id": "c", "seq": 1})
        assert put.status_code == 200 and put.json()["ok"] is True
        get = http.get(server.url + "/kv/k?consistency=local")
        assert get.status_code == 200 and get.json()["value"] is None
        ops = [{"op": "get", "key": "a"}, {"op": "put", "key": "a", "value": "x"}]
        batch = http.post(server.url + "/batch", json={"ops": ops}).json()["results"]
        assert [r["status"] for r in batch] == [200, 200]
        assert "value" in batch[0] and batch[1]["ok"] is True
        bad = http.post(server.url + "/batch", content=b"not json")
        assert bad.status_code == 400


def test_saving_replaces_the_entry_with_the_same_spread(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "calibration.json"
    save_calibration(path, [point(2, 32, 1, 1000.0), point(2, 32, 16, 9000.0)])
    save_calibration(path, [point(2, 32, 1, 1200.0)])
    entries = load_calibration(path)
    assert [(p.key(), p.ops_s) for p in entries] == [((2, 32, 1), 1200.0), ((2, 32, 16), 9000.0)]
    assert json.loads(path.read_text())["machine"]["cores"] >= 1


def test_find_ceiling_prefers_the_exact_spread_then_the_same_batch() -> None:
    points = [point(2, 32, 1, 1000.0), point(2, 32, 16, 9000.0), point(4, 64, 1, 1500.0)]
    exact = find_ceiling(points, 4, 64, 1)
    assert exact is not None and exact.ops_s == 1500.0
    same_batch = find_ceiling(points, 2, 16, 16)
    assert same_batch is not None and same_batch.batch == 16
    nearest_batch = find_ceiling(points, 2, 32, 8)  # 8 is nearer 16 than 1 (log scale)
    assert nearest_batch is not None and nearest_batch.batch == 16
    same_processes = find_ceiling(points, 2, 48, 1)
    assert same_processes is not None and same_processes.processes == 2
    assert find_ceiling([], 2, 32, 1) is None


def test_a_missing_file_is_empty_and_a_broken_one_is_an_error(tmp_path: Path) -> None:
    assert load_calibration(tmp_path / "none.json") == []
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(CalibrationFileError, match="unreadable"):
        load_calibration(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"version": 99, "entries": []}))
    with pytest.raises(CalibrationFileError, match="version"):
        load_calibration(wrong)
    odd = tmp_path / "odd.json"
    entry = dataclasses.asdict(point(1, 1, 1, 1.0))
    entry["surprise"] = 1
    odd.write_text(json.dumps({"version": 1, "entries": [entry]}))
    with pytest.raises(CalibrationFileError):
        load_calibration(odd)
