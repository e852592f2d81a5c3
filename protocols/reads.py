"""Linearizable reads by read index (Raft thesis §6.4), shared by both engines.

A leader that receives linearizable reads records its commit index as the read index, then
confirms it is still the leader by a round of heartbeats acknowledged by a majority *in its
current term* (a deposed leader cannot collect them). Once confirmed and once the state machine
has applied up to the read index, the reads are served locally. Reads that arrive while a round
is being prepared share it; a confirmed round also confirms every earlier one.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

from protocols.engine import ReadRequest
from protocols.quorum import majority
from protocols.types import NodeId


@dataclass(slots=True)
class _Round:
    ctx: int
    read_index: int
    requests: list[ReadRequest]
    acks: set[NodeId] = field(default_factory=set)


class ReadBarrier:
    """Read-index bookkeeping for one leader term; `reset()` when leadership ends."""

    def __init__(self) -> None:
        self._queued: list[ReadRequest] = []
        self._rounds: list[_Round] = []  # in ctx order
        self._confirmed: list[tuple[int, ReadRequest]] = []
        self._next_ctx = 1

    def enqueue(self, request: ReadRequest) -> None:
        self._queued.append(request)

    @property
    def has_queued(self) -> bool:
        return bool(self._queued)

    def start_round(
        self, read_index: int, self_id: NodeId, voters: Collection[NodeId]
    ) -> int | None:
        """Open a round for every queued read; returns its ctx (None when nothing is queued).

        The leader's own acknowledgement is counted at once (if it is a voter: a leader being
        removed is not), so a single-node cluster confirms immediately. Only acknowledgements
        of the current configuration's voters count; learners' do not.
        """
        if not self._queued:
            return None
        round_ = _Round(self._next_ctx, read_index, self._queued, {self_id})
        self._next_ctx += 1
        self._queued = []
        self._rounds.append(round_)
        self._maybe_confirm(voters)
        return round_.ctx

    def ack(self, ctx: int, node: NodeId, voters: Collection[NodeId]) -> None:
        """A heartbeat response echoing `ctx` arrived from `node` in the current term."""
        for round_ in self._rounds:
            if round_.ctx == ctx:
                round_.acks.add(node)
                break
        self._maybe_confirm(voters)

    def _maybe_confirm(self, voters: Collection[NodeId]) -> None:
        needed = majority(len(voters))
        confirmed_upto = -1
        for position, round_ in enumerate(self._rounds):
            if sum(1 for node in round_.acks if node in voters) >= needed:
                confirmed_upto = position
        for round_ in self._rounds[: confirmed_upto + 1]:
            self._confirmed.extend((round_.read_index, request) for request in round_.requests)
        del self._rounds[: confirmed_upto + 1]

    def has_servable(self, applied: int) -> bool:
        if not self._confirmed:  # asked after every step: skip building the generator
            return False
        return any(index <= applied for index, _ in self._confirmed)

    def take_servable(self, applied: int) -> list[tuple[int, ReadRequest]]:
        """Confirmed reads whose read index the state machine has reached."""
        if not self._confirmed:
            return []
        ready = [(index, request) for index, request in self._confirmed if index <= applied]
        if ready:
            self._confirmed = [(i, r) for i, r in self._confirmed if i > applied]
        return ready

    def reset(self) -> list[ReadRequest]:
        """Forget everything (leadership lost); returns the reads that must be failed."""
        pending = list(self._queued)
        for round_ in self._rounds:
            pending.extend(round_.requests)
        pending.extend(request for _, request in self._confirmed)
        self._queued, self._rounds, self._confirmed = [], [], []
        return pending
