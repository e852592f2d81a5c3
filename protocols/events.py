"""Timestamped protocol events: what an engine did during a failover, and when.

Why: the time from a fault to the rate being back is the sum of protocol stages (election timer,
votes, catch-up, the first commit of a new term) and runtime delays (clients finding the new
leader). Node samples every 100 ms cannot tell them apart; the engine can, at the instant it
acts, with the caller's own `now`. Events are few (elections, not entries), kept in a bounded
buffer and handed out with each `Ready`, so a caller that never reads them loses nothing else.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from protocols.errors import CallerError

EVENT_BUFFER = 256  # events kept between two Readies; older ones are dropped first


class EventKind(StrEnum):
    """The milestones of a failover, in the order a successful one passes them."""

    PRE_VOTE = "pre-vote"  # a dry run (pre-vote) started; `term` is the term it asks for
    CANDIDATE = "candidate"  # a real election started for `term`
    ELECTED = "elected"  # this node won `term`
    CATCHUP_START = "catchup-start"  # pull: a new primary starts learning a majority's positions
    CATCHUP_TARGET = "catchup-target"  # pull: a majority answered; detail: target and source
    CATCHUP_END = "catchup-end"  # pull: the no-op of `term` is written; detail: why it ended
    TERM_COMMITTED = "term-committed"  # the leader committed the first entry of its term
    STEPPED_DOWN = "stepped-down"  # a leader of `term` lost leadership
    LEADER_LEARNED = "leader-learned"  # a follower heard from the leader of `term` first
    SOURCE_CHANGED = "source-changed"  # pull: a secondary chose a sync source (detail: whom, why)
    SNAPSHOT_INSTALLED = "snapshot-installed"  # a lagging member caught up from a snapshot
    CONFIG_CHANGED = "config-changed"  # the configuration in force changed (detail: the new one)


@dataclass(frozen=True, slots=True)
class ProtocolEvent:
    """One event at engine time `t`. `last_contact` (election starts only): when this node last
    heard from a leader, so the timeline can show how stale its view was."""

    t: float
    kind: EventKind
    term: int
    detail: str = ""
    last_contact: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.t):
            raise CallerError(f"ProtocolEvent.t: must be finite, got {self.t}")
        if not isinstance(self.kind, EventKind):
            raise CallerError(f"ProtocolEvent.kind: unknown kind {self.kind!r}")
        if self.term < 0:
            raise CallerError(f"ProtocolEvent.term: must be >= 0, got {self.term}")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form (run folders, `/events`); -inf contact (never) becomes None."""
        contact = self.last_contact
        return {
            "t": self.t,
            "kind": self.kind.value,
            "term": self.term,
            "detail": self.detail,
            "last_contact": contact if contact is not None and math.isfinite(contact) else None,
        }


class EventLog:
    """A bounded buffer of events, drained by the caller (oldest dropped when full)."""

    def __init__(self, capacity: int = EVENT_BUFFER) -> None:
        if capacity < 1:
            raise CallerError(f"EventLog capacity: must be >= 1, got {capacity}")
        self._events: deque[ProtocolEvent] = deque(maxlen=capacity)
        self.dropped = 0

    def record(self, event: ProtocolEvent) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1
        self._events.append(event)

    def drain(self) -> list[ProtocolEvent]:
        events = list(self._events)
        self._events.clear()
        return events

    def __bool__(self) -> bool:
        return bool(self._events)

    def __len__(self) -> int:
        return len(self._events)
