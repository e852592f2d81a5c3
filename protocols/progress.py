"""Per-follower replication progress of the push leader (after etcd's tracker/progress).

A follower is either being *probed* (one AppendEntries at a time until the leader finds where
the logs match) or *replicated* to (AppendEntries pipelined optimistically, up to `max_inflight`
messages not yet acknowledged). Invariant: match < next <= leader's last index + 1.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

HEARTBEATS_REMEMBERED = 64  # unanswered heartbeats whose marks are kept per follower


class ReplState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    state: ReplState = ReplState.PROBE
    probe_sent: bool = False  # PROBE: one append is out; wait for an answer or a heartbeat
    inflight: deque[int] = field(default_factory=deque)  # REPLICATE: last index of each append
    recent_active: bool = False  # heard from since the last check-quorum round
    # what had been sent (next - 1) when each heartbeat still unanswered left, oldest first
    sent_at_heartbeats: deque[int] = field(
        default_factory=lambda: deque(maxlen=HEARTBEATS_REMEMBERED)
    )

    def is_paused(self, max_inflight: int) -> bool:
        if self.state is ReplState.PROBE:
            return self.probe_sent
        return len(self.inflight) >= max_inflight

    def become_probe(self) -> None:
        self.state = ReplState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def heartbeat_sent(self) -> None:
        self.sent_at_heartbeats.append(self.next - 1)

    def stalled(self) -> bool:
        """A heartbeat answer came back: was an append sent before that heartbeat lost?

        In REPLICATE the leader sends optimistically; if an append was lost (a connection
        dropped it) and no new entry follows to expose the gap, nothing would ever resend it.
        Links keep order, so when the answer to a heartbeat is back, so are the answers to the
        appends sent before it: a match below what had been sent then means one was lost.
        Appends sent *after* the heartbeat may still be on the way (a slow, bandwidth-capped
        link queues them for longer than a heartbeat interval) and say nothing; counting them
        made every backlog look like a loss and resent it, which only grew the backlog.

        Answers are paired with heartbeats in order. A heartbeat or answer that is lost leaves
        the pairing behind by one (older, lower marks): detection is late, never false.
        """
        if not self.sent_at_heartbeats:
            return False
        sent_before = self.sent_at_heartbeats.popleft()
        return self.state is ReplState.REPLICATE and self.match < sent_before

    def become_replicate(self) -> None:
        self.state = ReplState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()

    def sent(self, last_index: int, count: int) -> None:
        """Record an AppendEntries whose last entry is `last_index` (`count` entries)."""
        if self.state is ReplState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflight.append(last_index)
        else:
            self.probe_sent = True

    def maybe_update(self, index: int) -> bool:
        """A success acknowledging up to `index`; False when it tells nothing new."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """A rejection of the append after `rejected`; `hint` is the last index that may match.

        Returns False for a stale rejection (reordered or duplicated), which must be ignored.
        """
        if self.state is ReplState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1)
        self.probe_sent = False
        return True
