"""Memory on real processes: the sampler reads a process's resident memory, and a short soak run
with a low compaction threshold keeps every node's in-memory log bounded (push and pull)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from cluster.launcher import proc_stat
from cluster.procfs import ProcStat, read_stat
from protocols.types import NodeId
from workloads.memory_series import MIB
from workloads.node_sampler import NodeSampler
from workloads.real_driver import run_real
from workloads.scenario import load_scenario, parse_scenario

BALLAST = 64 * MIB  # what the test process holds, written so every page is resident
THRESHOLD = 30  # entries between snapshots in the short soak


class _OneProcess:
    """The part of `cluster.target.Target` the sampler uses, for one plain process."""

    kind = "raftbench"
    has_traffic = False

    def __init__(self, pid: int, ticks: int) -> None:
        self.pid, self.ticks = pid, ticks

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        return ("n1",)

    def process_stat(self, node: NodeId) -> ProcStat | None:
        return proc_stat(self.pid, self.ticks)

    async def status(self, http: httpx.AsyncClient, node: NodeId) -> dict[str, Any] | None:
        return None  # no API: the row is `up: false`, but it still carries the process's RSS

    async def traffic(self, http: httpx.AsyncClient, node: NodeId) -> dict[str, float] | None:
        return None

    async def events(
        self, http: httpx.AsyncClient, node: NodeId, after: int
    ) -> dict[str, Any] | None:
        return None


def _vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def _sample_until(sampler: NodeSampler, rows: int, timeout: float = 30.0) -> None:
    """Run the sampler until it has `rows` rows with a resident size (bounded: a loaded
    machine may take longer than the sampling interval between rows)."""
    async with anyio.create_task_group() as group:
        group.start_soon(sampler.run)
        with anyio.move_on_after(timeout):
            while sum(row["rss"] is not None for row in sampler.rows) < rows:
                await anyio.sleep(0.05)
        group.cancel_scope.cancel()


def test_the_sampler_reads_the_resident_memory_of_a_real_process() -> None:
    with subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import sys; ballast = b'x' * {BALLAST}; print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
            stat = read_stat(holder.pid)
            assert stat is not None
            target = _OneProcess(holder.pid, stat.start_ticks)
            sampler = NodeSampler(target, clock=time.monotonic, interval=0.05)  # type: ignore[arg-type]
            anyio.run(_sample_until, sampler, 3)
            rows = [row for row in sampler.rows if row["rss"] is not None]
            assert rows, sampler.rows
            expected = _vm_rss(holder.pid)
            assert expected >= BALLAST
            for row in rows:  # an idle process: the resident size /proc/<pid>/status gives
                assert abs(row["rss"] - expected) <= MIB
            assert not any(row["up"] for row in sampler.rows)
        finally:
            holder.kill()  # by its pid
            holder.wait()
    assert proc_stat(holder.pid, stat.start_ticks) is None  # gone: no RSS is read any more


@pytest.mark.parametrize("protocol", ["push", "pull"])
def test_a_short_soak_keeps_every_nodes_log_bounded(tmp_path: Path, protocol: str) -> None:
    raw = dict(load_scenario("soak").raw)
    raw["cluster"] = {**raw["cluster"], "snapshot_entries": THRESHOLD}
    raw["run"] = {**raw["run"], "warmup": 1.0, "cooldown": 1.0}
    raw["workload"] = {**raw["workload"], "clients": 16}
    scenario = parse_scenario(raw).with_duration(8.0)
    # A node compacts only what it has applied and made durable: writes that arrived after
    # that stay until the next snapshot. In flight there is at most one write per client, and
    # a client that retries after a timeout may have put its write in the log twice.
    slack = 2 * scenario.workload.clients
    record = run_real(scenario, protocol, None, 1, 0, protocol, "test", work_dir=tmp_path)
    rows = [row for row in record.timeseries if row.get("up")]
    commits = [int(row["commit"]) for row in rows]
    assert max(commits) > 3 * (THRESHOLD + slack)  # without compaction: every write held
    for node in scenario.node_ids:
        mine = [row for row in rows if row["node"] == node]
        assert mine, f"{node} never answered"
        assert max(row["log_entries"] for row in mine) <= THRESHOLD + slack, node
        assert max(row["snapshot_index"] for row in mine) > 2 * THRESHOLD, node
        assert all(isinstance(row["rss"], int) and row["rss"] > 0 for row in mine), node
