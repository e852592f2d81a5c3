"""Simulated clients: closed-loop processes that write, read and compare-and-set with retries.

Each client follows the rules a real client of this project follows: a write carries its
session stamp (client id, sequence number) and keeps it on every retry, so an attempt whose
outcome is unknown can be retried safely; an operation that cannot finish before its deadline
is recorded with an unknown outcome and the client continues as a new process (Jepsen's rule:
at most one outstanding operation per process). Values written are unique, so the history
checker can tell writes apart.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum

from protocols.engine import ClientReply, Consistency, ReplyStatus
from protocols.types import Command, NodeId, Op
from workloads.checker import Operation


class Kind(Enum):
    READ = "read"
    WRITE = "write"
    CAS = "cas"


@dataclass(slots=True)
class ClientSettings:
    keys: int = 3
    think_time: float = 0.02  # mean pause between operations (exponential)
    attempt_timeout: float = 0.5  # give an attempt this long before trying another node
    op_timeout: float = 3.0  # then record the operation as unknown and move on
    retry_backoff: float = 0.05  # pause before retrying after "no leader" / "retry"
    read_fraction: float = 0.4
    cas_fraction: float = 0.2


@dataclass(slots=True)
class Outstanding:
    """The operation a client is working on."""

    kind: Kind
    key: str
    value: str | None
    expected: str | None
    invoke: float
    seq: int
    attempt: int = 0  # request id of the attempt in flight
    target: NodeId = ""


@dataclass(slots=True)
class SimClient:
    """One closed-loop client. The simulator calls its methods; it returns what to do next."""

    client_id: str
    process: int
    rng: random.Random
    settings: ClientSettings
    nodes: tuple[NodeId, ...]
    history: list[Operation] = field(default_factory=list)
    acked_writes: list[tuple[str, int, int]] = field(default_factory=list)  # (client, seq, index)
    current: Outstanding | None = None
    leader_guess: NodeId | None = None
    seq: int = 0
    writes: int = 0
    last_seen: dict[str, str | None] = field(default_factory=dict)

    def next_op(self, now: float) -> Outstanding:
        """Start a new operation at `now` (the caller sends the first attempt)."""
        key = f"k{self.rng.randrange(self.settings.keys)}"
        roll = self.rng.random()
        if roll < self.settings.read_fraction:
            op = Outstanding(Kind.READ, key, None, None, now, 0)
        else:
            self.seq += 1
            self.writes += 1
            value = f"{self.client_id}-{self.writes}"
            if roll < self.settings.read_fraction + self.settings.cas_fraction:
                op = Outstanding(Kind.CAS, key, value, self.last_seen.get(key), now, self.seq)
            else:
                op = Outstanding(Kind.WRITE, key, value, None, now, self.seq)
        self.current = op
        return op

    def command(self) -> Command:
        op = self.current
        assert op is not None and op.kind is not Kind.READ
        kind = Op.CAS if op.kind is Kind.CAS else Op.PUT
        return Command(kind, op.key, op.value, op.expected, self.client_id, op.seq)

    def pick_target(self) -> NodeId:
        if self.leader_guess is not None:
            return self.leader_guess
        return self.rng.choice(self.nodes)

    def on_reply(self, reply: ClientReply, now: float) -> bool:
        """Handle a reply to the current attempt; True when the operation completed."""
        op = self.current
        assert op is not None
        if reply.status is ReplyStatus.OK:
            assert reply.result is not None
            self.leader_guess = op.target
            self._complete(op, now, reply.result.ok, reply.result.value, reply.index)
            return True
        if reply.status is ReplyStatus.NOT_LEADER:
            self.leader_guess = reply.leader if reply.leader != op.target else None
        else:  # UNKNOWN or RETRY: same node may be wrong now, try elsewhere
            self.leader_guess = None
        return False

    def _complete(
        self, op: Outstanding, now: float, ok: bool, value: str | None, index: int
    ) -> None:
        if op.kind is Kind.READ:
            self.history.append(
                Operation(self.process, "read", op.key, value, op.invoke, now, "ok")
            )
            self.last_seen[op.key] = value
        elif op.kind is Kind.WRITE:
            self.history.append(
                Operation(self.process, "write", op.key, op.value, op.invoke, now, "ok")
            )
            self.acked_writes.append((self.client_id, op.seq, index))
            self.last_seen[op.key] = op.value
        else:
            outcome = "ok" if ok else "fail"
            cas_value = (op.expected, op.value)
            self.history.append(
                Operation(self.process, "cas", op.key, cas_value, op.invoke, now, outcome)
            )
            if ok:
                self.acked_writes.append((self.client_id, op.seq, index))
                self.last_seen[op.key] = op.value
            else:
                self.last_seen[op.key] = value
        self.current = None

    def give_up(self, new_process: int) -> None:
        """The operation ran out of time: its outcome is unknown; continue as a new process."""
        op = self.current
        assert op is not None
        f = op.kind.value
        value: object = (op.expected, op.value) if op.kind is Kind.CAS else op.value
        self.history.append(Operation(self.process, f, op.key, value, op.invoke, None, "unknown"))
        self.process = new_process
        self.current = None
        self.leader_guess = None


READ_CONSISTENCY = Consistency.LINEARIZABLE
