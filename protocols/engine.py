"""The engine interface both protocols implement (sans-I/O, after etcd's Step/Ready/Advance).

Inputs are method calls carrying the caller's `now`; outputs are collected and handed over in
one `Ready`. The caller processes a Ready in this order, then calls `advance(ready)`:

1. save `snapshot` if set (`LogStore.save_snapshot`), then persist `truncate_after`,
   `entries` and `hard_state` (all durable before step 2);
2. send `messages` (they may promise what step 1 made durable: votes, acknowledgements);
3. `committed` entries are already applied by the engine to its state machine; the caller may
   record them (the simulator checks state-machine safety with them);
4. deliver `replies` to clients.

`events` (protocol milestones with the engine's `now`, see protocols/events.py) may be recorded
at any point; they change nothing.

Inputs may be given between `ready()` and `advance()` (e.g. while a disk write is in flight);
`ready()` must not be called again before `advance()`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from protocols.config import Config
from protocols.egress import EgressGauge
from protocols.events import ProtocolEvent
from protocols.kv import Result
from protocols.log import RaftLog
from protocols.membership import ConfChange, Membership
from protocols.messages import Envelope
from protocols.quickinit import quick_init
from protocols.snapshot import Snapshot
from protocols.storage import StoredState
from protocols.types import Command, Entry, HardState, NodeId, Role


class Consistency(StrEnum):
    """Read consistency levels offered by the client API."""

    LINEARIZABLE = "linearizable"  # read barrier confirmed by a majority in the current term
    LEADER = "leader"  # served by the node that believes it leads; may be stale after a split
    LOCAL = "local"  # served by any node from its applied state; may be stale


class ReplyStatus(StrEnum):
    OK = "ok"
    NOT_LEADER = "not-leader"  # nothing happened; retry at `leader` (if known)
    UNKNOWN = "unknown"  # accepted, then leadership was lost: may or may not apply; retry same seq
    RETRY = "retry"  # nothing happened yet (e.g. a new leader not ready for reads); retry later
    REFUSED = "refused"  # a request that cannot apply (result.value says why); nothing happened


@quick_init
@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A write to replicate. `request_id` is the caller's handle to match the reply."""

    request_id: int
    command: Command


@quick_init
@dataclass(frozen=True, slots=True)
class ReadRequest:
    request_id: int
    key: str
    consistency: Consistency = Consistency.LINEARIZABLE


@quick_init
@dataclass(frozen=True, slots=True)
class MembershipRequest:
    """A configuration change to propose at the leader (protocols/membership.py)."""

    request_id: int
    change: ConfChange


@quick_init
@dataclass(frozen=True, slots=True)
class ClientReply:
    request_id: int
    status: ReplyStatus
    result: Result | None = None
    leader: NodeId | None = None
    index: int = 0  # a write's log index; the applied index a read was served at


@dataclass(slots=True)
class Ready:
    """All outstanding work of an engine, in the order the module docstring gives."""

    hard_state: HardState | None = None
    truncate_after: int | None = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Envelope] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    replies: list[ClientReply] = field(default_factory=list)
    events: list[ProtocolEvent] = field(default_factory=list)
    snapshot: Snapshot | None = None  # taken or received: save before the entries
    # The messages may leave before the persist, in parallel with it: a leader's, which promise
    # nothing this Ready makes durable (its term and vote are durable already, and it counts
    # its own entries toward commit only once they are: Raft thesis §10.2.1).
    send_first: bool = False

    def needs_persist(self) -> bool:
        return (
            self.hard_state is not None
            or self.truncate_after is not None
            or bool(self.entries)
            or self.snapshot is not None
        )

    def is_empty(self) -> bool:
        return not (
            self.needs_persist() or self.messages or self.committed or self.replies or self.events
        )


@quick_init
@dataclass(frozen=True, slots=True)
class MemberProgress:
    """What the leader knows of one member's catch-up (shown by `/status`).

    `entries_behind` counts the leader's entries the member is not known to hold; `snapshot_*`
    the bytes of a snapshot being sent to (push) or copied by (pull) it, 0 when none is.
    """

    node: NodeId
    role: str  # "voter" or "learner"
    match: int  # the last index it is known to hold durably
    entries_behind: int
    snapshot_bytes_sent: int = 0
    snapshot_bytes_total: int = 0


@quick_init
@dataclass(frozen=True, slots=True)
class Status:
    """What `/status` and the simulator's invariant checks read."""

    node_id: NodeId
    role: Role
    term: int
    leader: NodeId | None
    commit: int
    applied: int
    last_index: int
    last_term: int
    sync_source: NodeId | None = None
    peers_seen: tuple[NodeId, ...] = ()
    snapshot_index: int = 0  # entries up to here are compacted into the snapshot
    log_entries: int = 0  # entries held in memory after the snapshot
    log_bytes: int = 0  # their payload bytes
    sync_depth: int | None = None  # pull: hops from the primary (0: it is; None: no source)
    pullers: tuple[NodeId, ...] = ()  # pull: the members pulling from this node
    membership: Membership | None = None  # the configuration in force (latest in the log)
    config_index: int = 0  # its log entry (0: from the snapshot or the start-up settings)
    config_committed: bool = True  # False while a change is pending
    progress: tuple[MemberProgress, ...] = ()  # leader: each member's catch-up


class Engine(Protocol):
    """The contract the simulator and the real node drive; both engines satisfy it."""

    node_id: NodeId
    log: RaftLog
    egress_gauge: EgressGauge | None

    def tick(self, now: float) -> None: ...
    def receive(self, envelope: Envelope, now: float) -> None: ...
    def propose(self, request: ClientRequest, now: float) -> None: ...
    def read(self, request: ReadRequest, now: float) -> None: ...
    def change_membership(self, request: MembershipRequest, now: float) -> None: ...
    def has_ready(self) -> bool: ...
    def ready(self) -> Ready: ...
    def advance(self, ready: Ready) -> None: ...
    def status(self) -> Status: ...
    def next_deadline(self) -> float: ...
    @property
    def commit_index(self) -> int: ...
    @property
    def term(self) -> int: ...
    @property
    def role(self) -> Role: ...
    @property
    def sync_source(self) -> NodeId | None: ...


class EngineFactory(Protocol):
    """How callers build an engine: from config, what the store loaded, a seeded RNG and now."""

    def __call__(
        self, config: Config, stored: StoredState, rng: random.Random, now: float
    ) -> Engine: ...
