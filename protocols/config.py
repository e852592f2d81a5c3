"""Engine configuration: one dataclass, validated up front (raft-rs style)."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import ClassVar

from protocols.errors import CallerError
from protocols.types import NodeId

DEFAULT_SNAPSHOT_CHUNK_BYTES = 256 << 10


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """Sync-source selection knobs of the pull engine (see protocols/sync_source.py).

    Defaults follow MongoDB's: maxSyncSourceLagSecs = 30 s, changeSyncSourceThresholdMillis =
    5 ms, maxNumSyncSourceChangesPerHour = 3 (repl server parameters); a source that failed is
    deny-listed for 10 s, one we are too stale for (or that sent unreadable data) for 60 s
    (SyncSourceResolver / BackgroundSync). Times are seconds of the engine's clock.

    Lag has no wall-clock timestamps to lean on here (entries carry none), so it is measured as
    the time since this node first saw the primary beyond a member's position (see
    sync_source.PrimaryProgress); `max_lag_entries` adds an optional limit in log entries.
    """

    POLICIES: ClassVar[tuple[str, ...]] = (
        "primary",
        "nearest",
        "freshest",
        "random",
        "fixed",
        "spread",
    )

    policy: str = "nearest"
    max_lag_seconds: float = 30.0  # a member this far behind the primary is not a candidate; 0: off
    max_lag_entries: int = 0  # the same limit counted in log entries; 0: off
    change_threshold: float = 0.005  # RTT margin (s): primary near-tie, "closer member"; 0: off
    max_changes_per_hour: int = 3  # this many choices within an hour: no "closer member" change
    deny_seconds: float = 10.0  # avoid a source that failed or stopped answering this long
    stale_deny_seconds: float = 60.0  # avoid a source we are too stale for / that sent garbage
    unreachable_after: float = 0.0  # silence meaning "stopped answering"; 0: election timeout
    fixed_tree: tuple[tuple[NodeId, NodeId], ...] = ()  # (member, its source) for `fixed`
    max_pullers: int = 2  # `spread`: pullers a source admits (see sync_source.py, "spread")
    rate_window: float = 3600.0  # the "hour" of max_changes_per_hour
    # MongoDB's durations assume its 10 s election timeout. When True, the engine scales the
    # durations above by (its election timeout / 10 s), so a cluster with 1 s timeouts keeps
    # MongoDB's proportions (deny-list = one election timeout, lag limit = three, ...).
    scale_with_election_timeout: bool = True

    MONGODB_ELECTION_TIMEOUT: ClassVar[float] = 10.0

    def effective(self, election_timeout: float) -> SyncSettings:
        """The settings the selector uses for a cluster with `election_timeout`."""
        if not self.scale_with_election_timeout:
            return self
        factor = election_timeout / self.MONGODB_ELECTION_TIMEOUT
        return replace(
            self,
            max_lag_seconds=self.max_lag_seconds * factor,
            deny_seconds=self.deny_seconds * factor,
            stale_deny_seconds=self.stale_deny_seconds * factor,
            rate_window=self.rate_window * factor,
            scale_with_election_timeout=False,
        )

    @property
    def puller_cap(self) -> int | None:
        """How many pullers this node serves before refusing more (None: no limit).

        Only `spread` limits them: a source applies its own settings, so a cluster is expected
        to run one policy throughout.
        """
        return self.max_pullers if self.policy == "spread" else None

    def validate(self, members: Collection[NodeId] = ()) -> SyncSettings:
        """Raise CallerError naming the first bad field; return self for chaining.

        With `members`, the fixed tree's names are checked against them too.
        """
        if self.policy not in self.POLICIES:
            raise CallerError(
                f"sync.policy: unknown policy {self.policy!r} (one of {', '.join(self.POLICIES)})"
            )
        for name in ("max_lag_seconds", "change_threshold", "unreachable_after"):
            value = getattr(self, name)
            if not (self._is_number(value) and math.isfinite(value) and value >= 0):
                raise CallerError(f"sync.{name}: must be a finite number >= 0, got {value!r}")
        for name in ("deny_seconds", "stale_deny_seconds", "rate_window"):
            value = getattr(self, name)
            if not (self._is_number(value) and math.isfinite(value) and value > 0):
                raise CallerError(f"sync.{name}: must be a finite number > 0, got {value!r}")
        for name, least in (
            ("max_lag_entries", 0),
            ("max_changes_per_hour", 1),
            ("max_pullers", 1),
        ):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= least):
                raise CallerError(f"sync.{name}: must be an integer >= {least}, got {value!r}")
        if self.policy == "fixed" and not self.fixed_tree:
            raise CallerError("sync.fixed_tree: the fixed policy needs a tree")
        self._check_tree(members)
        return self

    @staticmethod
    def _is_number(value: object) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    def _check_tree(self, members: Collection[NodeId]) -> None:
        """A tree of (member, source) edges: one source each, no cycle, a single root."""
        tree: object = self.fixed_tree
        if not isinstance(tree, tuple | list):
            raise CallerError(f"sync.fixed_tree: must be a sequence of pairs, got {tree!r}")
        parent: dict[NodeId, NodeId] = {}
        for edge in self.fixed_tree:
            if (
                not isinstance(edge, tuple | list)
                or len(edge) != 2
                or not all(isinstance(name, str) and name for name in edge)
            ):
                raise CallerError(f"sync.fixed_tree: {edge!r} is not a (member, source) pair")
            child, source = edge
            if child == source:
                raise CallerError(f"sync.fixed_tree: {child!r} cannot sync from itself")
            if child in parent:
                raise CallerError(f"sync.fixed_tree: {child!r} has more than one source")
            parent[child] = source
        if members:
            for name in sorted({*parent, *parent.values()}):
                if name not in members:
                    raise CallerError(f"sync.fixed_tree: {name!r} is not a member")
        for start in parent:
            seen = {start}
            node = start
            while node in parent:
                node = parent[node]
                if node in seen:
                    raise CallerError(f"sync.fixed_tree: cycle through {node!r}")
                seen.add(node)
        roots = sorted({source for source in parent.values() if source not in parent})
        if len(roots) > 1:
            raise CallerError(
                f"sync.fixed_tree: must have one root (the primary), found {', '.join(roots)}"
            )


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
    pull_timeout: float = 0.0  # pull: how long a source may hold a long poll; 0: heartbeat
    catchup_timeout: float = 0.0  # pull: bound of a new primary's catch-up; 0: 2 * election
    pull_streaming: bool = True  # pull: one request streams batches (MongoDB >= 4.4); False:
    # one request per batch, so an entry may wait up to a round trip for the next request
    sync: SyncSettings = field(default_factory=SyncSettings)
    # Log compaction: snapshot the state machine once this many applied entries (or payload
    # bytes) follow the last snapshot, and drop them from the log. 0: that limit is off; both
    # 0: no snapshots (the log grows without bound).
    snapshot_entries: int = 0
    snapshot_bytes: int = 0
    snapshot_chunk_bytes: int = DEFAULT_SNAPSHOT_CHUNK_BYTES  # one snapshot message's data
    snapshot_inflight: int = 4  # push: unacknowledged snapshot chunks per follower
    # Membership (protocols/membership.py). `members` is every node this one may talk to; the
    # configuration in force is the latest in the log or snapshot. A node with neither starts
    # with `voters` (default: all `members`) as voters, or with only itself (`bootstrap`: a
    # cluster of one that takes the others in), or with none (`joining`: it waits to be added).
    voters: tuple[NodeId, ...] = ()
    bootstrap: bool = False
    joining: bool = False

    @property
    def snapshots_enabled(self) -> bool:
        return self.snapshot_entries > 0 or self.snapshot_bytes > 0

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
        for name in (
            "max_batch_entries",
            "max_batch_bytes",
            "max_inflight",
            "snapshot_chunk_bytes",
            "snapshot_inflight",
        ):
            if getattr(self, name) < 1:
                raise CallerError(f"{name}: must be >= 1")
        for name in ("snapshot_entries", "snapshot_bytes"):
            if getattr(self, name) < 0:
                raise CallerError(f"{name}: must be >= 0 (0: off)")
        for member, priority in self.priorities:
            if member not in self.members:
                raise CallerError(f"priorities: {member!r} is not a member")
            if priority < 0:
                raise CallerError(f"priorities: {member!r} has a negative priority")
        for voter in self.voters:
            if voter not in self.members:
                raise CallerError(f"voters: {voter!r} is not a member")
        if len(set(self.voters)) != len(self.voters):
            raise CallerError("voters: duplicate ids")
        if self.bootstrap and self.joining:
            raise CallerError("bootstrap/joining: a node either forms a cluster or joins one")
        if self.pull_timeout < 0 or self.catchup_timeout < 0:
            raise CallerError("pull_timeout/catchup_timeout: must be >= 0 (0: derived)")
        self.sync.validate(self.members)
        return self

    @property
    def long_poll_timeout(self) -> float:
        # As long as the push leader's heartbeat period: an idle follower costs the same two
        # messages per period in both protocols, and a lost message is noticed as fast.
        return self.pull_timeout or self.heartbeat_interval

    @property
    def catchup_bound(self) -> float:
        return self.catchup_timeout or 2 * self.election_timeout

    def priority_of(self, member: NodeId) -> float:
        for node, priority in reversed(self.priorities):  # (the last word, as a dict would have)
            if node == member:
                return priority
        return 1.0
