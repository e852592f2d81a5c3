"""The load generator's own ceiling: how many operations per second it drives against a server
that does nothing, on this machine.

A run whose throughput comes near this ceiling may be measuring the client, not the cluster;
every report shows the ceiling next to the results. The measurement uses the very code path of
a real run (`workloads.loadgen`: the same processes, workers, clients and batching) against
`workloads.null_server`, with closed-loop writes, and reports the generator's CPU share and the
null server's beside the rate (on a small machine they compete for the same cores, as the
nodes do in a real run).

Results are kept in a calibration file (default ``results/calibration.json``), one entry per
(processes, workers, batch); a new measurement replaces the entry with the same triple.
`find_ceiling` picks the entry matching a run's load spread, else the closest one.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cluster.procfs import cpu_seconds
from workloads.generators import PRESETS, Workload
from workloads.loadgen import (
    GeneratorPlan,
    GeneratorPool,
    iter_window,
    merge_ops,
    monotonic,
    percentile_ms,
    split_workers,
)
from workloads.null_server import NullServer
from workloads.results import machine_facts

DEFAULT_CALIBRATION = Path("results/calibration.json")
CALIBRATION_VERSION = 1
START_MARGIN = 0.05  # seconds between releasing the generators and run time 0


@dataclass(frozen=True, slots=True)
class CalibrationPoint:
    """One measurement: the generator spread, what it reached, what it cost."""

    processes: int
    workers: int
    batch: int
    seconds: float  # measured window
    ops_s: float  # acknowledged operations per second in the window
    requests_s: float  # HTTP requests per second (ops_s / batch)
    cpu_share: float  # the generator processes' CPU over the window, share of all cores
    server_cpu_share: float  # the null server's, the same way
    p50_ms: float | None
    p99_ms: float | None
    server_processes: int
    cores: int
    measured: str  # UTC time

    def key(self) -> tuple[int, int, int]:
        return (self.processes, self.workers, self.batch)


def calibrate(
    *,
    processes: int = 2,
    workers: int = 32,
    batch: int = 1,
    seconds: float = 5.0,
    warmup: float = 1.0,
    server_processes: int = 1,
    value_size: int = 64,
    work_dir: Path | None = None,
) -> CalibrationPoint:
    """Drive a null server with closed-loop writes and measure the achieved rate."""
    if min(processes, workers, batch, server_processes) < 1:
        raise ValueError("processes, workers, batch and server processes must be >= 1")
    if not seconds > 0 or warmup < 0:
        raise ValueError("seconds must be > 0 and warmup >= 0")
    workload = Workload(
        mix=PRESETS["write-only"], key_count=1000, value_size=value_size, clients=workers
    )
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="raftbench-calibrate-", dir=work_dir) as tmp:
        folder = Path(tmp)
        with NullServer(processes=server_processes) as server:
            plans = [
                GeneratorPlan(
                    endpoints=(server.url,),
                    workload=workload.to_dict(),
                    seed=1,
                    workers=ids,
                    batch=batch,
                    stop_at=warmup + seconds,
                    output=str(folder / f"ops-{index}.jsonl"),
                )
                for index, ids in enumerate(split_workers(workers, processes))
            ]
            with GeneratorPool(plans, folder) as pool:
                pool.start()
                origin = monotonic() + START_MARGIN
                pool.go(origin)
                _sleep_until(origin + warmup)
                gen0, server0 = pool.cpu_seconds(), _cpu(server.pids)
                _sleep_until(origin + warmup + seconds)
                gen1, server1 = pool.cpu_seconds(), _cpu(server.pids)
                results = pool.finish(timeout=60.0)
    ops = merge_ops(results)
    done = list(iter_window(ops, warmup, warmup + seconds))
    latencies = [op.complete - op.invoke for op in done if op.complete is not None]
    rate = len(done) / seconds
    return CalibrationPoint(
        processes=len(plans),
        workers=workers,
        batch=batch,
        seconds=seconds,
        ops_s=round(rate, 1),
        requests_s=round(rate / batch, 1),
        cpu_share=round((gen1 - gen0) / (seconds * cores), 4),
        server_cpu_share=round((server1 - server0) / (seconds * cores), 4),
        p50_ms=_round(percentile_ms(latencies, 50)),
        p99_ms=_round(percentile_ms(latencies, 99)),
        server_processes=server_processes,
        cores=cores,
        measured=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _sleep_until(when: float) -> None:
    delay = when - monotonic()
    if delay > 0:
        time.sleep(delay)


def _cpu(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# ---- the calibration file ----------------------------------------------------------------------


class CalibrationFileError(ValueError):
    """The calibration file exists but cannot be read as one."""


def load_calibration(path: Path) -> list[CalibrationPoint]:
    """The entries of a calibration file ([] if there is none)."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != CALIBRATION_VERSION:
            raise CalibrationFileError(f"{path}: not a version {CALIBRATION_VERSION} file")
        return [CalibrationPoint(**entry) for entry in data["entries"]]
    except (OSError, ValueError, KeyError, TypeError) as error:
        if isinstance(error, CalibrationFileError):
            raise
        raise CalibrationFileError(f"{path}: unreadable calibration file: {error}") from None


def save_calibration(path: Path, points: Sequence[CalibrationPoint]) -> list[CalibrationPoint]:
    """Merge `points` into the file (replacing entries with the same spread); all entries."""
    merged = {point.key(): point for point in load_calibration(path)}
    merged.update((point.key(), point) for point in points)
    entries = [merged[key] for key in sorted(merged)]
    path.parent.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "version": CALIBRATION_VERSION,
        "what": "load-generator ceiling against a null server (raftbench calibrate)",
        "machine": machine_facts(),
        "entries": [asdict(point) for point in entries],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return entries


def find_ceiling(
    points: Sequence[CalibrationPoint], processes: int, workers: int, batch: int
) -> CalibrationPoint | None:
    """The entry for this spread, else the closest: same batch size first (it changes the rate
    most), then the nearest batch, then the same number of processes, then the nearest number
    of workers."""
    if not points:
        return None

    def distance(point: CalibrationPoint) -> tuple[bool, float, bool, float, float]:
        return (
            point.batch != batch,
            abs(math.log(point.batch / batch)),
            point.processes != processes,
            abs(math.log(point.workers / workers)),
            abs(math.log(point.processes / processes)),
        )

    return min(points, key=distance)


def format_table(points: Sequence[CalibrationPoint]) -> str:
    """A plain-text table of calibration points."""
    header = (
        f"{'procs':>5} {'workers':>7} {'batch':>5} {'ops/s':>9} {'req/s':>8} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'gen CPU':>8} {'server CPU':>10}"
    )
    lines = [header]
    for p in points:
        lines.append(
            f"{p.processes:>5} {p.workers:>7} {p.batch:>5} {p.ops_s:>9.0f} {p.requests_s:>8.0f} "
            f"{_ms(p.p50_ms):>7} {_ms(p.p99_ms):>7} {p.cpu_share:>8.0%} {p.server_cpu_share:>10.0%}"
        )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
