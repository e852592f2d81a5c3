"""Committed writes per second and commit latency of a local cluster of real node processes.

    python -m workloads.bench_cluster --protocol push --clients 64 --procs 4 --duration 10

Starts `--nodes` `raftbench node` processes on 127.0.0.1 (ports chosen by the OS, a fresh
cluster file in a temporary folder), waits for a leader, then runs `--clients` closed-loop
writers spread over `--procs` load-generator processes. Each writer owns its own
`RaftbenchClient` (one httpx pool each: a shared pool collapses under concurrency) and puts
values of `--value-size` bytes to random keys, one outstanding write at a time. Latency is
measured by the writer, from sending a put to its acknowledgement (so it includes HTTP and the
client), for writes that start and end inside the measurement window (after `--warmup`).

Printed: committed writes/s, p50/p99/max latency, failed writes, and CPU use: of the load
generators (their share of the machine, to show whether they were the bottleneck) and of each
node (in cores). Nothing is written unless `--json PATH` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import numpy as np

from cluster.client import ClientError, RaftbenchClient
from cluster.config import CLUSTER_FILE, local_cluster_config, write_cluster_config
from cluster.procfs import cpu_seconds
from cluster.storage import FsyncPolicy

READY_TIMEOUT = 60.0


@dataclass(slots=True)
class WorkerReport:
    writes: int  # acknowledged inside the window
    failures: int
    latencies: list[float]
    cpu_seconds: float  # this process, during the window


@dataclass(slots=True)
class Summary:
    protocol: str
    nodes: int
    clients: int
    procs: int
    fsync: str
    value_size: int
    window_seconds: float
    writes_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    failures: int
    loadgen_cpu_share: float  # of all cores of the machine
    node_cpu_cores: dict[str, float]
    leader: str
    leader_persists_per_second: float  # store writes (fsyncs under `always`)
    leader_entries_per_persist: float  # group commit
    leader_persist_ms: float  # mean time of one persist
    leader_commit_ms: float  # mean proposal-to-reply time inside the leader (no HTTP)


# ---- the load generator (one process) -----------------------------------------------------------


async def _writer(
    endpoints: list[str],
    seed: int,
    value: str,
    window: tuple[float, float],
    report: WorkerReport,
) -> None:
    rng = random.Random(seed)
    start, end = window
    async with RaftbenchClient(endpoints, timeout=10.0) as client:
        while True:
            began = time.time()
            if began >= end:
                return
            try:
                await client.put(f"key{rng.randrange(100_000)}", value)
            except ClientError:
                if began >= start:
                    report.failures += 1
                continue
            finished = time.time()
            if began >= start and finished <= end:
                report.writes += 1
                report.latencies.append(finished - began)


async def _worker_main(args: argparse.Namespace) -> WorkerReport:
    endpoints = args.endpoints.split(",")
    report = WorkerReport(0, 0, [], 0.0)
    start = args.start_at + args.warmup
    end = start + args.duration
    value = "x" * args.value_size

    async def measure_cpu() -> None:
        await anyio.sleep(max(0.0, start - time.time()))
        before = time.process_time()
        await anyio.sleep(max(0.0, end - time.time()))
        report.cpu_seconds = time.process_time() - before

    await anyio.sleep(max(0.0, args.start_at - time.time()))
    async with anyio.create_task_group() as group:
        group.start_soon(measure_cpu)
        for i in range(args.clients):
            group.start_soon(_writer, endpoints, args.seed * 1000 + i, value, (start, end), report)
    return report


# ---- the cluster and the coordinator ------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    seconds = cpu_seconds(pid)
    if seconds is None:
        raise RuntimeError(f"node process {pid} is gone")
    return seconds


async def _read_line(process: anyio.abc.Process) -> str:
    assert process.stdout is not None
    data = b""
    while not data.endswith(b"\n"):
        chunk = await process.stdout.receive(1)
        data += chunk
    return data.decode().strip()


async def run_benchmark(args: argparse.Namespace) -> Summary:
    with tempfile.TemporaryDirectory(prefix="raftbench-bench-") as tmp:
        directory = Path(tmp)
        config = local_cluster_config(args.nodes, fsync=FsyncPolicy(args.fsync))
        write_cluster_config(config, directory / CLUSTER_FILE)
        nodes: dict[str, anyio.abc.Process] = {}
        try:
            for member in config.members:
                nodes[member.id] = await anyio.open_process(
                    [
                        sys.executable,
                        "-m",
                        "raftbench",
                        "node",
                        "--config",
                        str(directory / CLUSTER_FILE),
                        "--id",
                        member.id,
                        "--protocol",
                        args.protocol,
                    ],
                    stderr=None,
                )
            with anyio.fail_after(READY_TIMEOUT):
                for process in nodes.values():
                    line = await _read_line(process)
                    if not line.startswith("ready "):
                        raise RuntimeError(f"a node did not start: {line!r}")
            endpoints = list(config.client_urls().values())
            async with RaftbenchClient(endpoints, timeout=READY_TIMEOUT) as client:
                await client.put("bench-start", "1")
                assert client.leader is not None
                leader_url = client.leader
            leader = next(n for n, url in config.client_urls().items() if url == leader_url)
            return await _drive(args, endpoints, nodes, leader, leader_url)
        finally:
            for process in nodes.values():
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(10):
                for process in nodes.values():
                    await process.wait()
            for process in nodes.values():
                if process.returncode is None:
                    process.kill()
                await process.aclose()


async def _drive(
    args: argparse.Namespace,
    endpoints: list[str],
    nodes: dict[str, anyio.abc.Process],
    leader: str,
    leader_url: str,
) -> Summary:
    start_at = time.time() + 2.0  # time for the workers to import and connect
    window_start = start_at + args.warmup
    window_end = window_start + args.duration
    # Leader first, so that clients start there instead of being redirected.
    ordered = [leader_url] + [e for e in endpoints if e != leader_url]
    per_proc = _split(args.clients, args.procs)
    workers = []
    for index, count in enumerate(per_proc):
        command = [
            sys.executable,
            "-m",
            "workloads.bench_cluster",
            "--worker",
            "--endpoints",
            ",".join(ordered),
            "--clients",
            str(count),
            "--start-at",
            repr(start_at),
            "--warmup",
            str(args.warmup),
            "--duration",
            str(args.duration),
            "--value-size",
            str(args.value_size),
            "--seed",
            str(index + 1),
        ]
        workers.append(subprocess.Popen(command, stdout=subprocess.PIPE))
    node_cpu: dict[str, float] = {}
    await anyio.sleep(max(0.0, window_start - time.time()))
    before = {n: _cpu_seconds(p.pid) for n, p in nodes.items()}
    metrics_before = await _leader_metrics(leader_url)
    await anyio.sleep(max(0.0, window_end - time.time()))
    for n, p in nodes.items():
        node_cpu[n] = (_cpu_seconds(p.pid) - before[n]) / args.duration
    metrics_after = await _leader_metrics(leader_url)
    persist = _delta(metrics_before, metrics_after)
    reports = []
    for worker in workers:
        out, _ = await anyio.to_thread.run_sync(worker.communicate)
        if worker.returncode != 0:
            raise RuntimeError(f"a load generator failed (exit {worker.returncode})")
        reports.append(WorkerReport(**json.loads(out)))
    latencies = np.array([x for r in reports for x in r.latencies]) * 1000.0
    writes = sum(r.writes for r in reports)
    cores = os.cpu_count() or 1
    return Summary(
        protocol=args.protocol,
        nodes=args.nodes,
        clients=args.clients,
        procs=len(per_proc),
        fsync=args.fsync,
        value_size=args.value_size,
        window_seconds=args.duration,
        writes_per_second=writes / args.duration,
        p50_ms=float(np.percentile(latencies, 50)) if writes else float("nan"),
        p99_ms=float(np.percentile(latencies, 99)) if writes else float("nan"),
        max_ms=float(latencies.max()) if writes else float("nan"),
        failures=sum(r.failures for r in reports),
        loadgen_cpu_share=sum(r.cpu_seconds for r in reports) / (args.duration * cores),
        node_cpu_cores=node_cpu,
        leader=leader,
        leader_persists_per_second=persist.get("raftbench_persists_total", 0.0) / args.duration,
        leader_entries_per_persist=_ratio(
            persist.get("raftbench_persist_entries_sum", 0.0),
            persist.get("raftbench_persist_entries_count", 0.0),
        ),
        leader_persist_ms=1000.0
        * _ratio(
            persist.get("raftbench_persist_seconds_sum", 0.0),
            persist.get("raftbench_persist_seconds_count", 0.0),
        ),
        leader_commit_ms=1000.0
        * _ratio(
            persist.get("raftbench_commit_latency_seconds_sum", 0.0),
            persist.get("raftbench_commit_latency_seconds_count", 0.0),
        ),
    )


async def _leader_metrics(url: str) -> dict[str, float]:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as http:
        text = (await http.get(url + "/metrics")).text
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: value - before.get(name, 0.0) for name, value in after.items()}


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _print(summary: Summary) -> None:
    cpu = ", ".join(
        f"{n}{'*' if n == summary.leader else ''} {c:.2f}"
        for n, c in sorted(summary.node_cpu_cores.items())
    )
    print(
        f"{summary.protocol}: {summary.nodes} nodes, {summary.clients} clients in "
        f"{summary.procs} processes, fsync {summary.fsync}, {summary.value_size}-byte values, "
        f"{summary.window_seconds:g} s window"
    )
    print(
        f"  {summary.writes_per_second:.0f} writes/s  p50 {summary.p50_ms:.2f} ms  "
        f"p99 {summary.p99_ms:.2f} ms  max {summary.max_ms:.1f} ms  failures {summary.failures}"
    )
    print(
        f"  load generators: {summary.loadgen_cpu_share:.0%} of the machine's "
        f"{os.cpu_count()} cores; node CPU (cores, * = leader): {cpu}"
    )
    print(
        f"  leader: {summary.leader_persists_per_second:.0f} persists/s, "
        f"{summary.leader_entries_per_persist:.1f} entries each, "
        f"{summary.leader_persist_ms:.2f} ms each; mean commit latency inside the leader "
        f"{summary.leader_commit_ms:.2f} ms"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", default="push")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--procs", type=int, default=4, help="load-generator processes")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    parser.add_argument("--fsync", choices=["always", "never"], default="always")
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the summary here")
    # Internal: the load-generator processes.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--endpoints", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        report = anyio.run(_worker_main, args)
        json.dump(asdict(report), sys.stdout)
        return 0
    summary = anyio.run(run_benchmark, args)
    _print(summary)
    if args.json:
        data: dict[str, Any] = asdict(summary)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
