"""A hand-driven network of engines in memory, for tests that read like transcripts.

Unlike the simulator, nothing happens by itself: the test ticks nodes, delivers or drops
messages and inspects the result. Readies are processed immediately and completely (persist to
the node's MemoryLogStore, queue messages, collect replies), so after any call the engines are
quiescent and the queued messages are exactly what they sent.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from protocols.config import Config
from protocols.engine import (
    ClientReply,
    ClientRequest,
    Consistency,
    EngineFactory,
    MembershipRequest,
    ReadRequest,
)
from protocols.engines import engine_factory
from protocols.events import ProtocolEvent
from protocols.membership import ChangeKind, ConfChange
from protocols.messages import Envelope
from protocols.replica import ReplicaBase
from protocols.storage import MemoryLogStore
from protocols.types import Command, Entry, NodeId, Op, Role

M = TypeVar("M")


@dataclass(frozen=True, slots=True)
class Sent(Generic[M]):
    """A message in flight, typed by its kind."""

    src: NodeId
    dst: NodeId
    message: M


@dataclass(slots=True)
class Harness:
    """Engines by id, the messages in flight, and the client replies received."""

    factory: EngineFactory
    configs: dict[NodeId, Config]
    seed: int = 0
    now: float = 0.0
    engines: dict[NodeId, ReplicaBase] = field(default_factory=dict)
    stores: dict[NodeId, MemoryLogStore] = field(default_factory=dict)
    inflight: list[Envelope] = field(default_factory=list)
    replies: list[ClientReply] = field(default_factory=list)
    applied: dict[NodeId, list[Entry]] = field(default_factory=dict)
    cut: set[tuple[NodeId, NodeId]] = field(default_factory=set)
    events: list[tuple[NodeId, ProtocolEvent]] = field(default_factory=list)
    _next_request: int = 1

    @classmethod
    def create(
        cls,
        protocol: str | EngineFactory = "push",
        nodes: int = 3,
        seed: int = 0,
        voters: int = 0,
        **config: Any,
    ) -> Harness:
        """`nodes` engines; with `voters`, only the first that many form the cluster and the
        others start `joining` (members to be added by a configuration change)."""
        ids = tuple(f"n{i + 1}" for i in range(nodes))
        factory = engine_factory(protocol) if isinstance(protocol, str) else protocol
        first = ids[:voters] if voters else ids
        configs = {
            n: Config(node_id=n, members=ids, voters=first, joining=n not in first, **config)
            for n in ids
        }
        harness = cls(factory, configs, seed)
        for node in ids:
            harness.stores[node] = MemoryLogStore()
            harness.start(node)
        return harness

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self, node: NodeId) -> ReplicaBase:
        """(Re)build `node` from its durable store alone, as after a crash."""
        rng = random.Random(f"{self.seed}-{node}-{self.now}")
        engine = self.factory(self.configs[node], self.stores[node].load(), rng, self.now)
        assert isinstance(engine, ReplicaBase)
        self.engines[node] = engine
        self.applied[node] = []
        self._process(node)
        return engine

    def crash(self, node: NodeId) -> None:
        """Lose all volatile state of `node` (its store is kept) and drop its traffic."""
        del self.engines[node]
        self.inflight = [m for m in self.inflight if node not in (m.src, m.dst)]

    def __getitem__(self, node: NodeId) -> ReplicaBase:
        return self.engines[node]

    # ---- driving -------------------------------------------------------------------------

    def _process(self, node: NodeId) -> None:
        engine = self.engines[node]
        while engine.has_ready():
            ready = engine.ready()
            if ready.snapshot is not None:
                self.stores[node].save_snapshot(ready.snapshot)
            self.stores[node].persist(ready.hard_state, ready.truncate_after, ready.entries)
            self.inflight.extend(ready.messages)
            self.applied[node].extend(ready.committed)
            self.replies.extend(ready.replies)
            self.events.extend((node, event) for event in ready.events)
            engine.advance(ready)

    def do(self, node: NodeId, action: Callable[[ReplicaBase], object]) -> None:
        action(self.engines[node])
        self._process(node)

    def advance_time(self, seconds: float, nodes: Iterable[NodeId] | None = None) -> None:
        """Move the clock and tick `nodes` (default: all running)."""
        self.now += seconds
        for node in list(nodes if nodes is not None else self.engines):
            if node in self.engines:
                self.do(node, lambda e: e.tick(self.now))

    def elapse_election_timeout(self, node: NodeId) -> None:
        """Tick only `node` past its randomised election deadline."""
        engine = self.engines[node]
        self.now = max(self.now, engine.election_deadline)
        self.do(node, lambda e: e.tick(self.now))

    def deliver(
        self,
        predicate: Callable[[Envelope], bool] = lambda _: True,
        rounds: int = 1_000,
    ) -> list[Envelope]:
        """Deliver matching messages (and what they cause) until none match; returns them."""
        delivered: list[Envelope] = []
        for _ in range(rounds):
            batch = [m for m in self.inflight if predicate(m)]
            if not batch:
                return delivered
            self.inflight = [m for m in self.inflight if not predicate(m)]
            for envelope in batch:
                delivered.append(envelope)
                if (envelope.src, envelope.dst) in self.cut or envelope.dst not in self.engines:
                    continue
                self.do(envelope.dst, lambda e, m=envelope: e.receive(m, self.now))  # type: ignore[misc]
        raise AssertionError("messages kept flowing: no quiescence")

    def drop(self, predicate: Callable[[Envelope], bool] = lambda _: True) -> list[Envelope]:
        dropped = [m for m in self.inflight if predicate(m)]
        self.inflight = [m for m in self.inflight if not predicate(m)]
        return dropped

    def settle(self, seconds: float, step: float = 0.05) -> None:
        """Let time pass in steps, delivering everything sent at each step (zero latency)."""
        for _ in range(round(seconds / step)):
            self.advance_time(step)
            self.deliver()

    def isolate(self, node: NodeId) -> None:
        for other in self.configs:
            if other != node:
                self.cut |= {(node, other), (other, node)}

    def heal(self) -> None:
        self.cut = set()

    def messages(self, kind: type[M], src: NodeId | None = None) -> list[Sent[M]]:
        """In-flight messages of one type (optionally from `src`), typed for the caller."""
        return [
            Sent(m.src, m.dst, m.message)
            for m in self.inflight
            if isinstance(m.message, kind) and (src is None or m.src == src)
        ]

    @staticmethod
    def only(kind: type[M], envelopes: Iterable[Envelope]) -> list[Sent[M]]:
        """The envelopes of one message type, typed (e.g. from what `deliver` returned)."""
        return [Sent(m.src, m.dst, m.message) for m in envelopes if isinstance(m.message, kind)]

    def role(self, node: NodeId) -> Role:
        """The current role (a call, so type checkers do not pin it between steps)."""
        return self.engines[node].role

    # ---- conveniences ------------------------------------------------------------------------

    def elect(self, node: NodeId) -> ReplicaBase:
        """Make `node` campaign and deliver everything until the cluster is quiet."""
        self.elapse_election_timeout(node)
        self.deliver()
        assert self.engines[node].role is Role.LEADER, f"{node} did not win"
        return self.engines[node]

    def put(self, node: NodeId, key: str, value: str, client: str = "", seq: int = 0) -> int:
        request_id = self._next_request
        self._next_request += 1
        command = Command(Op.PUT, key, value, client_id=client, seq=seq)
        self.do(node, lambda e: e.propose(ClientRequest(request_id, command), self.now))
        return request_id

    def propose(self, node: NodeId, command: Command) -> int:
        request_id = self._next_request
        self._next_request += 1
        self.do(node, lambda e: e.propose(ClientRequest(request_id, command), self.now))
        return request_id

    def read(
        self, node: NodeId, key: str, consistency: Consistency = Consistency.LINEARIZABLE
    ) -> int:
        request_id = self._next_request
        self._next_request += 1
        self.do(node, lambda e: e.read(ReadRequest(request_id, key, consistency), self.now))
        return request_id

    def change(self, node: NodeId, kind: ChangeKind | str, target: NodeId) -> int:
        """Propose a membership change at `node`; returns the request id."""
        request_id = self._next_request
        self._next_request += 1
        request = MembershipRequest(request_id, ConfChange(ChangeKind(kind), target))
        self.do(node, lambda e: e.change_membership(request, self.now))
        return request_id

    def reply(self, request_id: int) -> ClientReply | None:
        return next((r for r in self.replies if r.request_id == request_id), None)

    def leaders(self) -> list[NodeId]:
        return [n for n, e in self.engines.items() if e.role is Role.LEADER]
