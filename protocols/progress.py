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
    match_at_heartbeat: int = -1  # match when the previous heartbeat answer came back
    # SNAPSHOT: the snapshot being sent (kept even if the leader takes a newer one, so a
    # transfer always finishes), the bytes the follower acknowledged and the bytes sent.
    snapshot: Snapshot | None = None
    snapshot_acked: int = 0
    snapshot_sent: int = 0
    acked_at_heartbeat: int = -1

    def is_paused(self, max_inflight: int) -> bool:
        if self.state is ReplState.PROBE:
            return self.probe_sent
        if self.state is ReplState.SNAPSHOT:
            return True  # snapshot chunks are paced by `snapshot_window`, not by appends
        return len(self.inflight) >= max_inflight

    def become_probe(self) -> None:
        self.state = ReplState.PROBE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()
        self.snapshot = None

    def become_snapshot(self, snapshot: Snapshot) -> None:
        self.state = ReplState.SNAPSHOT
        self.snapshot = snapshot
        self.snapshot_acked = self.snapshot_sent = 0
        self.acked_at_heartbeat = -1
        self.inflight.clear()

    def snapshot_acknowledged(self, offset: int) -> None:
        """The follower holds `offset` bytes in order: the window moves; a lower offset than
        sent means chunks were lost (or the follower restarted): resend from there."""
        if offset < self.snapshot_acked:
            self.snapshot_sent = offset
        self.snapshot_acked = offset
        self.snapshot_sent = max(self.snapshot_sent, offset)

    def snapshot_stalled(self) -> bool:
        """A heartbeat answer came back: no snapshot bytes acknowledged since the last one?"""
        stuck = self.snapshot_acked == self.acked_at_heartbeat
        self.acked_at_heartbeat = self.snapshot_acked
        return stuck

    def stalled(self, last_index: int) -> bool:
        """A heartbeat answer came back: has replication made no progress since the last one?

        In REPLICATE the leader sends optimistically; if an append was lost (a connection
        dropped it) and no new entry follows to expose the gap, nothing would ever resend it.
        Two heartbeat answers with the same match while entries are owed mean exactly that.
        """
        stuck = (
            self.state is ReplState.REPLICATE
            and self.match < last_index
            and self.match == self.match_at_heartbeat
        )
        self.match_at_heartbeat = self.match
        return stuck

    def become_replicate(self) -> None:
        self.state = ReplState.REPLICATE
        self.next = self.match + 1
        self.inflight.clear()
        self.snapshot = None

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
