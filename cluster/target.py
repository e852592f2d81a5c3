"""The system under test as the real driver sees it: a cluster it can start, address, fault,
sample and stop.

Why a seam: the same scenarios, load generator, faults and checker must run against the
raftbench nodes and against systems written elsewhere (etcd), so a report can show how far the
engines built here sit from a production Raft. A target says what it cannot do
(`unsupported`: fault action -> reason); the driver records such faults as not applied, with the
reason, instead of pretending.

Two implementations: `RaftbenchTarget` (this module: a `LocalCluster` and its `Nemesis`) and
`cluster.etcd.EtcdCluster`.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import httpx

from cluster.client import ClientError, Get, RaftbenchClient, ReadResult
from cluster.launcher import LauncherError, LocalCluster
from cluster.nemesis import FaultEvent, Nemesis, NemesisError
from cluster.procfs import ProcStat
from cluster.shaper import LinkSpec
from protocols.types import NodeId

MAX_BATCH = 1024  # the node API's limit of operations per /batch
_LABELS = re.compile(r'(\w+)="([^"]*)"')
_TRAFFIC = {"raftbench_peer_bytes_total": "bytes", "raftbench_peer_messages_total": "messages"}


def parse_traffic(text: str) -> dict[str, float]:
    """Per-peer traffic counters from a raftbench node's /metrics text."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        name, brace, rest = line.partition("{")
        kind = _TRAFFIC.get(name)
        if kind is None or not brace:
            continue
        labels_text, _, value = rest.rpartition("} ")
        labels = dict(_LABELS.findall(labels_text))
        try:
            number = float(value)
        except ValueError:
            continue
        if "peer" in labels and "direction" in labels:
            out[f"{labels['peer']}/{labels['direction']}/{kind}"] = number
    return out


class FaultInjector(Protocol):
    """The fault actions the driver uses (`cluster.nemesis.Nemesis` has them all)."""

    async def kill(self, node: NodeId) -> FaultEvent: ...
    async def restart(self, node: NodeId) -> FaultEvent: ...
    async def pause(self, node: NodeId) -> FaultEvent: ...
    async def resume(self, node: NodeId) -> FaultEvent: ...
    async def partition(
        self, groups: Sequence[Sequence[NodeId]], *, one_way: bool = False
    ) -> FaultEvent: ...
    async def isolate(self, node: NodeId, *, one_way: bool = False) -> FaultEvent: ...
    async def heal(self) -> FaultEvent: ...
    async def slow_link(
        self,
        src: NodeId,
        dst: NodeId,
        *,
        delay_ms: float,
        jitter_ms: float = 0.0,
        loss: float = 0.0,
    ) -> FaultEvent: ...
    async def clear_slow_links(self) -> FaultEvent: ...
    async def slow_disk(self, node: NodeId, seconds: float) -> FaultEvent: ...
    async def recover(self) -> list[FaultEvent]: ...


class Target(Protocol):
    """A running cluster under test (see the module docstring)."""

    kind: str  # "raftbench" | "etcd": which load-generator client speaks to it
    has_traffic: bool  # per-peer byte/message counters are sampled (else those cells are n/a)

    @property
    def node_ids(self) -> tuple[NodeId, ...]: ...

    @property
    def endpoints(self) -> list[str]: ...

    def process(self, node: NodeId) -> tuple[int, int | None] | None:
        """(pid, start ticks) of the member's process while it exists; None when it is gone."""
        ...

    def process_stat(self, node: NodeId) -> ProcStat | None:
        """State, CPU seconds and resident bytes of the member's process; None when it is
        gone."""
        ...

    def unsupported(self) -> Mapping[str, str]:
        """Fault actions (`FaultAction` values) this target cannot take -> why."""
        ...

    def link_spec(self, src: NodeId, dst: NodeId) -> LinkSpec | None:
        """The topology's base setting of a directed link (None: none)."""
        ...

    def wait_for_leader(self, timeout: float) -> NodeId: ...

    def injector(self, clock: Callable[[], float], origin: float) -> FaultInjector: ...

    async def status(self, http: httpx.AsyncClient, node: NodeId) -> dict[str, Any] | None:
        """The member's role, term, commit, applied, last, leader, sync_source, and the log
        it holds in memory (log_entries, log_bytes, snapshot_index; null where the system
        does not say) (None: no answer)."""
        ...

    async def traffic(self, http: httpx.AsyncClient, node: NodeId) -> dict[str, float] | None:
        """Per-peer counters "<peer>/<sent|received>/<bytes|messages>" (None: not available)."""
        ...

    async def events(
        self, http: httpx.AsyncClient, node: NodeId, after: int
    ) -> dict[str, Any] | None:
        """The member's protocol events numbered above `after`, with the engine's clock and
        CLOCK_MONOTONIC read together (raftbench's GET /events); None: not available."""
        ...

    async def read_final(
        self, keys: Sequence[str], timeout: float
    ) -> tuple[dict[str, str | None], list[str]]:
        """Every key read linearizably: (values, keys that could not be read)."""
        ...

    async def read_members(
        self, keys: Sequence[str], timeout: float
    ) -> dict[NodeId, dict[str, str | None]] | None:
        """Every key read from every member on its own (None: this target does not)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the run metadata records about the target (binary, version, settings)."""
        ...

    def change_membership(self, change: str, node: NodeId) -> dict[str, Any]:
        """One membership change (add-learner, add-voter, promote, remove), at the leader,
        blocking until it is done (its answer: the entry's `index`, the `membership`); a
        removed member is then stopped. NemesisError: the target cannot, or it was refused.
        `unsupported()` names the scenario actions that need it when the target cannot."""
        ...

    def down(self) -> None: ...


class RaftbenchTarget:
    """The raftbench node processes of a `LocalCluster`, faulted by its `Nemesis`."""

    kind = "raftbench"
    has_traffic = True

    def __init__(self, cluster: LocalCluster, rng: random.Random | None = None) -> None:
        self.cluster = cluster
        self.rng = rng

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        return self.cluster.node_ids

    @property
    def endpoints(self) -> list[str]:
        return self.cluster.endpoints

    def process(self, node: NodeId) -> tuple[int, int | None] | None:
        record = self.cluster.records[node]
        return None if record.pid is None else (record.pid, record.start_ticks)

    def process_stat(self, node: NodeId) -> ProcStat | None:
        return self.cluster.process_stat(node)

    def unsupported(self) -> Mapping[str, str]:
        return {}

    def link_spec(self, src: NodeId, dst: NodeId) -> LinkSpec | None:
        return self.cluster.config.link_specs(src).get(dst)

    def wait_for_leader(self, timeout: float) -> NodeId:
        return self.cluster.wait_for_leader(timeout)

    def injector(self, clock: Callable[[], float], origin: float) -> FaultInjector:
        return Nemesis(self.cluster, clock=clock, origin=origin, rng=self.rng)

    async def status(self, http: httpx.AsyncClient, node: NodeId) -> dict[str, Any] | None:
        try:
            response = await http.get(self.cluster.url(node) + "/status")
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        if response.status_code != 200 or not isinstance(body, dict):
            return None
        return {
            "role": body.get("role"),
            "term": body.get("term"),
            "commit": body.get("commit_index"),
            "applied": body.get("applied_index"),
            "last": body.get("last_index"),
            "sync_source": body.get("sync_source"),
            "sync_depth": body.get("sync_depth"),
            "leader": body.get("leader"),
            "log_entries": body.get("log_entries"),
            "log_bytes": body.get("log_bytes"),
            "snapshot_index": body.get("snapshot_index"),
        }

    async def traffic(self, http: httpx.AsyncClient, node: NodeId) -> dict[str, float] | None:
        try:
            response = await http.get(self.cluster.url(node) + "/metrics")
        except httpx.HTTPError:
            return None
        return parse_traffic(response.text) if response.status_code == 200 else None

    async def events(
        self, http: httpx.AsyncClient, node: NodeId, after: int
    ) -> dict[str, Any] | None:
        try:
            response = await http.get(f"{self.cluster.url(node)}/events?after={after}")
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        if response.status_code != 200 or not isinstance(body, dict):
            return None
        return body

    async def read_final(
        self, keys: Sequence[str], timeout: float
    ) -> tuple[dict[str, str | None], list[str]]:
        values: dict[str, str | None] = {}
        deadline = time.monotonic() + timeout
        pending = list(keys)
        async with RaftbenchClient(self.cluster.endpoints, client_id="final-state") as client:
            while pending and time.monotonic() < deadline:
                still: list[str] = []
                for start in range(0, len(pending), MAX_BATCH):
                    chunk = pending[start : start + MAX_BATCH]
                    try:
                        answers = await client.batch([Get(key) for key in chunk])
                    except ClientError:
                        still.extend(chunk)
                        continue
                    for key, answer in zip(chunk, answers, strict=True):
                        if isinstance(answer, ReadResult):
                            values[key] = answer.value
                        else:
                            still.append(key)
                pending = still
        return values, pending

    async def read_members(
        self, keys: Sequence[str], timeout: float
    ) -> dict[NodeId, dict[str, str | None]] | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def change_membership(self, change: str, node: NodeId) -> dict[str, Any]:
        try:
            answer = self.cluster.change_membership(change, node)
            if change == "remove" and self.cluster.is_alive(node):
                self.cluster.stop_node(node)
        except LauncherError as error:
            raise NemesisError(str(error)) from None
        return answer

    def down(self) -> None:
        self.cluster.down()


__all__ = ["FaultInjector", "RaftbenchTarget", "Target", "parse_traffic"]
