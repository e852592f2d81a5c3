"""The discrete-event loop: virtual time, nodes with a simulated disk, clients, a nemesis.

Each node runs the real engine object. The simulator follows the engine's Ready contract
exactly as the real node runtime does: a Ready that carries state to persist is held until the
simulated disk write completes (its own latency), and only then are its messages sent and its
replies delivered; a crash loses a write in flight (or persists only a prefix of its entries:
a torn write), and a restart rebuilds the engine from the durable store alone. Everything
random comes from one seeded generator, so a seed replays exactly.
"""

from __future__ import annotations

import dataclasses
import gc
import heapq
import random
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cluster.shaper import EgressCaps
from cluster.sim.clients import ClientLoad, ClientSettings, SimClient
from cluster.sim.invariants import Invariants, Violation
from cluster.sim.nemesis import LEADER, MEMBERSHIP_MODES, Action, Fault, schedule
from cluster.sim.network import Link, SimNetwork
from protocols.config import Config
from protocols.engine import (
    ClientReply,
    ClientRequest,
    Engine,
    EngineFactory,
    MembershipRequest,
    ReadRequest,
    Ready,
)
from protocols.engines import engine_factory
from protocols.errors import InvariantViolation, PeerError
from protocols.events import ProtocolEvent
from protocols.membership import ChangeKind, ConfChange, Membership
from protocols.messages import Envelope, VoteResponse
from protocols.replica import ReplicaBase
from protocols.storage import CommitHold, MemoryLogStore
from protocols.types import HardState, NodeId, Role

# Event kinds. Events due at one instant run in the order they were scheduled.
(
    _DELIVER,
    _TICK,
    _DISK,
    _CLIENT_ARRIVE,
    _CLIENT_REPLY,
    _CLIENT_TIMER,
    _CLIENT_START,
    _FAULT,
    _ARRIVAL,
    _SAMPLE,
    _CLIENT_REPLIES,
) = range(11)
_LAST_NODE_EVENT = _CLIENT_ARRIVE  # kinds up to here are deferred while a node is paused


@contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic garbage collector less often while the loop runs (restored after).

    The loop allocates millions of short-lived objects that reference counting frees; at the
    default threshold the collector runs every 700 allocations and rescans the growing
    history for cycles it rarely finds (about a tenth of a scenario's CPU time).
    """
    threshold = gc.get_threshold()
    gc.set_threshold(max(threshold[0], 100_000), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


@dataclass(slots=True)
class SimConfig:
    """One simulated run. Times in virtual seconds."""

    protocol: str = "push"
    nodes: int = 5
    seed: int = 0
    duration: float = 10.0
    faults: str = "all"
    clients: int = 5
    election_timeout: float = 0.3
    heartbeat_interval: float = 0.05
    one_way_delay: float = 0.001
    one_way: dict[Link, float] = field(default_factory=dict)  # overrides per directed link
    links: dict[Link, tuple[float, float, float]] = field(default_factory=dict)  # scenario:
    # (delay, jitter, loss) per directed link; wins over one_way/region_delay
    jitter: float = 0.0005
    loss: float | None = None  # default: 1% with faults "all", else 0
    duplicate: float | None = None  # default: 1% with faults "all", else 0
    disk_latency: float = 0.0003
    crash_after_vote: float | None = None  # chance a voter crashes right after voting
    # (default: 0.2 with crash faults): the moment a forgotten persist of term/vote matters
    client_delay: float = 0.0005
    trace: int = 0  # keep the last N events for a readable dump on failure
    client_settings: ClientSettings = field(default_factory=ClientSettings)
    engine: EngineFactory | None = None  # overrides `protocol` (tests: deliberately broken)
    config_overrides: dict[str, Any] = field(default_factory=dict)

    regions: tuple[str, ...] = ()  # region of each node, in order (default: one region)
    region_delay: dict[tuple[str, str], float] = field(default_factory=dict)  # one-way, symmetric
    disk_latency_of: dict[NodeId, float] = field(default_factory=dict)  # slow disks
    faults_scripted: tuple[Fault, ...] | None = None  # replaces the random nemesis
    workload: ClientLoad | None = None  # required by Simulator (workloads.sim_runner fills
    # in the default correctness workload)
    sample_interval: float = 0.0  # > 0: record every node's state this often (time series)
    settle: float | None = None  # run this long after `duration` (default: op timeout + 4 ET)
    count_bytes: bool = True  # charge every message its encoded size (off: faster, no bytes)
    fifo_links: bool = False  # links keep order (TCP-like); False lets jitter reorder them
    egress: dict[NodeId, EgressCaps] = field(default_factory=dict)  # shared egress caps
    voters: int = 0  # the first this many nodes form the cluster, the others start joining
    # (0: all, or with membership changes at most all but two, at least three)

    def the_workload(self) -> ClientLoad:
        if self.workload is None:
            raise ValueError("SimConfig.workload is not set (workloads.sim_runner sets a default)")
        return self.workload

    def node_ids(self) -> tuple[NodeId, ...]:
        return tuple(f"n{i + 1}" for i in range(self.nodes))

    def initial_voters(self) -> tuple[NodeId, ...]:
        """The configuration the run starts with; the other nodes wait to be added."""
        count = self.voters
        if count <= 0:
            changing = self.faults in MEMBERSHIP_MODES and self.faults_scripted is None
            count = max(3, self.nodes - 2) if changing else self.nodes
        return self.node_ids()[: min(count, self.nodes)]

    def region_of(self, node: NodeId) -> str:
        if not self.regions:
            return "local"
        return self.regions[self.node_ids().index(node)]

    def link_delays(self, jitter: float, loss: float) -> dict[Link, tuple[float, float, float]]:
        """(delay, jitter, loss) per directed link: scenario links, explicit delays, regions."""
        out: dict[Link, tuple[float, float, float]] = {}
        ids = self.node_ids()
        for a in ids:
            for b in ids:
                if a == b:
                    continue
                if (a, b) in self.links:
                    out[(a, b)] = self.links[(a, b)]
                    continue
                ra, rb = self.region_of(a), self.region_of(b)
                delay = self.one_way.get(
                    (a, b), self.region_delay.get((ra, rb), self.region_delay.get((rb, ra)))
                )
                if delay is not None:
                    out[(a, b)] = (delay, jitter, loss)
        return out


@dataclass(slots=True)
class _Node:
    node_id: NodeId
    store: MemoryLogStore
    engine: Engine | None = None
    inflight: Ready | None = None
    incarnation: int = 0
    tick_at: float = float("inf")
    paused: bool = False
    deferred: list[tuple[int, Any, Any]] = field(default_factory=list)  # events while paused
    disk_latency: float = 0.0  # base latency of this node's disk
    hold: CommitHold = field(default_factory=lambda: CommitHold(HardState(term=-1)))
    hard_to_write: HardState | None = None  # with `inflight`: the hard state it writes
    has_sync_source: bool = True  # False: its engine never names one (push), not asked


def _may_name_sync_source(engine: Engine) -> bool:
    """False for an engine whose `sync_source` is ReplicaBase's own, always None (push)."""
    kind = type(engine)
    return not (
        getattr(kind, "sync_source", None) is ReplicaBase.sync_source
        and getattr(kind, "_sync_source", None) is ReplicaBase._sync_source
    )


@dataclass(slots=True)
class SimStats:
    events: int = 0
    messages: int = 0
    peer_errors: int = 0
    elections_won: int = 0
    crashes: int = 0
    ops_ok: int = 0
    ops_fail: int = 0
    ops_unknown: int = 0
    latencies: list[float] = field(default_factory=list)


class Simulator:
    """Runs one seeded simulation; `run()` returns when virtual time is up."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._factory = config.engine or engine_factory(config.protocol)
        master = random.Random(config.seed)
        self._engine_rng = random.Random(master.getrandbits(64))
        self._client_rng = random.Random(master.getrandbits(64))
        self._disk_rng = random.Random(master.getrandbits(64))
        nemesis_rng = random.Random(master.getrandbits(64))
        everything = config.faults == "all"
        self.node_ids = config.node_ids()
        jitter = config.jitter * (4 if everything else 1)
        loss = config.loss if config.loss is not None else (0.01 if everything else 0.0)
        self.network = SimNetwork(
            random.Random(master.getrandbits(64)),
            config.link_delays(jitter, loss),
            config.one_way_delay,
            jitter,
            loss,
            config.duplicate if config.duplicate is not None else (0.01 if everything else 0.0),
            egress=config.egress,
        )
        self.network.count_bytes = config.count_bytes
        self.network.fifo = config.fifo_links
        base_disk = config.disk_latency
        self.nodes = {
            n: _Node(n, MemoryLogStore(), disk_latency=config.disk_latency_of.get(n, base_disk))
            for n in self.node_ids
        }
        self.voters = config.initial_voters()
        self.invariants = Invariants(members=self.voters)
        self.stats = SimStats()
        self.faults = (
            list(config.faults_scripted)
            if config.faults_scripted is not None
            else schedule(nemesis_rng, self.node_ids, config.faults, config.duration)
        )
        self._change_rng = random.Random(nemesis_rng.getrandbits(64))  # what a change changes
        self.changes_proposed = 0
        self.fault_log: list[tuple[float, str]] = []
        self.protocol_events: list[tuple[NodeId, ProtocolEvent]] = []  # engines' milestones
        self.now = 0.0
        self._heap: list[tuple[float, int, int, Any, Any]] = []
        self._seq = 0
        # Open loop: each client's arrivals not yet in the heap, as (time, sequence number).
        self._arrivals_due: dict[int, Iterator[tuple[float, int]]] = {}
        # A FIFO link's arrival that lands on the same instant as the link's previous one
        # joins that delivery: (link) -> (time, batch still waiting in the heap).
        self._batches: dict[tuple[NodeId, NodeId], tuple[float, list[Envelope]]] = {}
        self._handlers: list[Callable[[Any, Any], None]] = [
            self._on_deliver,
            self._on_tick,
            self._on_disk,
            self._on_client_arrive,
            self._on_client_reply,
            self._on_client_timer,
            self._on_client_start,
            self._on_fault,
            self._on_arrival,
            self._on_sample,
            self._on_client_replies,
        ]
        self._request_owner: dict[int, SimClient] = {}
        self._next_request = 1
        self.workload = config.the_workload()
        self._next_process = self.workload.clients
        self.trace: deque[tuple[float, str, str, object]] = deque(maxlen=max(config.trace, 1))
        self._tracing = config.trace > 0
        stream_seed = self._client_rng.getrandbits(32)
        self.clients = [
            SimClient(
                f"c{i}",
                i,
                i,
                random.Random(self._client_rng.getrandbits(64)),
                config.client_settings,
                self.node_ids,
                self.workload.stream(stream_seed, i),
            )
            for i in range(self.workload.clients)
        ]
        self._open_loop = self.workload.open_loop
        self._stream_seed = stream_seed
        self.samples: list[dict[str, Any]] = []
        self.leader_time: dict[NodeId, float] = {}
        self.stopped_by: InvariantViolation | None = None
        self._sources: dict[NodeId, NodeId | None] = {}  # current sync sources of live nodes
        self._disk_extra: dict[NodeId, float] = {}  # slow-disk faults
        self._aimed: dict[int, NodeId] = {}  # fault ref -> the leader it was aimed at
        self._started_at: dict[NodeId, float] = {}
        crashes = config.faults in ("crash", "membership", "all")
        self._crash_after_vote = (
            config.crash_after_vote if config.crash_after_vote is not None else 0.2 * crashes
        )

    # ---- scheduling --------------------------------------------------------------------------

    def _at(self, time: float, kind: int, a: Any = None, b: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, kind, a, b))

    def _engine_config(self, node_id: NodeId) -> Config:
        return Config(
            node_id=node_id,
            members=self.node_ids,
            voters=self.voters,
            joining=node_id not in self.voters,
            election_timeout=self.config.election_timeout,
            heartbeat_interval=self.config.heartbeat_interval,
            **self.config.config_overrides,
        )

    def _start_node(self, node: _Node) -> None:
        node.incarnation += 1
        self._started_at[node.node_id] = self.now
        rng = random.Random(self._engine_rng.getrandbits(64))
        engine = self._factory(self._engine_config(node.node_id), node.store.load(), rng, self.now)
        if self.network.egress:  # capped senders feel their pipes' back-pressure
            engine.egress_gauge = self.network.gauge(node.node_id)
        node.engine = engine
        node.has_sync_source = _may_name_sync_source(engine)
        node.inflight = None
        node.hold = CommitHold(HardState(term=-1))  # what was held died with the process
        node.tick_at = float("inf")
        self.invariants.node_restarted(node.node_id, engine.commit_index)
        self._pump(node)

    # ---- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        """Start, run to the end (duration plus a settling period), judge."""
        self.start()
        self.run_until(self.end_time)
        self.finish()

    @property
    def end_time(self) -> float:
        cfg = self.config
        settle = cfg.settle
        if settle is None:
            settle = cfg.client_settings.op_timeout + 4 * cfg.election_timeout
        return cfg.duration + settle

    def start(self) -> None:
        for node in self.nodes.values():
            self._start_node(node)
        for fault in self.faults:
            self._at(fault.time, _FAULT, fault)
        for client in self.clients:
            if self._open_loop:
                arrivals = self.workload.arrivals(
                    self.config.duration, self._stream_seed, client.number
                )
                # A client's arrivals enter the heap one at a time, each with the sequence
                # number it would have had had all been pushed now: the heap pops them in the
                # same order, and stays small instead of holding a scenario's every arrival.
                first = self._seq + 1
                self._seq += len(arrivals)
                queued = sorted(zip(map(float, arrivals), range(first, self._seq + 1), strict=True))
                self._arrivals_due[client.number] = iter(queued)
                self._push_next_arrival(client)
            else:
                self._at(self._client_rng.uniform(0, 0.05), _CLIENT_START, client)
        if self.config.sample_interval > 0:
            self._at(0.0, _SAMPLE)

    def run_until(self, end: float) -> None:
        """Process every event due up to virtual time `end` (tests may stop and look)."""
        handlers = self._handlers
        heap = self._heap
        stats = self.stats
        pop = heapq.heappop
        with _fewer_collections():
            while heap and self.stopped_by is None and heap[0][0] <= end:
                time, _, kind, a, b = pop(heap)
                self.now = time
                stats.events += 1
                if kind <= _LAST_NODE_EVENT and a.paused:
                    a.deferred.append((kind, a, b))  # a stopped process reads its socket later
                    continue
                handlers[kind](a, b)
        self.now = max(self.now, end)

    def finish(self) -> None:
        """Outstanding operations become unknown; then the end-of-run checks."""
        for client in self.clients:
            if client.current is not None:
                self._give_up(client)
        self._final_check()

    def inject(self, fault: Fault) -> None:
        """Schedule a scripted fault (tests and scenarios)."""
        self._at(fault.time, _FAULT, fault)

    def _final_check(self) -> None:
        logs = {n: node.store.load() for n, node in self.nodes.items()}
        commit = max((nd.engine.commit_index for nd in self.nodes.values() if nd.engine), default=0)
        self.invariants.final_check(self.now, logs, commit)

    # ---- node events ---------------------------------------------------------------------------

    def _step(self, node: _Node, what: str, obj: Any, pump: bool = True) -> None:
        """Give `node`'s engine one input (`what`: recv, tick, read, propose), then check it.

        Dispatching on `what` here, rather than taking a closure, spares a call and an
        allocation on the simulator's hottest path.
        """
        engine = node.engine
        if engine is None:
            return
        now = self.now
        if self._tracing:
            self.trace.append((now, node.node_id, what, obj))
        was_leader = engine.role is Role.LEADER
        try:
            if what == "recv":
                engine.receive(obj, now)
            elif what == "tick":
                engine.tick(now)
            elif what == "read":
                engine.read(obj, now)
            elif what == "change":
                engine.change_membership(obj, now)
            else:
                engine.propose(obj, now)
        except PeerError:
            self.stats.peer_errors += 1
        except InvariantViolation as error:
            self._engine_violation(node, error)
            return
        if not was_leader and engine.role is Role.LEADER:
            self.stats.elections_won += 1
            self.fault_log.append((now, f"{node.node_id} leads term {engine.term}"))
        self.invariants.after_step(now, engine)
        if node.has_sync_source:
            source = engine.sync_source
            if source != self._sources.get(node.node_id):
                self._sources[node.node_id] = source
                self.invariants.check_sync_sources(now, self._live_sync_edges())
        if pump:
            self._pump(node)

    def _live_sync_edges(self) -> dict[NodeId, NodeId | None]:
        """Sync sources, without edges to a source that restarted since it last served."""
        edges: dict[NodeId, NodeId | None] = {}
        for node_id, source in self._sources.items():
            engine = self.nodes[node_id].engine
            since = getattr(engine, "sync_source_since", float("-inf"))
            stale = source is not None and self._started_at.get(source, 0.0) > since
            edges[node_id] = None if stale else source
        return edges

    def _engine_violation(self, node: _Node, error: InvariantViolation) -> None:
        self.invariants.violations.append(
            Violation(self.now, node.node_id, "engine-invariant", str(error))
        )
        self.stopped_by = error

    def _pump(self, node: _Node) -> None:
        """Take Readies while the disk is idle; schedule the next timer."""
        engine = node.engine
        while engine is not None and node.inflight is None and engine.has_ready():
            try:
                ready = engine.ready()
            except InvariantViolation as error:
                self._engine_violation(node, error)
                return
            self.invariants.on_ready(self.now, engine, ready)
            if ready.events:
                self.protocol_events.extend((node.node_id, event) for event in ready.events)
            if ready.needs_persist():
                write, node.hard_to_write = node.hold.take(
                    ready.hard_state, ready.truncate_after, ready.entries, ready.snapshot
                )
            else:
                write = False
            if write:
                if ready.send_first:
                    self._send_messages(node, ready.messages)
                node.inflight = ready
                latency = node.disk_latency * (0.5 + self._disk_rng.random())
                if self._disk_extra:
                    latency += self._disk_extra.get(node.node_id, 0.0)
                self._at(self.now + latency, _DISK, node, node.incarnation)
                break
            self._finish(node, ready)
        if engine is not None:
            deadline = engine.next_deadline()
            if deadline < node.tick_at or node.tick_at <= self.now:
                node.tick_at = deadline
                self._at(max(deadline, self.now), _TICK, node, deadline)

    def _finish(self, node: _Node, ready: Ready) -> None:
        """After the persist: send, deliver replies, advance."""
        engine = node.engine
        assert engine is not None
        if not (ready.send_first and node.inflight is ready):
            self._send_messages(node, ready.messages)
        if ready.replies:
            owners = self._request_owner
            due = [
                (client, reply)
                for reply in ready.replies
                if (client := owners.pop(reply.request_id, None)) is not None
            ]
            if len(due) == 1:
                self._at(self.now + self.config.client_delay, _CLIENT_REPLY, *due[0])
            elif due:
                self._at(self.now + self.config.client_delay, _CLIENT_REPLIES, due)
        node.inflight = None
        engine.advance(ready)

    def _send_messages(self, node: _Node, messages: list[Envelope]) -> None:
        self.stats.messages += len(messages)
        arrivals = self.network.arrivals
        nodes = self.nodes
        now = self.now
        fifo = self.network.fifo
        for envelope in messages:
            message = envelope.message
            if (
                self._crash_after_vote
                and type(message) is VoteResponse
                and message.granted
                and not message.pre_vote
                and self.now < self.config.duration
                and self._disk_rng.random() < self._crash_after_vote
            ):
                self._targeted_crash(node)
            for arrival in arrivals(envelope, now):
                if fifo:
                    self._deliver_fifo(arrival, envelope)
                else:  # (`_at` spelled out: one call less per message)
                    self._seq += 1
                    item = (arrival, self._seq, _DELIVER, nodes[envelope.dst], envelope)
                    heapq.heappush(self._heap, item)

    def _deliver_fifo(self, arrival: float, envelope: Envelope) -> None:
        """Schedule a FIFO link's arrival; one at the instant of the link's last joins it."""
        link = (envelope.src, envelope.dst)
        last = self._batches.get(link)
        if last is not None and last[0] == arrival:
            last[1].append(envelope)
            return
        batch = [envelope]
        self._batches[link] = (arrival, batch)
        self._at(arrival, _DELIVER, self.nodes[envelope.dst], batch)

    def _on_deliver(self, node: _Node, delivery: Envelope | list[Envelope]) -> None:
        if not isinstance(delivery, list):
            self._step(node, "recv", delivery)
            return
        first = delivery[0]
        link = (first.src, first.dst)
        if self._batches.get(link, (0.0, None))[1] is delivery:
            del self._batches[link]  # later arrivals start a new batch
        # Every message of the batch is received in turn; the node then takes its Readies
        # once, as a real node does with what one read of its socket returned.
        last = len(delivery) - 1
        for position, envelope in enumerate(delivery):
            if node.engine is None or self.stopped_by is not None:
                return
            self._step(node, "recv", envelope, position == last)

    def _on_tick(self, node: _Node, deadline: float) -> None:
        if node.tick_at != deadline or node.engine is None:
            return  # superseded by an earlier deadline, or the node is down
        node.tick_at = float("inf")
        self._step(node, "tick", None)
        engine = node.engine
        if engine is not None and engine.next_deadline() <= self.now and self.stopped_by is None:
            # A timer that does not move after it fired would spin forever at this instant.
            error = InvariantViolation(
                f"next_deadline() {engine.next_deadline()} <= now after tick"
            )
            self._engine_violation(node, error)

    def _on_disk(self, node: _Node, incarnation: int) -> None:
        if incarnation != node.incarnation or node.inflight is None:
            return
        ready = node.inflight
        if ready.snapshot is not None:
            node.store.save_snapshot(ready.snapshot)
        node.store.persist(node.hard_to_write, ready.truncate_after, ready.entries)
        self._finish(node, ready)
        if node.engine is not None:
            self.invariants.after_step(self.now, node.engine)
        self._pump(node)

    # ---- faults ------------------------------------------------------------------------------

    def leader_now(self) -> NodeId | None:
        """The live node that leads the highest term (what a nemesis aiming at it sees)."""
        best: tuple[int, NodeId] | None = None
        for node_id, node in self.nodes.items():
            engine = node.engine
            leading = engine is not None and engine.role is Role.LEADER
            if leading and engine is not None and (best is None or engine.term > best[0]):
                best = (engine.term, node_id)
        return None if best is None else best[1]

    def _resolve(self, fault: Fault) -> Fault | None:
        """Fill in `leader` (the same node for every fault of one ref); None: no leader now."""
        if LEADER not in fault.nodes and not any(LEADER in g for g in fault.groups):
            return fault
        leader = self._aimed.get(fault.ref) if fault.ref else None
        if leader is None:
            leader = self.leader_now()
            if leader is None:
                return None
            if fault.ref:
                self._aimed[fault.ref] = leader
        nodes = tuple(leader if n == LEADER else n for n in fault.nodes)
        groups = tuple(tuple(leader if n == LEADER else n for n in g) for g in fault.groups)
        return dataclasses.replace(fault, nodes=nodes, groups=groups)

    def _on_fault(self, scheduled: Fault, _: None) -> None:
        fault = self._resolve(scheduled)
        if fault is None:
            self.fault_log.append((self.now, f"skipped (no leader): {scheduled.describe()}"))
            return
        self.fault_log.append((self.now, fault.describe()))
        if self._tracing:
            self.trace.append((self.now, "nemesis", fault.describe(), None))
        match fault.action:
            case Action.CRASH:
                self._crash(self.nodes[fault.nodes[0]])
            case Action.RESTART:
                node = self.nodes[fault.nodes[0]]
                if node.engine is None:
                    self._start_node(node)
            case Action.PAUSE:
                self.nodes[fault.nodes[0]].paused = True
            case Action.RESUME:
                self._resume(self.nodes[fault.nodes[0]])
            case Action.PARTITION:
                self.network.partition([list(group) for group in self._groups(fault)])
            case Action.ONE_WAY:
                if fault.groups:  # the first group's messages to the rest are dropped
                    senders, receivers = self._groups(fault)[:2]
                    for src in senders:
                        for dst in receivers:
                            self.network.block_one_way(src, dst)
                for src, dst in zip(fault.nodes[::2], fault.nodes[1::2], strict=True):
                    self.network.block_one_way(src, dst)
            case Action.HEAL:
                self.network.heal()
            case Action.SLOW_LINK:
                src = fault.nodes[0]
                peers = fault.nodes[1:] or tuple(n for n in self.node_ids if n != src)
                for peer in peers:
                    for link in ((src, peer), (peer, src)):
                        if fault.delay or fault.jitter or fault.loss:
                            self.network.slowed[link] = (fault.delay, fault.jitter, fault.loss)
                        else:
                            self.network.slowed.pop(link, None)
            case Action.CHANGE:
                self._propose_change(fault)
            case Action.SLOW_DISK:
                node_id = fault.nodes[0]
                if fault.delay:
                    self._disk_extra[node_id] = fault.delay
                else:
                    self._disk_extra.pop(node_id, None)

    def _propose_change(self, fault: Fault) -> None:
        """Propose a membership change at the leader: the fault's, or one drawn from the
        leader's configuration (add a non-member, promote a learner, remove anyone while
        three voters would be left... or two: the leader itself may go)."""
        leader = self.leader_now()
        engine = self.nodes[leader].engine if leader is not None else None
        if engine is None:
            self.fault_log.append((self.now, f"skipped (no leader): {fault.describe()}"))
            return
        if fault.change:
            change = ConfChange(ChangeKind(fault.change), fault.nodes[0])
        else:
            membership = engine.status().membership or Membership(())
            options: list[ConfChange] = []
            for node in self.node_ids:
                role = membership.role_of(node)
                if role is None:
                    options.append(ConfChange(ChangeKind.ADD_LEARNER, node))
                    options.append(ConfChange(ChangeKind.ADD_VOTER, node))
                elif role == "learner":
                    options.append(ConfChange(ChangeKind.PROMOTE, node))
                    options.append(ConfChange(ChangeKind.REMOVE, node))
                elif len(membership.voters) >= 3:
                    options.append(ConfChange(ChangeKind.REMOVE, node))
            if not options:
                return
            change = self._change_rng.choice(options)
        request_id = self._next_request
        self._next_request += 1
        self.changes_proposed += 1
        self.fault_log.append((self.now, f"{leader} proposes {change.describe()}"))
        self._step(self.nodes[engine.node_id], "change", MembershipRequest(request_id, change))

    def _groups(self, fault: Fault) -> list[tuple[NodeId, ...]]:
        """The fault's groups; a single group is cut off from everyone else."""
        groups = list(fault.groups)
        if len(groups) == 1:
            rest = tuple(n for n in self.node_ids if n not in groups[0])
            groups.append(rest)
        return groups

    def _resume(self, node: _Node) -> None:
        node.paused = False
        deferred, node.deferred = node.deferred, []
        for kind, a, b in deferred:
            self._at(self.now, kind, a, b)

    def _targeted_crash(self, node: _Node) -> None:
        """Crash `node` just after its vote left, and bring it back soon after."""
        down = self._disk_rng.uniform(0.01, 0.2)
        crash = Fault(self.now + 1e-6, Action.CRASH, (node.node_id,))
        self._at(crash.time, _FAULT, crash)
        restart = Fault(crash.time + down, Action.RESTART, (node.node_id,))
        self._at(restart.time, _FAULT, restart)

    def _crash(self, node: _Node) -> None:
        if node.engine is None:
            return
        self.stats.crashes += 1
        ready = node.inflight
        if ready is not None and self._disk_rng.random() < 0.5:
            # A torn write: the snapshot (written first), the truncation and a prefix of the
            # entries made it, the hard state (written last) did not. Or the crash came right
            # after the snapshot, before the log behind it was truncated.
            snapshot_only = False
            if ready.snapshot is not None:
                node.store.save_snapshot(ready.snapshot)
                snapshot_only = self._disk_rng.random() < 0.5
            kept = self._disk_rng.randrange(len(ready.entries) + 1)
            if not snapshot_only and (ready.truncate_after is not None or kept):
                node.store.persist(None, ready.truncate_after, ready.entries[:kept])
        node.engine = None
        node.inflight = None
        node.tick_at = float("inf")
        node.paused = False
        node.deferred = []
        self._sources.pop(node.node_id, None)

    # ---- clients -----------------------------------------------------------------------------

    def _on_client_start(self, client: SimClient, _: None) -> None:
        if self.now >= self.config.duration:
            return
        client.next_op(self.now)
        self._send_attempt(client)

    def _push_next_arrival(self, client: SimClient) -> None:
        """Put the client's next open-loop arrival in the heap, under its reserved number."""
        due = next(self._arrivals_due[client.number], None)
        if due is not None:
            time, seq = due
            heapq.heappush(self._heap, (time, seq, _ARRIVAL, client, time))

    def _on_arrival(self, client: SimClient, intended: float) -> None:
        """Open loop: an operation is due; it waits if this client is still busy."""
        self._push_next_arrival(client)
        if client.current is None and not client.backlog:
            client.next_op(self.now, intended)
            self._send_attempt(client)
        else:
            client.backlog.append(intended)

    def _send_attempt(self, client: SimClient) -> None:
        op = client.current
        assert op is not None
        request_id = self._next_request
        self._next_request += 1
        op.attempt = request_id
        op.target = client.pick_target()
        self._request_owner[request_id] = client
        arrival = self.now + self.config.client_delay
        self._at(arrival, _CLIENT_ARRIVE, self.nodes[op.target], (client, request_id))
        op.attempt_deadline = self.now + client.settings.attempt_timeout
        if client.timer_at is None:
            # One attempt timer per client: when it fires it re-arms itself for the deadline
            # of the attempt then in flight, instead of one event per attempt.
            client.timer_at = op.attempt_deadline
            self._at(op.attempt_deadline, _CLIENT_TIMER, client, 0)

    def _on_client_arrive(self, node: _Node, payload: tuple[SimClient, int]) -> None:
        client, request_id = payload
        op = client.current
        if op is None or op.attempt != request_id:
            return
        if op.f == "read":
            assert op.consistency is not None
            request = ReadRequest(request_id, op.key, op.consistency)
            self._step(node, "read", request)
        else:
            write = ClientRequest(request_id, client.command())
            self._step(node, "propose", write)

    def _on_client_reply(self, client: SimClient, reply: ClientReply) -> None:
        op = client.current
        if op is None or op.attempt != reply.request_id:
            return
        if self._tracing:
            self.trace.append((self.now, client.client_id, "reply", reply))
        if client.on_reply(reply, self.now):
            self._completed(client)
            return
        if self.now - op.invoke > client.settings.op_timeout:
            self._give_up(client)
            self._schedule_next(client)
            return
        backoff = 0.0 if reply.leader else client.settings.retry_backoff
        self._at(self.now + backoff, _CLIENT_TIMER, client, -reply.request_id)

    def _on_client_replies(self, due: list[tuple[SimClient, ClientReply]], _: None) -> None:
        """The replies of one Ready, due at one instant: one event instead of one each.

        Scheduled one by one they would have run back to back (consecutive sequence numbers,
        nothing in between), and whatever they schedule runs after the last of them either
        way, so handling them in a row is the same run. Each still counts as an event.
        """
        for position, (client, reply) in enumerate(due):
            if position:
                if self.stopped_by is not None:
                    return
                self.stats.events += 1
            self._on_client_reply(client, reply)

    def _completed(self, client: SimClient) -> None:
        last = client.ops[-1]
        self.stats.latencies.append(self.now - last.invoke)
        if last.outcome == "ok":
            self.stats.ops_ok += 1
        else:
            self.stats.ops_fail += 1
        if last.f != "read" and last.outcome == "ok":
            client_id, acked_seq, index = client.acked_writes[-1]
            self.invariants.on_write_acked(self.now, client_id, acked_seq, index)
        if client.current is not None:  # the cas half of a read-modify-write
            self._send_attempt(client)
            return
        self._schedule_next(client)

    def _schedule_next(self, client: SimClient) -> None:
        if self._open_loop:
            if client.backlog:
                client.next_op(self.now, client.backlog.popleft())
                self._send_attempt(client)
            return
        think = client.settings.think_time
        pause = client.rng.expovariate(1.0 / think) if think > 0 else 0.0
        self._at(self.now + pause, _CLIENT_START, client)

    def _on_client_timer(self, client: SimClient, request_id: int) -> None:
        """The client's attempt timer (request_id 0) or a retry that is due (request_id < 0)."""
        op = client.current
        if request_id == 0:
            client.timer_at = None
            if op is None:
                return
            if op.attempt_deadline > self.now:
                client.timer_at = op.attempt_deadline
                self._at(op.attempt_deadline, _CLIENT_TIMER, client, 0)
                return
            request_id = op.attempt  # this attempt timed out
        if op is None or op.attempt != abs(request_id):
            return
        if request_id > 0:
            client.leader_guess = None
        if self.now - op.invoke > client.settings.op_timeout:
            self._give_up(client)
            self._schedule_next(client)
            return
        self._send_attempt(client)

    def _give_up(self, client: SimClient) -> None:
        client.give_up(self._next_process)
        self._next_process += 1
        self.stats.ops_unknown += 1

    # ---- time series -----------------------------------------------------------------------------

    def _on_sample(self, _a: None, _b: None) -> None:
        interval = self.config.sample_interval
        sent: dict[NodeId, int] = dict.fromkeys(self.nodes, 0)
        if self.network.count_bytes:  # what each node has sent so far, as a real node counts
            for (src, _dst), link_stats in self.network.stats.items():
                sent[src] += link_stats.bytes
        for node_id, node in self.nodes.items():
            engine = node.engine
            if engine is None:
                self.samples.append({"t": self.now, "node": node_id, "up": False})
                continue
            status = engine.status()
            if status.role is Role.LEADER:
                self.leader_time[node_id] = self.leader_time.get(node_id, 0.0) + interval
            self.samples.append(
                {
                    "t": self.now,
                    "node": node_id,
                    "up": not node.paused,
                    "role": status.role.value,
                    "term": status.term,
                    "commit": status.commit,
                    "applied": status.applied,
                    "last": status.last_index,
                    "sync_source": status.sync_source,
                    **({"sent": sent[node_id]} if self.network.count_bytes else {}),
                    "sync_depth": status.sync_depth,
                    "log_entries": status.log_entries,
                    "log_bytes": status.log_bytes,
                    "snapshot_index": status.snapshot_index,
                }
            )
        self._at(self.now + interval, _SAMPLE)

    # ---- results -------------------------------------------------------------------------------

    @property
    def violations(self) -> list[Violation]:
        return self.invariants.violations

    def format_trace(self) -> str:
        lines = []
        for time, who, what, obj in self.trace:
            detail = "" if obj is None else f" {obj}"
            lines.append(f"{time:12.6f} {who:>8} {what}{detail}")
        return "\n".join(lines)
