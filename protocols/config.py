"""Engine configuration: one dataclass, validated up front (raft-rs style)."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.errors import CallerError
from protocols.types import NodeId


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """Sync-source selection knobs of the pull engine; defaults follow MongoDB's.

    MongoDB names: maxSyncSourceLagSecs (30 s), changeSyncSourceThresholdMillis (5 ms),
    maxNumSyncSourceChangesPerHour (3), a 10 s deny-list for a source that errored or was too
    stale... here lag is measured in entries or seconds of the primary's time as noted.
    """

    policy: str = "nearest"
    max_lag_seconds: float = 30.0  # drop a source this far behind the best candidate
    change_threshold: float = 0.005  # seconds of RTT that make another member "closer"
    max_changes_per_hour: int = 3  # rate limit for re-selection to a merely closer member
    deny_seconds: float = 10.0  # how long a failed or stale source is avoided
    unreachable_after: float = 0.0  # 0: use the election timeout
    fixed_tree: tuple[tuple[NodeId, NodeId], ...] = ()  # (member, its source) for `fixed`


@dataclass(frozen=True, slots=True)
class Config:
    """Everything an engine needs to know besides its durable state.

    Times are in seconds of the caller's clock (virtual in the simulator). The randomised
    election timeout is drawn from [election_timeout, 2 * election_timeout).
    """

    node_id: NodeId
    members: tuple[NodeId, ...]
    election_timeout: float = 1.0
    heartbeat_interval: float = 0.1
    max_batch_entries: int = 512
    max_batch_bytes: int = 1 << 20
    max_inflight: int = 64  # push: pipelined AppendEntries per follower
    pre_vote: bool = True
    check_quorum: bool = True
    priorities: tuple[tuple[NodeId, float], ...] = ()  # pull: member priorities (default 1)
    pull_timeout: float = 0.5  # pull: how long a source may hold a long poll
    catchup_timeout: float = 2.0  # pull: bound of a new primary's catch-up phase
    sync: SyncSettings = field(default_factory=SyncSettings)

    def validate(self) -> Config:
        """Raise CallerError naming the first bad field; return self for chaining."""
        if not self.node_id:
            raise CallerError("node_id: must be non-empty")
        if len(set(self.members)) != len(self.members):
            raise CallerError("members: duplicate ids")
        if self.node_id not in self.members:
            raise CallerError(f"members: must include node_id {self.node_id!r}")
        if self.election_timeout <= 0:
            raise CallerError("election_timeout: must be > 0")
        if not 0 < self.heartbeat_interval < self.election_timeout:
            raise CallerError("heartbeat_interval: must be > 0 and < election_timeout")
        for name in ("max_batch_entries", "max_batch_bytes", "max_inflight"):
            if getattr(self, name) < 1:
                raise CallerError(f"{name}: must be >= 1")
        for member, priority in self.priorities:
            if member not in self.members:
                raise CallerError(f"priorities: {member!r} is not a member")
            if priority < 0:
                raise CallerError(f"priorities: {member!r} has a negative priority")
        if self.pull_timeout <= 0 or self.catchup_timeout <= 0:
            raise CallerError("pull_timeout/catchup_timeout: must be > 0")
        return self

    def priority_of(self, member: NodeId) -> float:
        return dict(self.priorities).get(member, 1.0)
