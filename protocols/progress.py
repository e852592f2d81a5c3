"""Per-follower replication progress of the push leader (after etcd's tracker/progress).

A follower is either being *probed* (one AppendEntries at a time until the leader finds where
the logs match), *replicated* to (AppendEntries pipelined optimistically, up to `max_inflight`
messages not yet acknowledged), or sent a *snapshot* (it needs entries the leader compacted;
chunks go out up to a window ahead of what it acknowledged). Invariant: match < next <= leader's
last index + 1.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum

from protocols.snapshot import Snapshot

HEARTBEATS_REMEMBERED = 64  # unanswered heartbeats whose marks are kept per follower


class ReplState(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


@dataclass(slots=True)
class Progress:
    match: int = 0
    next: int = 1
    state: ReplState = ReplState.PROBE
    probe_sent: bool = False  # PROBE: one append is out; wait for an answer or a heartbeat
    inflight: deque[int] = field(default_factory=deque)  # REPLICATE: last index of each append
    recent_active: bool = False  # heard from since the last check-quorum round
    # What had been sent when each heartbeat still unanswered left, oldest first: the last
    # index (next - 1), or in SNAPSHOT the snapshot bytes; -1 stands for "nothing to judge".
    sent_at_heartbeats: deque[int] = field(
        default_factory=lambda: deque(maxlen=HEARTBEATS_REMEMBERED)
    )
    # SNAPSHOT: the snapshot being sent (kept even if the leader takes a newer one, so a
    # transfer always finishes), the bytes the follower acknowledged and the bytes sent.
    snapshot: Snapshot | None = None
    snapshot_acked: int = 0
    snapshot_sent: int = 0

    def is_paused(self, max_inflight: int) -> bool:
        if self.state is ReplState.PROBE:
            return self.probe_sent
        if self.state is ReplState.SNAPSHOT:
            return True  # snapshot chunks are paced by `snapshot_window`, not by appends
        return len(self.inflight) >= max_inflight

    def become_probe(self) -> None:
        self._leave_snapshot()
        self.state = ReplState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self.state = ReplState.SNAPSHOT
        self.snapshot = snapshot
        self.snapshot_acked = self.snapshot_sent = 0
        self._forget_marks()
        self.inflight.clear()

    def _leave_snapshot(self) -> None:
        if self.state is ReplState.SNAPSHOT:
            self._forget_marks()
        self.snapshot = None

    def _forget_marks(self) -> None:
        """Marks taken in another state measure something else (indexes, not bytes): keep the
        pairing of answers with heartbeats, but let none of them judge a stall."""
        self.sent_at_heartbeats = deque(
            [-1] * len(self.sent_at_heartbeats), maxlen=HEARTBEATS_REMEMBERED
        )

    def _answered_mark(self) -> int:
        """The mark of the heartbeat this answer belongs to (pairing in order; -1: none)."""
        return self.sent_at_heartbeats.popleft() if self.sent_at_heartbeats else -1

    def snapshot_acknowledged(self, offset: int) -> None:
        """The follower holds `offset` bytes in order: the window moves; a lower offset than
        sent means chunks were lost (or the follower restarted): resend from there."""
        if offset < self.snapshot_acked:
            self.snapshot_sent = offset
        self.snapshot_acked = offset
        self.snapshot_sent = max(self.snapshot_sent, offset)

    def snapshot_stalled(self) -> bool:
        """A heartbeat answer came back: were chunks sent before that heartbeat lost? (The
        same rule as `stalled`, in bytes: chunks still queued on a slow link say nothing.)"""
        return self.snapshot_acked < self._answered_mark()

    def heartbeat_sent(self) -> None:
        snapshotting = self.state is ReplState.SNAPSHOT
        self.sent_at_heartbeats.append(self.snapshot_sent if snapshotting else self.next - 1)

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
        sent_before = self._answered_mark()
        return self.state is ReplState.REPLICATE and self.match < sent_before

    def become_replicate(self) -> None:
        self._leave_snapshot()
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
