"""Simulated clients: processes that run a workload against the cluster, with retries.

Each client follows the rules a real client of this project follows: a write carries its
session stamp (client id, sequence number) and keeps it on every retry, so an attempt whose
outcome is unknown can be retried safely; an operation that cannot finish before its deadline
is recorded with an unknown outcome and the client continues as a new process (Jepsen's rule:
at most one outstanding operation per process). What to do next comes from an `OpSource` (the
workload layer plugs its operation stream in: this runtime layer never imports it; values are
unique per write, so the history checker can tell writes apart). A read-modify-write is a read
then a compare-and-set from the value read: two operations.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocols.engine import ClientReply, Consistency, ReplyStatus
from protocols.types import Command, NodeId, Op


@dataclass(slots=True)
class ClientSettings:
    think_time: float = 0.02  # mean pause between operations of a closed loop (0: none)
    attempt_timeout: float = 0.5  # give an attempt this long before trying another node
    op_timeout: float = 3.0  # then record the operation as unknown and move on
    retry_backoff: float = 0.05  # pause before retrying after "no leader" / "retry"


class PlannedOp(Protocol):
    """One operation a workload wants run next (`kind`: read, write, cas, delete or rmw)."""

    @property
    def kind(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def value(self) -> str | None: ...
    @property
    def expected(self) -> str | None: ...
    @property
    def consistency(self) -> Consistency | None: ...


class OpSource(Protocol):
    """A client's seeded stream of operations; it sees what reads returned (rmw, cas)."""

    def next_op(self) -> PlannedOp: ...
    def observe(self, key: str, value: str | None) -> None: ...


class ClientLoad(Protocol):
    """What the simulator needs from a workload: client count, loop kind, arrivals, streams."""

    @property
    def clients(self) -> int: ...
    @property
    def open_loop(self) -> bool: ...
    def arrivals(self, duration: float, seed: int, client: int) -> Sequence[float]: ...
    def stream(self, seed: int, client: int) -> OpSource: ...


@dataclass(slots=True)
class ClientOp:
    """One client operation as the simulated client saw it (the driver's record, field by
    field: the workload layer turns it into its own record type)."""

    process: int
    f: str
    key: str
    value: Any
    invoke: float
    complete: float | None
    outcome: str  # ok | fail | unknown
    consistency: str | None = None
    intended: float | None = None


_F = {"read": "read", "write": "write", "cas": "cas", "delete": "delete"}
_OPS = {"write": Op.PUT, "cas": Op.CAS, "delete": Op.DELETE}  # a write's f -> its command


@dataclass(slots=True)
class Outstanding:
    """The operation (or rmw half) a client is working on."""

    f: str  # read | write | cas | delete
    key: str
    value: str | None
    expected: str | None
    consistency: Consistency | None
    invoke: float
    intended: float
    seq: int
    then_cas: str | None = None  # rmw: after this read, cas(read value -> then_cas)
    attempt: int = 0  # request id of the attempt in flight
    attempt_deadline: float = 0.0  # when the attempt in flight times out
    target: NodeId = ""


@dataclass(slots=True)
class SimClient:
    """One client process. The simulator calls its methods and does what they ask."""

    client_id: str
    number: int
    process: int
    rng: random.Random
    settings: ClientSettings
    nodes: tuple[NodeId, ...]
    stream: OpSource
    ops: list[ClientOp] = field(default_factory=list)
    acked_writes: list[tuple[str, int, int]] = field(default_factory=list)  # (client, seq, index)
    current: Outstanding | None = None
    leader_guess: NodeId | None = None
    seq: int = 0
    backlog: deque[float] = field(default_factory=deque)  # open loop: intended starts waiting
    timer_at: float | None = None  # the client's one pending attempt timer (None: none)

    def next_op(self, now: float, intended: float | None = None) -> Outstanding:
        """Start the next planned operation at `now` (the caller sends the first attempt)."""
        planned = self.stream.next_op()
        start = now if intended is None else intended
        if planned.kind in ("read", "rmw"):
            then = planned.value if planned.kind == "rmw" else None
            op = Outstanding(
                "read", planned.key, None, None, planned.consistency, now, start, 0, then
            )
        else:
            self.seq += 1
            f = _F[planned.kind]
            op = Outstanding(
                f, planned.key, planned.value, planned.expected, None, now, start, self.seq
            )
        self.current = op
        return op

    def command(self) -> Command:
        op = self.current
        assert op is not None and op.f != "read"
        return Command(_OPS[op.f], op.key, op.value, op.expected, self.client_id, op.seq)

    def pick_target(self) -> NodeId:
        op = self.current
        if op is not None and op.consistency is Consistency.LOCAL:
            return self.rng.choice(self.nodes)  # local reads spread over every node
        if self.leader_guess is not None:
            return self.leader_guess
        return self.rng.choice(self.nodes)

    def on_reply(self, reply: ClientReply, now: float) -> bool:
        """Handle a reply to the current attempt; True when the operation completed."""
        op = self.current
        assert op is not None
        if reply.status is ReplyStatus.OK:
            assert reply.result is not None
            if op.consistency is not Consistency.LOCAL:
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
        consistency = op.consistency.value if op.consistency is not None else None
        if op.f == "read":
            self._record(op, value, now, "ok", consistency)
            self.stream.observe(op.key, value)
        elif op.f == "cas":
            outcome = "ok" if ok else "fail"
            self._record(op, (op.expected, op.value), now, outcome, None)
            if ok:
                self.acked_writes.append((self.client_id, op.seq, index))
            self.stream.observe(op.key, op.value if ok else value)
        else:
            self._record(op, op.value, now, "ok", None)
            self.acked_writes.append((self.client_id, op.seq, index))
            self.stream.observe(op.key, op.value)
        self.current = None
        if op.f == "read" and op.then_cas is not None:
            # The second half of a read-modify-write starts as soon as the read is done.
            self.seq += 1
            self.current = Outstanding("cas", op.key, op.then_cas, value, None, now, now, self.seq)

    def _record(
        self, op: Outstanding, value: object, now: float | None, outcome: str, level: str | None
    ) -> None:
        intended = op.intended if op.intended != op.invoke else None
        self.ops.append(
            ClientOp(self.process, op.f, op.key, value, op.invoke, now, outcome, level, intended)
        )

    def give_up(self, new_process: int) -> None:
        """The operation ran out of time: its outcome is unknown; continue as a new process."""
        op = self.current
        assert op is not None
        value: object = (op.expected, op.value) if op.f == "cas" else op.value
        level = op.consistency.value if op.consistency is not None else None
        self._record(op, value, None, "unknown", level)
        self.process = new_process
        self.current = None
        self.leader_guess = None
