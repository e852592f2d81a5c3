"""Declarative scenarios: one TOML file describes a run, identically for both protocols.

A scenario names the cluster (members, regions, priorities, timeouts, sync policy, fsync), the
WAN topology (the same `[topology]` table as `cluster.toml`, so the simulator and the link
shaper apply the very same matrix), the workload (`workloads.generators.Workload`), the timing
(warm-up, measured duration, cool-down) and a fault schedule. Everything is validated when the
file is loaded, before anything starts, and every error names its field::

    name = "leader-crash"
    description = "..."
    [cluster]
    nodes = 3
    voters = 3                         # optional: the first N form the cluster (default: all);
                                       # the others run outside it until `add-node` takes them
    regions = ["a", "a", "b"]          # optional, one per node (default: one region)
    priorities = { n1 = 2.0 }          # optional
    election_timeout = 1.0
    heartbeat_interval = 0.1
    sync_policy = "nearest"            # pull only: primary|nearest|freshest|random|fixed|spread
    max_pullers = 2                    # optional, `spread`: members one source serves
    fsync = "always"
    snapshot_entries = 0               # optional: compact every N applied entries (0: off)
    snapshot_bytes = 0                 # optional: ... or at this many log payload bytes
    [etcd]                             # optional: how the etcd label compacts (its own rules)
    snapshot_count = 5000              # --snapshot-count (0: etcd's default, 100000)
    compaction_retention = "1m"        # --auto-compaction-mode periodic (MVCC history kept;
                                       # "": no auto-compaction, etcd's default)
    [topology]                         # optional; see cluster/config.py
    default_delay_ms = 0.0
    [[topology.links]]
    from = "a"
    to = "b"
    delay_ms = 35.0
    bandwidth = 2e6                    # optional, bytes/s: each sender's share of the WAN pipe
                                       # towards the far region (all its links there share it)
    [network]                          # optional: shared egress caps (cluster.shaper)
    egress_bytes_per_s = 4e6           # every node's whole peer uplink, shared by its links
    [workload]                         # see workloads/generators.py
    mix = "write-only"
    clients = 32
    [run]
    warmup = 2.0
    duration = 10.0
    cooldown = 3.0
    [load]                             # real engine only: how the load generator is spread
    processes = 2                      # client processes
    batch = 1                          # operations per HTTP request (1: one request each)
    [[faults]]
    at = 4.0                           # seconds after the measured period starts
    action = "crash"                   # see FaultAction
    node = "leader"                    # a member id, or "leader" (resolved when it fires)
    duration = 3.0                     # optional: undo it (restart/resume/heal) after this long

Fault actions: `crash` (kill -9; the simulator loses what is not durable), `restart`, `pause`,
`resume`, `partition` (`groups = [["n1"], ["n2", "n3"]]`, or `node` alone: isolate it —
`node = "leader"` isolates whoever leads; `one_way = true` cuts only the messages from the
first group, or from the node, to the others), `heal`, `slow-link`
(`node` and optional `peer`, `delay_ms`, `jitter_ms`, `loss`), `slow-disk` (`node`,
`delay_ms` added to every fsync).

Membership actions (`workloads.catchup` says what is measured): `add-node` (`node`: a member
outside the configuration; it joins as a learner, and once caught up it is promoted, unless
`voter = false`) and `remove-node` (`node`; the removed member is stopped once the leader's
configuration has dropped it). They cannot be undone (no `duration`); a node is added at
most once.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from cluster.config import ConfigError, Topology, parse_cluster_config
from cluster.shaper import EgressCaps
from protocols.config import SyncSettings
from protocols.errors import RaftbenchError
from protocols.types import NodeId
from workloads.generators import Workload, WorkloadError

LEADER = "leader"  # a fault's `node` resolved to whoever leads when the fault fires
_PROTOCOL_LABELS = ("push", "pull", "etcd")  # etcd: an external target (cluster.etcd)
_RETENTION = re.compile(r"[0-9]+(\.[0-9]+)?(ms|s|m|h)")  # what etcd's flag takes, Go-style


class ScenarioError(RaftbenchError, ValueError):
    """A scenario that cannot run. The message starts with the dotted field name."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.field = where


class FaultAction(StrEnum):
    CRASH = "crash"
    RESTART = "restart"
    PAUSE = "pause"
    RESUME = "resume"
    PARTITION = "partition"
    HEAL = "heal"
    SLOW_LINK = "slow-link"
    SLOW_DISK = "slow-disk"
    ADD_NODE = "add-node"  # a membership change, not a fault (workloads.catchup)
    REMOVE_NODE = "remove-node"


MEMBERSHIP_ACTIONS = (FaultAction.ADD_NODE, FaultAction.REMOVE_NODE)

# What undoes a fault after its `duration`.
UNDO = {
    FaultAction.CRASH: FaultAction.RESTART,
    FaultAction.PAUSE: FaultAction.RESUME,
    FaultAction.PARTITION: FaultAction.HEAL,
    FaultAction.SLOW_LINK: FaultAction.SLOW_LINK,  # with zero delay
    FaultAction.SLOW_DISK: FaultAction.SLOW_DISK,  # with zero delay
}


@dataclass(frozen=True, slots=True)
class FaultSpec:
    at: float
    action: FaultAction
    node: str | None = None
    peer: NodeId | None = None
    groups: tuple[tuple[NodeId, ...], ...] = ()
    one_way: bool = False
    duration: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    voter: bool = True  # add-node: promote the learner once it has caught up

    @property
    def is_membership(self) -> bool:
        return self.action in MEMBERSHIP_ACTIONS

    def describe(self) -> str:
        parts = [self.action.value]
        if self.action is FaultAction.ADD_NODE and not self.voter:
            parts.append("(learner)")
        if self.groups:
            parts.append(" | ".join(",".join(g) for g in self.groups))
        elif self.node:
            parts.append(self.node + (f"->{self.peer}" if self.peer else ""))
        if self.delay_ms:
            parts.append(f"+{self.delay_ms:g}ms")
        if self.duration:
            parts.append(f"for {self.duration:g}s")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Timing:
    warmup: float = 2.0
    duration: float = 10.0
    cooldown: float = 3.0


@dataclass(frozen=True, slots=True)
class LoadSpread:
    processes: int = 2
    batch: int = 1


@dataclass(frozen=True, slots=True)
class EtcdCompaction:
    """How the etcd label compacts: etcd has its own rules, so a scenario says what to set.

    `snapshot_count`: etcd's ``--snapshot-count`` (applied entries between raft snapshots;
    after one, etcd keeps 5000 entries in memory for slow followers). 0: etcd's default.
    `retention`: ``--auto-compaction-mode periodic --auto-compaction-retention`` (MVCC
    revisions older than this are compacted, about once per period); "": no auto-compaction
    (etcd's default: every revision of every key is kept)."""

    snapshot_count: int = 0
    retention: str = ""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    nodes: int
    regions: tuple[str, ...]
    priorities: tuple[tuple[NodeId, float], ...]
    election_timeout: float
    heartbeat_interval: float
    sync_policy: str
    fsync: str
    topology: Topology
    workload: Workload
    timing: Timing
    load: LoadSpread
    faults: tuple[FaultSpec, ...]
    max_pullers: int = 2  # `spread`: members one source serves (SyncSettings.max_pullers)
    source: str = ""  # the file it came from
    snapshot_entries: int = 0  # log compaction thresholds (protocols.config.Config); 0: off
    snapshot_bytes: int = 0
    etcd: EtcdCompaction = EtcdCompaction()  # the etcd label's compaction settings
    voters: int = 0  # the first this many nodes form the cluster (0: all of them)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        return tuple(f"n{i + 1}" for i in range(self.nodes))

    @property
    def initial_voters(self) -> tuple[NodeId, ...]:
        """The configuration the run starts with; the other nodes wait for `add-node`."""
        return self.node_ids[: self.voters or self.nodes]

    @property
    def changes_membership(self) -> bool:
        return any(fault.is_membership for fault in self.faults)

    def region_of(self, node: NodeId) -> str:
        return self.regions[self.node_ids.index(node)]

    def with_sync_policy(self, policy: str) -> Scenario:
        """The same scenario under another sync-source policy (for `pull:<policy>` labels)."""
        SyncSettings(policy=policy).validate()
        return _replace(self, sync_policy=policy)

    def with_duration(self, seconds: float) -> Scenario:
        """The same scenario measured for `seconds` (a shorter soak for tests, say): the fault
        schedule must still fit, and the recorded TOML (`raw`) says the new duration."""
        duration = _number(seconds, "--duration")
        late = [f for f in self.faults if f.at > duration]
        if late:
            raise ScenarioError(
                "--duration", f"a fault is at {late[0].at:g} s, after the end of the run"
            )
        raw = dict(self.raw)
        raw["run"] = {**dict(_table(raw.get("run", {}), "run")), "duration": duration}
        timing = dataclasses.replace(self.timing, duration=duration)
        return _replace(self, timing=timing, raw=raw)

    def one_way_delays(self) -> dict[tuple[NodeId, NodeId], tuple[float, float, float]]:
        """(delay s, jitter s, loss) per directed link, resolved as the real shaper does."""
        config = self.cluster_config(
            {n: ("127.0.0.1", 2 * i + 2) for i, n in enumerate(self.node_ids)}
        )
        out: dict[tuple[NodeId, NodeId], tuple[float, float, float]] = {}
        for node in self.node_ids:
            for peer, spec in config.link_specs(node).items():
                out[(node, peer)] = (spec.delay, spec.jitter, spec.loss)
        return out

    def egress_caps(self) -> dict[NodeId, EgressCaps]:
        """Each node's shared egress caps, resolved as the real shaper does."""
        config = self.cluster_config(
            {n: ("127.0.0.1", 2 * i + 2) for i, n in enumerate(self.node_ids)}
        )
        return {node: config.egress_caps(node) for node in self.node_ids}

    @property
    def is_bandwidth_bound(self) -> bool:
        """Whether the scenario caps any node's egress (then it has a throughput ceiling)."""
        return any(not caps.is_unlimited for caps in self.egress_caps().values())

    def cluster_config(
        self, addresses: Mapping[NodeId, tuple[str, int]], secret: str = "0" * 32
    ) -> Any:
        """A `cluster.config.ClusterConfig` for this scenario (peer port p, client port p+1)."""
        members = [
            {
                "id": node,
                "peer": f"{host}:{port}",
                "client": f"{host}:{port + 1}",
                "region": self.region_of(node),
                "priority": dict(self.priorities).get(node, 1.0),
            }
            for node, (host, port) in addresses.items()
        ]
        data = {
            "cluster": {
                "name": self.name,
                "secret": secret,
                "election_timeout": self.election_timeout,
                "heartbeat_interval": self.heartbeat_interval,
                "sync_policy": self.sync_policy,
                "fsync": self.fsync,
                "snapshot_entries": self.snapshot_entries,
                "snapshot_bytes": self.snapshot_bytes,
            },
            "sync": {"max_pullers": self.max_pullers},
            "members": members,
            "topology": _topology_table(self.topology),
        }
        return parse_cluster_config(data, Path("."))


def _replace(scenario: Scenario, **changes: Any) -> Scenario:
    return dataclasses.replace(scenario, **changes)


def _topology_table(topology: Topology) -> dict[str, Any]:
    links = []
    for link in topology.links:
        entry: dict[str, Any] = {"from": link.src, "to": link.dst, "delay_ms": link.delay_ms}
        if link.jitter_ms is not None:
            entry["jitter_ms"] = link.jitter_ms
        if link.loss is not None:
            entry["loss"] = link.loss
        if link.one_way:
            entry["one_way"] = True
        if link.bandwidth is not None:
            entry["bandwidth"] = link.bandwidth
        links.append(entry)
    table: dict[str, Any] = {
        "default_delay_ms": topology.default_delay_ms,
        "jitter_ms": topology.jitter_ms,
        "loss": topology.loss,
        "links": links,
    }
    if topology.egress_bytes_per_s is not None:
        table["egress_bytes_per_s"] = topology.egress_bytes_per_s
    return table


# ---- loading -----------------------------------------------------------------------------------

_TOP_KEYS = {
    "name",
    "description",
    "cluster",
    "topology",
    "network",
    "workload",
    "run",
    "load",
    "faults",
    "etcd",
}
_CLUSTER_KEYS = {
    "nodes",
    "voters",
    "regions",
    "priorities",
    "election_timeout",
    "heartbeat_interval",
    "sync_policy",
    "max_pullers",
    "fsync",
    "snapshot_entries",
    "snapshot_bytes",
}
_FAULT_KEYS = {
    "at",
    "action",
    "node",
    "peer",
    "groups",
    "one_way",
    "duration",
    "delay_ms",
    "jitter_ms",
    "loss",
    "voter",
}


def catalogue() -> dict[str, Path]:
    """The scenarios shipped in workloads/scenarios, by name."""
    folder = Path(str(resources.files("workloads") / "scenarios"))
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A scenario by catalogue name or file path, fully validated."""
    path = Path(name_or_path)
    if not path.exists():
        known = catalogue()
        if str(name_or_path) not in known:
            names = ", ".join(known) or "(none)"
            raise ScenarioError("scenario", f"no file or catalogue entry {name_or_path!r}: {names}")
        path = known[str(name_or_path)]
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(str(path), f"cannot read: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(str(path), f"not valid TOML: {error}") from None
    scenario = parse_scenario(raw, default_name=path.stem)
    return _replace(scenario, source=str(path))


def parse_scenario(raw: Mapping[str, Any], default_name: str = "scenario") -> Scenario:
    _no_unknown(raw, _TOP_KEYS, "")
    name = _text(raw.get("name", default_name), "name")
    cluster = _table(raw.get("cluster", {}), "cluster")
    _no_unknown(cluster, _CLUSTER_KEYS, "cluster.")
    nodes = _int(cluster.get("nodes", 3), "cluster.nodes", least=1)
    if nodes > 15:
        raise ScenarioError("cluster.nodes", f"at most 15 nodes on one machine (got {nodes})")
    node_ids = tuple(f"n{i + 1}" for i in range(nodes))
    voters = _int(cluster.get("voters", nodes), "cluster.voters", least=1)
    if voters > nodes:
        raise ScenarioError("cluster.voters", f"at most cluster.nodes ({nodes}), got {voters}")
    regions_raw = cluster.get("regions", ["local"] * nodes)
    if not isinstance(regions_raw, list) or len(regions_raw) != nodes:
        raise ScenarioError("cluster.regions", f"expected a list of {nodes} region names")
    regions = tuple(_text(r, f"cluster.regions[{i}]") for i, r in enumerate(regions_raw))
    priorities_raw = _table(cluster.get("priorities", {}), "cluster.priorities")
    priorities = []
    for node, value in priorities_raw.items():
        if node not in node_ids:
            raise ScenarioError(
                f"cluster.priorities.{node}", f"not a member ({', '.join(node_ids)})"
            )
        priorities.append((node, _number(value, f"cluster.priorities.{node}", least=0.0)))
    election = _number(cluster.get("election_timeout", 1.0), "cluster.election_timeout")
    heartbeat = _number(cluster.get("heartbeat_interval", 0.1), "cluster.heartbeat_interval")
    if not 0 < heartbeat < election:
        raise ScenarioError("cluster.heartbeat_interval", "must be > 0 and < election_timeout")
    policy = _text(cluster.get("sync_policy", "nearest"), "cluster.sync_policy")
    if policy not in SyncSettings.POLICIES:
        choices = ", ".join(SyncSettings.POLICIES)
        raise ScenarioError("cluster.sync_policy", f"unknown policy {policy!r} ({choices})")
    max_pullers = _int(cluster.get("max_pullers", 2), "cluster.max_pullers", least=1)
    fsync = _text(cluster.get("fsync", "always"), "cluster.fsync")
    if fsync not in ("always", "never"):
        raise ScenarioError("cluster.fsync", f"expected always or never, got {fsync!r}")
    try:
        workload = Workload.from_dict(_table(raw.get("workload", {}), "workload"))
    except WorkloadError as error:
        raise ScenarioError(error.field, error.problem) from None
    run = _table(raw.get("run", {}), "run")
    _no_unknown(run, {"warmup", "duration", "cooldown"}, "run.")
    timing = Timing(
        _number(run.get("warmup", 2.0), "run.warmup", least=0.0),
        _number(run.get("duration", 10.0), "run.duration"),
        _number(run.get("cooldown", 3.0), "run.cooldown", least=0.0),
    )
    load = _table(raw.get("load", {}), "load")
    _no_unknown(load, {"processes", "batch"}, "load.")
    spread = LoadSpread(
        _int(load.get("processes", 2), "load.processes", least=1),
        _int(load.get("batch", 1), "load.batch", least=1),
    )
    faults_raw = raw.get("faults", [])
    if not isinstance(faults_raw, list):
        raise ScenarioError("faults", "expected an array of tables ([[faults]])")
    faults = tuple(
        _fault(_table(item, f"faults[{i}]"), f"faults[{i}]", node_ids, timing)
        for i, item in enumerate(faults_raw)
    )
    scenario = Scenario(
        name=name,
        description=_text(raw.get("description", ""), "description", empty_ok=True),
        nodes=nodes,
        regions=regions,
        priorities=tuple(priorities),
        election_timeout=election,
        heartbeat_interval=heartbeat,
        sync_policy=policy,
        fsync=fsync,
        topology=Topology(),
        workload=workload,
        timing=timing,
        load=spread,
        faults=faults,
        max_pullers=max_pullers,
        raw=raw,
        snapshot_entries=_int(cluster.get("snapshot_entries", 0), "cluster.snapshot_entries", 0),
        snapshot_bytes=_int(cluster.get("snapshot_bytes", 0), "cluster.snapshot_bytes", 0),
        etcd=_etcd(_table(raw.get("etcd", {}), "etcd")),
        voters=voters,
    )
    _check_membership(faults, node_ids[:voters])
    topology_raw = dict(_table(raw.get("topology", {}), "topology"))
    network = _table(raw.get("network", {}), "network")
    _no_unknown(network, {"egress_bytes_per_s"}, "network.")
    if "egress_bytes_per_s" in network:
        if "egress_bytes_per_s" in topology_raw:
            raise ScenarioError("network.egress_bytes_per_s", "also given in [topology]; keep one")
        topology_raw["egress_bytes_per_s"] = _number(
            network["egress_bytes_per_s"], "network.egress_bytes_per_s"
        )
    try:  # the cluster file's own parser, so both places accept exactly the same tables
        config = parse_cluster_config(
            {
                "cluster": {"secret": "0" * 32},
                "members": [
                    {
                        "id": n,
                        "peer": f"127.0.0.1:{2 * i + 2}",
                        "client": f"127.0.0.1:{2 * i + 3}",
                        "region": regions[i],
                    }
                    for i, n in enumerate(node_ids)
                ],
                "topology": topology_raw,
            },
            Path("."),
        )
    except ConfigError as error:
        message = str(error)
        where, _, problem = message.partition(": ")
        raise ScenarioError(where, problem or message) from None
    return _replace(scenario, topology=config.topology)


def _fault(
    raw: Mapping[str, Any], where: str, node_ids: tuple[NodeId, ...], timing: Timing
) -> FaultSpec:
    _no_unknown(raw, _FAULT_KEYS, f"{where}.")
    if "at" not in raw:
        raise ScenarioError(f"{where}.at", "missing")
    at = _number(raw["at"], f"{where}.at", least=0.0)
    if at > timing.duration:
        raise ScenarioError(f"{where}.at", f"after the end of the run ({timing.duration:g} s)")
    action_raw = _text(raw.get("action", ""), f"{where}.action")
    try:
        action = FaultAction(action_raw)
    except ValueError:
        choices = ", ".join(a.value for a in FaultAction)
        raise ScenarioError(f"{where}.action", f"unknown {action_raw!r} ({choices})") from None

    def member(key: str, allow_leader: bool) -> str | None:
        value = raw.get(key)
        if value is None:
            return None
        text = _text(value, f"{where}.{key}")
        if text not in node_ids and not (allow_leader and text == LEADER):
            extra = ' or "leader"' if allow_leader else ""
            raise ScenarioError(f"{where}.{key}", f"{text!r} is not a member{extra}")
        return text

    node = member("node", allow_leader=True)
    peer = member("peer", allow_leader=False)
    groups: tuple[tuple[NodeId, ...], ...] = ()
    if "groups" in raw:
        value = raw["groups"]
        if not isinstance(value, list) or len(value) < 2:
            raise ScenarioError(f"{where}.groups", "expected at least two lists of members")
        seen: set[str] = set()
        parsed = []
        for gi, group in enumerate(value):
            if not isinstance(group, list) or not group:
                raise ScenarioError(f"{where}.groups[{gi}]", "expected a non-empty list")
            for name in group:
                if name not in node_ids:
                    raise ScenarioError(f"{where}.groups[{gi}]", f"{name!r} is not a member")
                if name in seen:
                    raise ScenarioError(f"{where}.groups[{gi}]", f"{name!r} is in two groups")
                seen.add(name)
            parsed.append(tuple(group))
        groups = tuple(parsed)
    needs_node = {
        FaultAction.CRASH,
        FaultAction.RESTART,
        FaultAction.PAUSE,
        FaultAction.RESUME,
        FaultAction.SLOW_LINK,
        FaultAction.SLOW_DISK,
    }
    if action in needs_node and node is None:
        raise ScenarioError(f"{where}.node", f"{action.value} needs a node")
    if action is FaultAction.PARTITION and bool(groups) == (node is not None):
        raise ScenarioError(f"{where}.groups", "a partition needs groups, or a node to isolate")
    one_way = raw.get("one_way", False)
    if not isinstance(one_way, bool):
        raise ScenarioError(f"{where}.one_way", "expected true or false")
    voter = raw.get("voter", True)
    if not isinstance(voter, bool):
        raise ScenarioError(f"{where}.voter", "expected true or false")
    if "voter" in raw and action is not FaultAction.ADD_NODE:
        raise ScenarioError(f"{where}.voter", "only add-node takes it")
    if action in MEMBERSHIP_ACTIONS and (node is None or node == LEADER):
        raise ScenarioError(f"{where}.node", f"{action.value} needs a member id")
    duration = raw.get("duration")
    if duration is not None:
        duration = _number(duration, f"{where}.duration")
        if action not in UNDO:
            raise ScenarioError(f"{where}.duration", f"{action.value} cannot be undone")
    return FaultSpec(
        at=at,
        action=action,
        node=node,
        peer=peer,
        groups=groups,
        one_way=one_way,
        duration=duration,
        delay_ms=_number(raw.get("delay_ms", 0.0), f"{where}.delay_ms", least=0.0),
        jitter_ms=_number(raw.get("jitter_ms", 0.0), f"{where}.jitter_ms", least=0.0),
        loss=_probability(raw.get("loss", 0.0), f"{where}.loss"),
        voter=voter,
    )


def _check_membership(faults: tuple[FaultSpec, ...], voters: tuple[NodeId, ...]) -> None:
    """Membership actions in time order must make sense: add only a node outside the
    configuration (and each at most once), remove only a member, and never the last one."""
    members = set(voters)
    added: set[str] = set()
    order = sorted(enumerate(faults), key=lambda item: item[1].at)
    for index, fault in order:
        where = f"faults[{index}].node"
        node = fault.node or ""
        if fault.action is FaultAction.ADD_NODE:
            if node in members:
                raise ScenarioError(where, f"{node!r} is already in the configuration then")
            if node in added:
                raise ScenarioError(where, f"{node!r} is added twice (a node joins once)")
            members.add(node)
            added.add(node)
        elif fault.action is FaultAction.REMOVE_NODE:
            if node not in members:
                raise ScenarioError(where, f"{node!r} is not in the configuration then")
            if len(members) == 1:
                raise ScenarioError(where, f"{node!r} is the last member")
            members.discard(node)


def _etcd(table: Mapping[str, Any]) -> EtcdCompaction:
    _no_unknown(table, {"snapshot_count", "compaction_retention"}, "etcd.")
    retention = _text(table.get("compaction_retention", ""), "etcd.compaction_retention", True)
    if retention and not _RETENTION.fullmatch(retention):
        raise ScenarioError(
            "etcd.compaction_retention", f"{retention!r} is not a duration like '1m' or '30s'"
        )
    count = _int(table.get("snapshot_count", 0), "etcd.snapshot_count", 0)
    return EtcdCompaction(count, retention)


def parse_protocol_label(label: str) -> tuple[str, str | None]:
    """`push`, `pull`, `pull:<sync policy>` or `etcd` to (protocol, policy or None)."""
    protocol, _, policy = label.partition(":")
    if protocol not in _PROTOCOL_LABELS:
        raise ScenarioError("--protocols", f"unknown protocol {protocol!r} (push, pull, etcd)")
    if policy:
        if protocol != "pull":
            raise ScenarioError("--protocols", f"{label!r}: only pull takes a sync policy")
        if policy not in SyncSettings.POLICIES:
            choices = ", ".join(SyncSettings.POLICIES)
            raise ScenarioError("--protocols", f"unknown sync policy {policy!r} ({choices})")
    return protocol, policy or None


# ---- small validators ----------------------------------------------------------------------------


def _no_unknown(table: Mapping[str, Any], known: set[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            raise ScenarioError(f"{prefix}{key}", "unknown field")


def _table(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ScenarioError(where, f"expected a table, got {type(value).__name__}")
    return value


def _text(value: object, where: str, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty_ok):
        raise ScenarioError(where, f"expected a non-empty string, got {value!r}")
    return value


def _number(value: object, where: str, least: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScenarioError(where, f"expected a number, got {value!r}")
    number = float(value)
    if least is None and not number > 0:
        raise ScenarioError(where, f"must be > 0, got {value!r}")
    if least is not None and number < least:
        raise ScenarioError(where, f"must be >= {least:g}, got {value!r}")
    return number


def _probability(value: object, where: str) -> float:
    number = _number(value, where, least=0.0)
    if number > 1:
        raise ScenarioError(where, f"must be a probability in [0, 1], got {value!r}")
    return number


def _int(value: object, where: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScenarioError(where, f"expected an integer, got {value!r}")
    if value < least:
        raise ScenarioError(where, f"must be >= {least}, got {value}")
    return value
