"""The vocabulary shared by both engines: ids, log entries, commands, hard state, roles.

Everything here is a frozen, slotted dataclass so that values can be shared between the
engine, the simulator and the codec without defensive copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, StrEnum

from protocols.quickinit import quick_init

NodeId = str


class Op(StrEnum):
    """What a command does to the key-value state machine."""

    NOOP = "noop"  # appended by a new leader to commit entries of earlier terms
    PUT = "put"
    DELETE = "delete"
    CAS = "cas"  # compare-and-set: value becomes `value` iff current equals `expected`
    CONFIG = "config"  # a cluster configuration (protocols/membership.py); the KV ignores it


@quick_init
@dataclass(frozen=True, slots=True)
class Command:
    """A state-machine command with its client session stamp.

    `client_id` and `seq` make a retried command apply exactly once: the state machine
    remembers the last sequence number applied per client and its result.
    `expected` is only meaningful for CAS; `None` there means "the key must be absent".
    """

    op: Op
    key: str = ""
    value: str | None = None
    expected: str | None = None
    client_id: str = ""
    seq: int = 0

    def __post_init__(self) -> None:
        # Commands arrive from clients and peers: reject nonsense when built, not when applied.
        if not isinstance(self.op, Op):
            raise ValueError(f"unknown op {self.op!r}")
        if self.op in (Op.PUT, Op.CAS, Op.CONFIG) and self.value is None:
            raise ValueError(f"{self.op} needs a value")
        if self.op is not Op.NOOP and not self.key:
            raise ValueError(f"{self.op} needs a key")
        if self.seq < 0:
            raise ValueError("seq must be >= 0")
        if self.op is Op.CONFIG:
            from protocols.membership import Membership  # noqa: PLC0415 (it imports this module)

            Membership.decode(self.value or "")  # a configuration that does not decode: refused

    def payload_size(self) -> int:
        """Approximate bytes of user data, for batch size caps."""
        return len(self.key) + len(self.value or "") + len(self.expected or "") + 16


NOOP = Command(Op.NOOP)


@quick_init
@dataclass(frozen=True, slots=True)
class Entry:
    """One slot of the replicated log. Index 0 is the empty sentinel (term 0)."""

    term: int
    index: int
    command: Command


@quick_init
@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent.

    `term` and `vote` guard election safety across restarts (one vote per term); `commit`
    lets a restarted node re-apply its committed prefix without waiting for a leader.
    `rollback_id` is MongoDB's durable rollback counter (used by the pull engine).
    """

    term: int = 0
    vote: NodeId | None = None
    commit: int = 0
    rollback_id: int = 0  # bumped on every rollback; pullers re-validate when it changes


@quick_init
@dataclass(frozen=True, slots=True, order=True)
class Position:
    """The (term, index) of a member's last durable entry: what pull replication reports.

    Ordered lexicographically by (term, index), which is the Raft "more up to date" order.
    """

    term: int
    index: int


class Role(Enum):
    """The roles a node moves through. Only the engines' `become_*` methods change it."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"
