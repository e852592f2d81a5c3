"""Run a scenario on a local cluster of real node processes (`--engine real`) and record it.

The records have exactly the shape the simulator driver gives (`workloads.results`), with the
real values where the simulator has none: CPU per node, the load generator's CPU share and its
calibrated ceiling.

Timeline, in run seconds (0: the moment the load generators are released)::

    before 0          cluster up in a temporary folder, a leader elected; the generator
                      processes spawned, their op streams built, waiting for the start
    [0, W)            warm-up (load running)
    [W, W + D)        the measured window; faults fire at W + `at`, undone `duration` later
    W + D             no new operation starts (open loop: a backlog may still drain)
    [W + D, +C)       cool-down: outstanding operations finish or time out
    then              every fault undone (the nemesis recovers everything), a leader awaited,
                      every key read linearizably: metadata["final_state"]

The system under test is a `cluster.target.Target`: raftbench nodes (label push/pull), or an
etcd cluster (label `etcd`, `cluster.etcd`) driven by the same scenarios, load, faults and
checks. A fault the target cannot take is recorded as `skipped` with the target's reason; for
etcd the final state is also read from every member at one revision and compared
(metadata["real"]["member_divergence"]).

A fault's `node = "leader"` is resolved when it fires by asking every node's /status (the
highest-term node that says it leads); its undo targets the same node. A fault that finds no
leader within a few election timeouts is recorded as `skipped`, as the simulator does.

Around the window's edges the coordinator reads each node's CPU (/proc) and peer counters
(/metrics), and the generator processes' CPU (/proc): those differences are nodes.json,
links.json and the driver's CPU share. The coordinator's own CPU (sampling, nemesis) is reported
separately: it is measurement overhead, not load generation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from cluster.etcd import NO_NETEM, EtcdCluster, EtcdSpec, find_binary
from cluster.launcher import ClusterSpec, LocalCluster
from cluster.nemesis import NemesisError
from cluster.ssh import HostPool
from cluster.ssh_cluster import SshCluster, SshTarget
from cluster.storage import FsyncPolicy
from cluster.target import FaultInjector, RaftbenchTarget, Target
from protocols.types import NodeId
from workloads.calibrate import (
    DEFAULT_CALIBRATION,
    CalibrationFileError,
    find_ceiling,
    load_calibration,
)
from workloads.catchup import METADATA_KEY
from workloads.loadgen import (
    GeneratorPlan,
    GeneratorPool,
    GeneratorResult,
    merge_ops,
    monotonic,
    split_workers,
)
from workloads.node_sampler import NodeSampler, NodeTotals, leader_changes, leader_time
from workloads.real_membership import RealMembership
from workloads.results import FaultRecord, OpRecord, RunRecord, run_metadata
from workloads.scenario import LEADER, UNDO, FaultAction, FaultSpec, Scenario, ScenarioError

START_MARGIN = 0.05  # seconds between releasing the generators and run time 0
LEADER_WAIT = 30.0  # for the first leader, and after recovery
FINAL_READ_TIMEOUT = 30.0
ALL_KEYS_LIMIT = 65_536  # larger key spaces: the final state covers the keys written
ETCD = "etcd"  # the label (and protocol) of an etcd target
ETCD_BATCHING = (
    "one txn per round for writes, deletes and linearizable reads on distinct keys; "
    "cas, local reads and repeated keys as their own requests, sent at the same time"
)


def cluster_spec(
    scenario: Scenario, protocol: str, policy: str | None, seed: int, netns: bool
) -> ClusterSpec:
    """The LocalCluster a scenario asks for (`policy` overrides the scenario's)."""
    return ClusterSpec(
        nodes=scenario.nodes,
        protocol=protocol,
        sync_policy=policy or scenario.sync_policy,
        max_pullers=scenario.max_pullers,
        fsync=FsyncPolicy(scenario.fsync),
        election_timeout=scenario.election_timeout,
        heartbeat_interval=scenario.heartbeat_interval,
        snapshot_entries=scenario.snapshot_entries,
        snapshot_bytes=scenario.snapshot_bytes,
        regions=scenario.regions,
        priorities=dict(scenario.priorities),
        topology=scenario.topology,
        netns=netns,
        seed=seed,
        voters=scenario.voters if scenario.voters < scenario.nodes else 0,
    )


def start_target(
    scenario: Scenario,
    protocol: str,
    policy: str | None,
    seed: int,
    netns: bool,
    directory: Path,
    etcd_binary: Path | None = None,
    hosts: HostPool | None = None,
) -> Target:
    """The cluster under test, started: etcd members for protocol "etcd", else raftbench
    nodes (`netns`: one network namespace per member or node; `hosts`: on the inventory's
    node hosts, over SSH)."""
    if hosts is not None:
        if scenario.changes_membership:
            raise ScenarioError(
                "--hosts", f"{scenario.name} changes membership: local processes only"
            )
        if protocol == ETCD:
            raise ScenarioError("--protocols", "etcd does not run on --hosts (raftbench only)")
        ssh_spec = cluster_spec(scenario, protocol, policy, seed, netns=False)
        ssh_cluster = SshCluster.create_on_hosts(hosts, directory, ssh_spec)
        target = SshTarget(ssh_cluster)
        try:
            ssh_cluster.start()
            target.measure()
        except BaseException:
            ssh_cluster.down(purge=True)
            raise
        return target
    if protocol == ETCD:
        spec = EtcdSpec(
            len(scenario.initial_voters),  # etcd cannot add members here (NO_MEMBERSHIP)
            scenario.election_timeout,
            scenario.heartbeat_interval,
            find_binary(etcd_binary),
            netns,
            snapshot_count=scenario.etcd.snapshot_count,
            compaction_retention=scenario.etcd.retention,
        )
        return EtcdCluster.up(directory, spec)
    cluster = LocalCluster.up(directory, cluster_spec(scenario, protocol, policy, seed, netns))
    return RaftbenchTarget(cluster)


NO_EGRESS_CAP = "not applied to etcd: egress caps are raftbench's link shaper, not etcd's"
ON_HOSTS = "n/a on --hosts: the network between the hosts is the topology (measured RTTs: "
ON_HOSTS += "metadata.target.rtt_matrix_ms)"


def settings_not_applied(scenario: Scenario, kind: str, hosts: bool = False) -> dict[str, str]:
    """Scenario settings a target of `kind` does not take (what -> why): etcd's, and on
    SSH hosts (`hosts`) the emulated topology and regions (the hosts' own are used)."""
    topology = scenario.topology
    emulated = bool(
        topology.links or topology.default_delay_ms or topology.jitter_ms or topology.loss
    )
    if hosts:
        out = {"topology": ON_HOSTS} if emulated else {}
        if len(set(scenario.regions)) > 1:
            out["regions"] = "n/a on --hosts: each node is in its host's region (inventory)"
        return out
    if kind != ETCD:
        return {}
    out = {}
    if emulated:
        out["topology"] = NO_NETEM
    if scenario.priorities:
        out["priorities"] = "n/a: etcd members have no election priorities"
    if topology.egress_bytes_per_s is not None:
        out["network.egress_bytes_per_s"] = NO_EGRESS_CAP
    return out


def client_timeouts(scenario: Scenario) -> tuple[float, float]:
    """(attempt, operation) timeouts of the load's clients, as the simulator's clients have."""
    election = scenario.election_timeout
    return max(0.5, election), 3 * election + 2.0


def run_real(
    scenario: Scenario,
    protocol: str,
    policy: str | None,
    seed: int,
    trial: int,
    label: str,
    command: str,
    *,
    netns: bool = False,
    work_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    calibration: Path = DEFAULT_CALIBRATION,
    etcd_binary: Path | None = None,
    hosts: HostPool | None = None,
) -> RunRecord:
    """Run one trial on real processes and return its record (not yet written).

    `work_dir`: where the cluster and generator files go; kept afterwards (default: a
    temporary folder, removed). The cluster and the generators are always stopped, also on an
    error or KeyboardInterrupt.
    """
    say = progress or (lambda _text: None)
    started = time.time()
    wall = time.perf_counter()
    own_dir = work_dir is None
    base = Path(tempfile.mkdtemp(prefix="raftbench-run-")) if work_dir is None else work_dir
    base.mkdir(parents=True, exist_ok=True)
    cluster: Target | None = None
    pool: GeneratorPool | None = None
    try:
        where = " on SSH hosts" if hosts is not None else ""
        say(f"{scenario.name}: starting {scenario.nodes} {protocol} nodes{where}")
        cluster = start_target(
            scenario, protocol, policy, seed, netns, base / "cluster", etcd_binary, hosts
        )
        first_leader = cluster.wait_for_leader(LEADER_WAIT)
        attempt, op_timeout = client_timeouts(scenario)
        pool = GeneratorPool(
            _plans(scenario, cluster, seed, base, attempt, op_timeout), base / "load"
        )
        say(f"{scenario.name}: starting {len(pool.plans)} load generators")
        pool.start()
        run = _Run(scenario, cluster, pool, say, op_timeout)
        for what, why in settings_not_applied(scenario, cluster.kind, hosts is not None).items():
            run.faults.append(FaultRecord(0.0, "skipped", (), f"skipped ({why}): {what}"))
        try:
            anyio.run(run.drive)
        except BaseExceptionGroup as group:  # a task's error, or Ctrl-C, as itself
            raise _first_leaf(group) from group
    finally:
        if pool is not None:
            pool.kill()
        if cluster is not None:
            cluster.down()
        if own_dir:
            shutil.rmtree(base, ignore_errors=True)
    return _record(
        run, scenario, protocol, policy, seed, trial, label, command, netns, started, wall,
        first_leader, calibration, None if own_dir else base, attempt, op_timeout,
        hosts is not None,
    )  # fmt: skip


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _plans(
    scenario: Scenario,
    cluster: Target,
    seed: int,
    base: Path,
    attempt: float,
    op_timeout: float,
) -> list[GeneratorPlan]:
    timing = scenario.timing
    workload = scenario.workload
    return [
        GeneratorPlan(
            endpoints=tuple(cluster.endpoints),
            workload=workload.to_dict(),
            seed=seed,
            workers=ids,
            batch=scenario.load.batch,
            stop_at=timing.warmup + timing.duration,
            output=str(base / "load" / f"ops-{index}.jsonl"),
            op_timeout=op_timeout,
            attempt_timeout=attempt,
            drain=timing.cooldown,
            target=cluster.kind,
        )
        for index, ids in enumerate(split_workers(workload.clients, scenario.load.processes))
    ]


@dataclass(slots=True)
class _Edge:
    """Counters read at one edge of the measured window."""

    nodes: dict[NodeId, NodeTotals]
    generators_cpu: float
    coordinator_cpu: float


@dataclass(slots=True)
class _Run:
    """One run's moving parts and what they recorded."""

    scenario: Scenario
    cluster: Target
    pool: GeneratorPool
    say: Callable[[str], None]
    op_timeout: float
    origin: float = 0.0
    sampler: NodeSampler | None = None
    faults: list[FaultRecord] = field(default_factory=list)
    edges: list[_Edge] = field(default_factory=list)
    results: list[GeneratorResult] = field(default_factory=list)
    final_state: dict[str, str | None] = field(default_factory=dict)
    unread: list[str] = field(default_factory=list)
    members: dict[NodeId, dict[str, str | None]] | None = None  # each member's own final state
    membership: RealMembership | None = None  # the scenario's add-node/remove-node

    def clock(self) -> float:
        return monotonic() - self.origin

    async def sleep_until(self, t: float) -> None:
        delay = t - self.clock()
        if delay > 0:
            await anyio.sleep(delay)

    async def drive(self) -> None:
        timing = self.scenario.timing
        window = (timing.warmup, timing.warmup + timing.duration)
        self.origin = monotonic() + START_MARGIN
        changes = self.scenario.changes_membership
        # Membership scenarios read peer counters at every sample: the primary's egress
        # around a catch-up (workloads.catchup) needs more than a reading every 500 ms.
        self.sampler = NodeSampler(self.cluster, self.clock, metrics_every=1 if changes else 5)
        if changes:
            self.membership = RealMembership(self.cluster, self.sampler, self.clock)
        self.pool.go(self.origin)
        nemesis = self.cluster.injector(monotonic, self.origin)
        schedule = _FaultSchedule(self, nemesis, window[0])
        async with anyio.create_task_group() as background:
            background.start_soon(self.sampler.run)
            faults_scope = anyio.CancelScope()
            background.start_soon(schedule.run, faults_scope)
            self.say(f"{self.scenario.name}: warm-up")
            await self.sleep_until(window[0])
            self.edges.append(await self._edge())
            self.say(f"{self.scenario.name}: measuring {timing.duration:g} s")
            await self.sleep_until(window[1])
            self.edges.append(await self._edge())
            self.say(f"{self.scenario.name}: cool-down")
            await self.sleep_until(window[1] + timing.cooldown)
            wait = timing.cooldown + self.op_timeout + 30.0
            self.results = await anyio.to_thread.run_sync(self.pool.finish, wait)
            faults_scope.cancel()
            await schedule.done.wait()
            for event in await nemesis.recover():
                detail = f"undo (end of run): {event.detail}".rstrip(": ")
                self.faults.append(
                    FaultRecord(round(event.time, 4), event.kind, event.nodes, detail)
                )
            self.say(f"{self.scenario.name}: reading the final state")
            await self._read_final_state()
            background.cancel_scope.cancel()

    async def _edge(self) -> _Edge:
        assert self.sampler is not None
        nodes = await self.sampler.snapshot()
        return _Edge(nodes, self.pool.cpu_seconds(), time.process_time())

    async def _read_final_state(self) -> None:
        await anyio.to_thread.run_sync(self.cluster.wait_for_leader, LEADER_WAIT)
        workload = self.scenario.workload
        if workload.key_count <= ALL_KEYS_LIMIT:
            keys = [workload.key(i) for i in range(workload.key_count)]
        else:
            ops = merge_ops(self.results)
            keys = sorted({op.key for op in ops if op.f != "read" and op.outcome != "fail"})
        self.final_state, self.unread = await self.cluster.read_final(keys, FINAL_READ_TIMEOUT)
        self.members = await self.cluster.read_members(keys, FINAL_READ_TIMEOUT)


@dataclass(frozen=True, slots=True)
class _Slow:
    """A slowed directed link's whole setting (topology delay plus the fault's)."""

    delay_ms: float
    jitter_ms: float
    loss: float


class _FaultSchedule:
    """The scenario's faults on the nemesis, at window start + `at`, undone after `duration`."""

    def __init__(self, run: _Run, nemesis: FaultInjector, window_start: float) -> None:
        self.run_ = run
        self.nemesis = nemesis
        self.window_start = window_start
        self.slow_links: dict[int, list[tuple[NodeId, NodeId, _Slow]]] = {}
        self.done = anyio.Event()

    async def run(self, scope: anyio.CancelScope) -> None:
        """Run every fault; cancelling `scope` stops the waiting ones. An action already under
        way finishes first (actions are shielded), then `done` is set."""
        try:
            with scope:
                async with anyio.create_task_group() as group:
                    for index, spec in enumerate(self.run_.scenario.faults):
                        group.start_soon(self._one, index, spec)
        finally:
            self.done.set()

    async def _one(self, index: int, spec: FaultSpec) -> None:
        run = self.run_
        await run.sleep_until(self.window_start + spec.at)
        t = run.clock()
        node = await self._resolve(spec.node)
        if spec.node is not None and node is None:
            run.faults.append(
                FaultRecord(round(t, 4), "skipped", (), f"skipped (no leader): {spec.describe()}")
            )
            return
        reason = run.cluster.unsupported().get(spec.action.value)
        if reason is not None:
            who = (node,) if node else ()
            run.faults.append(
                FaultRecord(round(t, 4), "skipped", who, f"skipped ({reason}): {spec.describe()}")
            )
            return
        if spec.is_membership:
            assert run.membership is not None
            run.faults.append(await run.membership.act(spec))
            return
        await self._act(index, spec, node, undo=False)
        if spec.duration is not None:
            await run.sleep_until(self.window_start + spec.at + spec.duration)
            await self._act(index, spec, node, undo=True)

    async def _resolve(self, node: str | None) -> NodeId | None:
        if node != LEADER:
            return node
        run = self.run_
        deadline = run.clock() + 3 * run.scenario.election_timeout + 2.0
        assert run.sampler is not None
        while True:
            leader = await run.sampler.current_leader()
            if leader is not None or run.clock() >= deadline:
                return leader
            await anyio.sleep(0.05)

    async def _act(self, index: int, spec: FaultSpec, node: NodeId | None, undo: bool) -> None:
        run = self.run_
        action = UNDO[spec.action] if undo else spec.action
        if action is FaultAction.CRASH and node is not None and run.sampler is not None:
            with anyio.CancelScope(shield=True):
                await run.sampler.refresh(node)  # its last counters, before they die with it
        t = run.clock()
        try:
            with anyio.CancelScope(shield=True):
                kind, nodes, detail = await self._apply(index, spec, action, node, undo)
        except NemesisError as error:
            kind, nodes, detail = "skipped", (node,) if node else (), f"{action.value}: {error}"
        took = run.clock() - t
        detail = f"{detail} (took {took:.3f} s)".strip()
        if undo and not detail.startswith("undo") and kind not in ("restart", "resume", "heal"):
            detail = f"undo: {detail}"
        run.faults.append(FaultRecord(round(t, 4), kind, nodes, detail, round(took, 4)))

    async def _apply(
        self, index: int, spec: FaultSpec, action: FaultAction, node: NodeId | None, undo: bool
    ) -> tuple[str, tuple[NodeId, ...], str]:
        nemesis = self.nemesis
        match action:
            case FaultAction.CRASH:
                assert node is not None
                event = await nemesis.kill(node)
            case FaultAction.RESTART:
                assert node is not None
                event = await nemesis.restart(node)
            case FaultAction.PAUSE:
                assert node is not None
                event = await nemesis.pause(node)
            case FaultAction.RESUME:
                assert node is not None
                event = await nemesis.resume(node)
            case FaultAction.PARTITION:
                if spec.groups:
                    event = await nemesis.partition(spec.groups, one_way=spec.one_way)
                else:
                    assert node is not None
                    event = await nemesis.isolate(node, one_way=spec.one_way)
            case FaultAction.HEAL:
                event = await nemesis.heal()
            case FaultAction.SLOW_LINK:
                assert node is not None
                return await self._slow_link(index, spec, node, undo)
            case FaultAction.SLOW_DISK:
                assert node is not None
                seconds = 0.0 if undo else spec.delay_ms / 1000.0
                event = await nemesis.slow_disk(node, seconds)
        kind = "crash" if action is FaultAction.CRASH else event.kind
        return kind, event.nodes, event.detail

    async def _slow_link(
        self, index: int, spec: FaultSpec, node: NodeId, undo: bool
    ) -> tuple[str, tuple[NodeId, ...], str]:
        """Slow links add to the topology's delay (as in the simulator), both ways. An undo
        clears every slow link and puts back the ones other faults still hold."""
        nemesis = self.nemesis
        cluster = self.run_.cluster
        if undo:
            self.slow_links.pop(index, None)
            await nemesis.clear_slow_links()
            for links in self.slow_links.values():
                for src, dst, slow in links:
                    await nemesis.slow_link(
                        src, dst, delay_ms=slow.delay_ms, jitter_ms=slow.jitter_ms, loss=slow.loss
                    )
            return "slow-link", (node,), f"undo {spec.describe()}"
        peers = [spec.peer] if spec.peer else [n for n in cluster.node_ids if n != node]
        links = []
        for peer in peers:
            for src, dst in ((node, peer), (peer, node)):
                base = cluster.link_spec(src, dst)
                slow = _Slow(
                    (base.delay * 1000 if base else 0.0) + spec.delay_ms,
                    (base.jitter * 1000 if base else 0.0) + spec.jitter_ms,
                    max(base.loss if base else 0.0, spec.loss),
                )
                links.append((src, dst, slow))
                await nemesis.slow_link(
                    src, dst, delay_ms=slow.delay_ms, jitter_ms=slow.jitter_ms, loss=slow.loss
                )
        self.slow_links[index] = links
        detail = f"+{spec.delay_ms:g} ms, jitter +{spec.jitter_ms:g} ms, loss {spec.loss:g}"
        return "slow-link", (node, *peers), detail


# ---- the record --------------------------------------------------------------------------------


def _record(
    run: _Run,
    scenario: Scenario,
    protocol: str,
    policy: str | None,
    seed: int,
    trial: int,
    label: str,
    command: str,
    netns: bool,
    started: float,
    wall: float,
    first_leader: NodeId,
    calibration: Path,
    kept: Path | None,
    attempt: float,
    op_timeout: float,
    on_hosts: bool = False,
) -> RunRecord:
    timing = scenario.timing
    window = (timing.warmup, timing.warmup + timing.duration)
    assert run.sampler is not None and len(run.edges) == 2
    before, after = run.edges
    node_ids = run.cluster.node_ids
    described = run.cluster.describe()
    host_regions = described.get("regions") if on_hosts else None
    regions = {
        node: str(host_regions[node]) if host_regions else scenario.region_of(node)
        for node in node_ids
    }
    rows = sorted(run.sampler.rows, key=lambda r: (float(r["t"]), str(r["node"])))
    links = []  # none when the target has no per-peer counters: n/a, not zero
    for src in node_ids if run.cluster.has_traffic else ():
        for dst in node_ids:
            if src != dst:
                links.append(
                    {
                        "src": src,
                        "dst": dst,
                        "bytes": _delta(before, after, src, dst, "bytes"),
                        "messages": _delta(before, after, src, dst, "messages"),
                    }
                )
    nodes = {
        node: {
            "region": regions[node],
            "cpu_seconds": round(after.nodes[node].cpu - before.nodes[node].cpu, 3),
            "bytes_sent": _bytes(before, after, node, "sent", run.cluster.has_traffic),
            "bytes_received": _bytes(before, after, node, "received", run.cluster.has_traffic),
            "leader_time": round(leader_time(rows, node, *window), 3),
        }
        for node in node_ids
    }
    ops: list[OpRecord] = merge_ops(run.results)
    cores = os.cpu_count() or 1
    generator_cpu = after.generators_cpu - before.generators_cpu
    errors: dict[str, int] = {}
    for result in run.results:
        for name, count in result.report.errors.items():
            errors[name] = errors.get(name, 0) + count
    driver: dict[str, Any] = {
        "kind": "http",
        "processes": len(run.pool.plans),
        "workers": scenario.workload.clients,
        "batch": scenario.load.batch,
        "loop": str(scenario.workload.loop),
        "cpu_seconds": round(generator_cpu, 3),
        "cpu_share": round(generator_cpu / (timing.duration * cores), 4),
        "cpu_seconds_total": round(sum(r.report.cpu_seconds for r in run.results), 3),
        "coordinator_cpu_seconds": round(after.coordinator_cpu - before.coordinator_cpu, 3),
        "requests": sum(r.report.requests for r in run.results),
        "not_sent": sum(r.report.not_sent for r in run.results),
        "errors": errors,
        "attempt_timeout": attempt,
        "op_timeout": op_timeout,
        **_ceiling(
            calibration, len(run.pool.plans), scenario.workload.clients, scenario.load.batch
        ),
    }
    faults = sorted(run.faults, key=lambda f: f.t)
    metadata = run_metadata(
        scenario,
        protocol=protocol,
        policy=policy,
        label=label,
        engine="real",
        seed=seed,
        trial=trial,
        command=command,
        started=started,
        wall_seconds=time.perf_counter() - wall,
        window=window,
    )
    if run.cluster.kind == ETCD:
        driver["batching"] = ETCD_BATCHING
    if run.membership is not None:
        metadata[METADATA_KEY] = run.membership.metadata()
    metadata |= {
        "target": described
        | {"settings_not_applied": settings_not_applied(scenario, run.cluster.kind, on_hosts)},
        "driver": driver,
        "final_state": run.final_state,
        "real": {
            "netns": netns,
            "hosts": on_hosts,
            "first_leader": first_leader,
            "leader_changes": leader_changes(rows),
            "sample_interval": run.sampler.interval,
            "final_state_keys": "all"
            if scenario.workload.key_count <= ALL_KEYS_LIMIT
            else "written",
            "final_state_unread": run.unread,
            "member_divergence": member_divergence(run.final_state, run.members, node_ids),
            "work_dir": str(kept) if kept is not None else None,
        },
    }
    return RunRecord(
        metadata=metadata,
        ops=ops,
        timeseries=rows,
        links=links,
        regions=regions,
        nodes=nodes,
        faults=faults,
        events=sorted(run.sampler.events, key=lambda event: float(event["t"])),
    )


def member_divergence(
    final: dict[str, str | None],
    members: dict[NodeId, dict[str, str | None]] | None,
    node_ids: Sequence[NodeId] = (),
) -> dict[str, Any] | None:
    """Keys on which a member's own state differs from the linearizable final state, the
    members read and those that could not be (None: the target does not read members one by
    one)."""
    if members is None:
        return None
    keys: dict[str, dict[str, str | None]] = {}
    for node, values in members.items():
        for key, value in values.items():
            if key in final and value != final[key]:
                keys.setdefault(key, {"final": final[key]})[node] = value
    unread = sorted(set(node_ids) - set(members))
    return {"keys": keys, "members_read": sorted(members), "members_unread": unread}


def _bytes(before: _Edge, after: _Edge, node: NodeId, direction: str, known: bool) -> int | None:
    if not known:
        return None
    return int(after.nodes[node].sum(direction) - before.nodes[node].sum(direction))


def _delta(before: _Edge, after: _Edge, src: NodeId, dst: NodeId, kind: str) -> int:
    return int(after.nodes[src].get(dst, "sent", kind) - before.nodes[src].get(dst, "sent", kind))


def _ceiling(path: Path, processes: int, workers: int, batch: int) -> dict[str, Any]:
    """The calibrated ceiling for this spread (exact, else the closest entry), if any."""
    try:
        point = find_ceiling(load_calibration(path), processes, workers, batch)
    except CalibrationFileError:
        point = None
    if point is None:
        return {"ceiling_ops_s": None, "ceiling": None, "ceiling_from": None}
    return {
        "ceiling_ops_s": point.ops_s,
        "ceiling": point.ops_s,  # the key workloads.summary reads
        "ceiling_from": {
            "file": str(path),
            "processes": point.processes,
            "workers": point.workers,
            "batch": point.batch,
            "exact": point.key() == (processes, workers, batch),
            "measured": point.measured,
        },
    }


__all__ = [
    "client_timeouts",
    "cluster_spec",
    "member_divergence",
    "run_real",
    "settings_not_applied",
    "start_target",
]
