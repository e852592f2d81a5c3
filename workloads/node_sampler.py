"""What every node of a real run looks like every 100 ms: role, indexes, CPU, memory, peer
traffic.

Each node has its own polling task (and its own small httpx client) on a fixed 100 ms grid, so
a node that answers slowly delays only its own samples. A node whose process is stopped,
paused or gone, or that does not answer `/status` within `timeout`, is sampled as
``up: false`` (the row still carries its CPU so far).

CPU comes from ``/proc/<pid>/stat`` (utime + stime) and resident memory (`rss`, bytes) from
``/proc/<pid>/statm``, through the target's `process_stat` (on SSH hosts: the hosts' process
monitors): cheap enough to read at every sample. A raftbench node's /status also gives the log
it holds in memory (`log_entries`, `log_bytes`) and its `snapshot_index`, so a long run shows
whether compaction keeps memory bounded; etcd's status has no such counts (null).
Peer traffic comes from ``/metrics`` (``raftbench_peer_bytes_total`` and
``raftbench_peer_messages_total`` per peer and direction), read every `metrics_every` samples
and at the window's edges (`snapshot`). Both are kept as totals that survive restarts: a node
that is killed and started again begins from zero, so a new pid (or a counter that went down)
starts a new segment added to what was counted before. What a node did between its last
reading and a kill -9 is lost with it.

The node's status and traffic come through its `cluster.target.Target` (raftbench's /status and
/metrics, or etcd's maintenance status with no per-peer traffic), so any target is sampled alike.

Protocol events (elections, catch-up; see protocols/events.py) come from the target's `events`
(raftbench's ``/events``; etcd has none), read with the metrics and at `snapshot`: the node keeps
its recent ones, so only what a node did just before a kill -9 can be missed. Each answer carries
the engine's clock and the machine's CLOCK_MONOTONIC read together, which places the events
exactly on the run's clock (itself CLOCK_MONOTONIC minus the run's origin). They collect in
`events`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx

from cluster.procfs import ProcStat
from cluster.target import Target, parse_traffic
from protocols.types import NodeId
from workloads.loadgen import monotonic
from workloads.results import SAMPLE_INTERVAL

__all__ = ["NodeSampler", "NodeTotals", "leader_changes", "leader_time", "parse_traffic"]


@dataclass(slots=True)
class _Segmented:
    """A total over process lifetimes of counters that restart at zero with each process."""

    done: dict[str, float] = field(default_factory=dict)  # finished lifetimes
    current: dict[str, float] = field(default_factory=dict)  # the running one, last reading
    pid: int | None = None

    def update(self, pid: int, values: dict[str, float]) -> None:
        went_down = any(values.get(k, 0.0) < v for k, v in self.current.items())
        if pid != self.pid or went_down:
            for key, value in self.current.items():
                self.done[key] = self.done.get(key, 0.0) + value
            self.current = {}
            self.pid = pid
        self.current.update(values)

    def total(self, key: str) -> float:
        return self.done.get(key, 0.0) + self.current.get(key, 0.0)

    def names(self) -> set[str]:
        return set(self.done) | set(self.current)


@dataclass(frozen=True, slots=True)
class NodeTotals:
    """One node's totals at one moment: CPU seconds and, per peer, bytes/messages each way."""

    cpu: float
    traffic: dict[str, float]  # "<peer>/<sent|received>/<bytes|messages>" -> total

    def get(self, peer: str, direction: str, kind: str) -> float:
        return self.traffic.get(f"{peer}/{direction}/{kind}", 0.0)

    def sum(self, direction: str, kind: str = "bytes") -> float:
        suffix = f"/{direction}/{kind}"
        return sum(v for k, v in self.traffic.items() if k.endswith(suffix))


class NodeSampler:
    """Polls every node of `target`; `rows` is the run's time series (see module docstring)."""

    def __init__(
        self,
        cluster: Target,
        clock: Callable[[], float],
        *,
        interval: float = SAMPLE_INTERVAL,
        metrics_every: int = 5,
        timeout: float = 0.5,
    ) -> None:
        self.cluster = cluster
        self.clock = clock
        self.interval = interval
        self.metrics_every = metrics_every
        self.timeout = timeout
        self.rows: list[dict[str, Any]] = []
        self._cpu = {n: _Segmented() for n in cluster.node_ids}
        self._traffic = {n: _Segmented() for n in cluster.node_ids}
        self._locks = {n: anyio.Lock() for n in cluster.node_ids}
        self.events: list[dict[str, Any]] = []
        self._events_read: dict[NodeId, tuple[int, int]] = {}  # node -> (pid, last seq read)
        # Built up front (an httpx client costs milliseconds to make), one per node.
        self._http = {
            n: httpx.AsyncClient(trust_env=False, timeout=timeout) for n in cluster.node_ids
        }

    async def run(self) -> None:
        """Sample until cancelled; the clients are closed on the way out."""
        try:
            async with anyio.create_task_group() as group:
                for node in self.cluster.node_ids:
                    group.start_soon(self._node_loop, node)
        finally:
            with anyio.CancelScope(shield=True):
                for client in self._http.values():
                    await client.aclose()

    async def current_leader(self) -> NodeId | None:
        """Ask every running node now: the one that says it leads in the highest term."""
        found: list[tuple[int, NodeId]] = []

        async def ask(node: NodeId) -> None:
            process = self._process(node)
            if process is None or process.state in ("T", "t", "Z"):
                return
            status = await self._status(node)
            if status is not None and status.get("role") == "leader":
                term = status.get("term")
                found.append((term if isinstance(term, int) else 0, node))

        async with anyio.create_task_group() as group:
            for node in self.cluster.node_ids:
                group.start_soon(ask, node)
        return max(found)[1] if found else None

    async def snapshot(self) -> dict[NodeId, NodeTotals]:
        """Read every node's counters now (metrics included) and return the totals."""
        async with anyio.create_task_group() as group:
            for node in self.cluster.node_ids:
                group.start_soon(self.refresh, node)
        return self.totals()

    def totals(self) -> dict[NodeId, NodeTotals]:
        out = {}
        for node in self.cluster.node_ids:
            traffic = self._traffic[node]
            out[node] = NodeTotals(
                self._cpu[node].total("cpu"), {k: traffic.total(k) for k in traffic.names()}
            )
        return out

    async def _node_loop(self, node: NodeId) -> None:
        tick = max(0, math.ceil(self.clock() / self.interval))
        while True:
            delay = tick * self.interval - self.clock()
            if delay > 0:
                await anyio.sleep(delay)
            await self._sample(node, with_metrics=tick % self.metrics_every == 0)
            tick = max(tick + 1, math.floor(self.clock() / self.interval) + 1)

    def _process(self, node: NodeId) -> ProcStat | None:
        """The node's process as /proc has it, its CPU counted on the way."""
        found = self.cluster.process_stat(node)
        if found is not None:
            self._cpu[node].update(found.pid, {"cpu": found.cpu})
        return found

    async def refresh(self, node: NodeId) -> None:
        """Read one node's counters now (the edges of the window; before a node is killed,
        so that what it sent since the last periodic read is not lost with the process)."""
        process = self._process(node)
        if process is not None and process.state not in ("T", "t", "Z"):
            await self._read_metrics(node, process.pid)
            await self._read_events(node, process.pid)

    async def _read_events(self, node: NodeId, pid: int) -> None:
        """Fetch the node's protocol events not read yet, placed on the run's clock."""
        client = self._http[node]
        async with self._locks[node]:
            seen_pid, seq = self._events_read.get(node, (pid, 0))
            if seen_pid != pid:
                seq = 0  # a new process numbers its events from 1 again
            body = await self.cluster.events(client, node, seq)
            if body is None:
                return
            origin = monotonic() - self.clock()  # CLOCK_MONOTONIC at run time 0
            try:
                offset = float(body["monotonic"]) - float(body["now"]) - origin
            except (KeyError, TypeError, ValueError):
                return
            for raw in body.get("events", []):
                if not isinstance(raw, dict) or not isinstance(raw.get("seq"), int):
                    continue
                seq = max(seq, raw["seq"])
                contact = raw.get("last_contact")
                row = {k: v for k, v in raw.items() if k != "seq"}
                row |= {"node": node, "t": round(float(raw["t"]) + offset, 5)}
                row["last_contact"] = None if contact is None else round(contact + offset, 5)
                self.events.append(row)
            self._events_read[node] = (pid, seq)

    async def _read_metrics(self, node: NodeId, pid: int) -> None:
        client = self._http[node]
        async with self._locks[node]:  # answers applied in the order they were asked for
            traffic = await self.cluster.traffic(client, node)
            if traffic is not None:
                self._traffic[node].update(pid, traffic)

    async def _sample(self, node: NodeId, with_metrics: bool) -> None:
        t = self.clock()
        process = self._process(node)
        row: dict[str, Any] = {"t": round(t, 4), "node": node, "up": False}
        row["rss"] = None if process is None else process.rss
        if process is not None and process.state not in ("T", "t", "Z"):
            status = await self._status(node)
            if status is not None:
                row.update(up=True, **status)
                if with_metrics:
                    await self._read_metrics(node, process.pid)
                    await self._read_events(node, process.pid)
        totals = self._traffic[node]
        row["cpu"] = round(self._cpu[node].total("cpu"), 3)
        row["sent"] = int(sum(totals.total(k) for k in totals.names() if "/sent/bytes" in k))
        row["received"] = int(
            sum(totals.total(k) for k in totals.names() if "/received/bytes" in k)
        )
        self.rows.append(row)

    async def _status(self, node: NodeId) -> dict[str, Any] | None:
        return await self.cluster.status(self._http[node], node)


def leader_time(
    rows: list[dict[str, Any]], node: NodeId, start: float, end: float, gap: float = 1.0
) -> float:
    """Seconds of [start, end) in which `node`'s samples said it led (a sample counts until the
    next one of that node, at most `gap` seconds)."""
    mine = sorted((r for r in rows if r["node"] == node), key=lambda r: float(r["t"]))
    total = 0.0
    for row, following in zip(mine, [*mine[1:], None], strict=True):
        if not row.get("up") or row.get("role") != "leader":
            continue
        t0 = float(row["t"])
        t1 = min(float(following["t"]) if following is not None else t0 + gap, t0 + gap)
        total += max(0.0, min(t1, end) - max(t0, start))
    return total


def leader_changes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each first sample of a leader in a term higher than any seen before."""
    changes = []
    best = -1
    for row in sorted(rows, key=lambda r: float(r["t"])):
        term = row.get("term")
        if row.get("up") and row.get("role") == "leader" and isinstance(term, int) and term > best:
            best = term
            changes.append({"t": row["t"], "event": f"{row['node']} leads term {term}"})
    return changes
