"""Peer messages of both engines: frozen, slotted dataclasses, one union naming them all.

Every message carries the sender's `term` first, so the engines can apply the term rules in
one place before dispatching on the message type. An `Envelope` adds the addressing.
Each message states its field ranges in `validate()`, and the codec calls it on every message it
builds from peer bytes, so an engine only ever sees well-formed values from the network.
Building a message does not check it: engines build well-formed ones, and the simulator hands
millions of them from engine to engine without the codec in between, where a check per field
per message was one of its largest costs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from protocols.quickinit import quick_init
from protocols.types import Entry, NodeId


def _check_non_negative(**values: int) -> None:
    if min(values.values()) >= 0:  # every message checks its fields: the common case first
        return
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")


# ---- shared by both engines ---------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class VoteRequest:
    """Ask for a vote (or, with `pre_vote`, whether a vote would be granted: Raft thesis §9.6).

    `force` marks a leadership transfer or priority takeover that may ignore leader stickiness.
    A pre-vote carries the term the candidate *would* use, without having incremented it.
    """

    term: int
    last_term: int
    last_index: int
    pre_vote: bool = False
    force: bool = False

    def validate(self) -> None:
        _check_non_negative(term=self.term, last_term=self.last_term, last_index=self.last_index)


@quick_init
@dataclass(frozen=True, slots=True)
class VoteResponse:
    term: int
    granted: bool
    pre_vote: bool = False

    def validate(self) -> None:
        _check_non_negative(term=self.term)


@quick_init
@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Leader liveness, the commit point, and (with ctx > 0) a read-barrier probe.

    `commit_term` lets a receiver that is not sure its log matches the leader's accept the
    commit point only when its own last entry has that term (the pull engine's rule).
    """

    term: int
    commit: int
    commit_term: int = 0
    ctx: int = 0
    last_index: int = 0  # pull: the primary's position, for its members' sync-source views
    last_term: int = 0
    # pull: False when the primary heard the member's position recently (its UpdatePosition
    # traffic), so a HeartbeatResponse would tell it nothing; read probes (ctx > 0) are always
    # answered.
    want_reply: bool = True

    def validate(self) -> None:
        _check_non_negative(
            term=self.term,
            commit=self.commit,
            commit_term=self.commit_term,
            ctx=self.ctx,
            last_index=self.last_index,
            last_term=self.last_term,
        )


@quick_init
@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    term: int
    ctx: int = 0
    last_index: int = 0
    last_term: int = 0

    def validate(self) -> None:
        _check_non_negative(
            term=self.term, ctx=self.ctx, last_index=self.last_index, last_term=self.last_term
        )


@quick_init
@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the receiver campaigns at once, skipping pre-vote (thesis §3.10)."""

    term: int

    def validate(self) -> None:
        _check_non_negative(term=self.term)


# ---- push (vanilla Raft) ------------------------------------------------------------------


@quick_init
@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Raft's AppendEntries: entries following (prev_index, prev_term), and the commit index."""

    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int

    def validate(self) -> None:
        _check_non_negative(
            term=self.term, prev_index=self.prev_index, prev_term=self.prev_term, commit=self.commit
        )
        expected = self.prev_index + 1
        for entry in self.entries:
            if entry.index != expected or entry.term > self.term or entry.term < self.prev_term:
                raise ValueError("entries must follow prev_index contiguously, terms in range")
            expected += 1


@quick_init
@dataclass(frozen=True, slots=True)
class AppendResponse:
    """Success: `index` is the follower's last index matching the leader.

    Rejection: `index` is the rejected prev_index, and (hint_index, hint_term) point at the
    follower's last entry that could still match (fast backtracking).
    """

    term: int
    index: int
    reject: bool = False
    hint_index: int = 0
    hint_term: int = 0

    def validate(self) -> None:
        _check_non_negative(
            term=self.term, index=self.index, hint_index=self.hint_index, hint_term=self.hint_term
        )


# ---- pull (MongoDB-style) -----------------------------------------------------------------


class PullStatus(StrEnum):
    OK = "ok"  # entries follow the requested point (possibly none after a long-poll timeout)
    DIVERGED = "diverged"  # the source's entry at `after` has another term: roll back
    TOO_STALE = "too-stale"  # the source no longer has anything at or before `after`
    NOT_SYNCING = "not-syncing"  # the source cannot serve (e.g. it is itself behind the puller)


@quick_init
@dataclass(frozen=True, slots=True)
class MemberPosition:
    """A member's last durable entry, as relayed upstream by UpdatePosition."""

    node: NodeId
    term: int
    index: int

    def validate(self) -> None:
        if not self.node:
            raise ValueError("node must be non-empty")
        _check_non_negative(term=self.term, index=self.index)


@quick_init
@dataclass(frozen=True, slots=True)
class PullRequest:
    """Ask the sync source for entries after (after_term, after_index).

    `request_id` lets the puller match the answer; `wait` asks for a long poll; `stream` asks
    the source to keep the request open after each answer, continuing after the last entry it
    sent (MongoDB 4.4's exhaust cursors: no round trip per batch). The source
    serves only a puller it is ahead of (see PullEngine._accepts), judged by (last_term,
    last_index) as of now: that fresh check is what keeps sync sources from forming a cycle.
    """

    term: int
    after_index: int
    after_term: int
    request_id: int
    wait: bool = True
    last_index: int = 0  # the puller's last entry (after_* is lower while it searches back)
    last_term: int = 0
    stream: bool = False  # keep answering: each batch re-arms the request after it (exhaust)
    overflow: bool = False  # `spread`: the puller found no source with a free slot; admit it

    def continued(self, after_index: int, after_term: int) -> PullRequest:
        """The same request, continuing after (after_term, after_index): a stream re-armed
        after a batch. (Built field by field, which costs half of `dataclasses.replace`: a
        new field must be added here too.)"""
        return PullRequest(
            self.term,
            after_index,
            after_term,
            self.request_id,
            self.wait,
            max(after_index, self.last_index),
            max(after_term, self.last_term),
            self.stream,
            self.overflow,
        )

    def validate(self) -> None:
        _check_non_negative(
            term=self.term,
            after_index=self.after_index,
            after_term=self.after_term,
            request_id=self.request_id,
            last_index=self.last_index,
            last_term=self.last_term,
        )


@quick_init
@dataclass(frozen=True, slots=True)
class PullResponse:
    """A batch (for OK), the source's commit point, and what the puller needs to stay safe.

    For DIVERGED, `hint_index`/`hint_term` name the source's last entry that could match.
    `sync_source` is the source's own source, so the puller can refuse a cycle.
    `prev_index`/`prev_term` echo the point the answer follows (the request's `after`, or a
    stream's continuation point): the puller takes an answer only if it follows exactly the
    point it expects, so a lost, duplicated or late answer can never be mistaken for one.
    """

    term: int
    request_id: int
    status: PullStatus
    entries: tuple[Entry, ...]
    commit: int
    commit_term: int
    rollback_id: int
    last_index: int
    last_term: int
    primary: NodeId | None = None
    sync_source: NodeId | None = None
    hint_index: int = 0
    hint_term: int = 0
    prev_index: int = 0
    prev_term: int = 0
    depth: int | None = None  # the source's hops from the primary (0: it is; None: unknown)
    # How long before this answer the source last heard from `primary` (directly or relayed
    # in turn); None: not vouched for. A chained puller counts it as leader contact.
    primary_contact_age: float | None = None

    def validate(self) -> None:
        if self.depth is not None and self.depth < 0:
            raise ValueError(f"depth must be >= 0, got {self.depth}")
        age = self.primary_contact_age
        if age is not None and not (math.isfinite(age) and age >= 0):
            raise ValueError(f"primary_contact_age must be a finite number >= 0, got {age}")
        _check_non_negative(
            term=self.term,
            request_id=self.request_id,
            commit=self.commit,
            commit_term=self.commit_term,
            rollback_id=self.rollback_id,
            last_index=self.last_index,
            last_term=self.last_term,
            hint_index=self.hint_index,
            hint_term=self.hint_term,
            prev_index=self.prev_index,
            prev_term=self.prev_term,
        )
        expected = self.prev_index + 1
        for entry in self.entries:
            if entry.index != expected:
                raise ValueError("pulled entries must follow prev_index contiguously")
            expected += 1
        for previous, entry in zip(self.entries, self.entries[1:], strict=False):
            if entry.term < previous.term:
                raise ValueError("pulled entries must have non-decreasing terms")


@quick_init
@dataclass(frozen=True, slots=True)
class PullCancel:
    """The puller gave up on a (streaming) request: the source stops answering it."""

    term: int
    request_id: int

    def validate(self) -> None:
        _check_non_negative(term=self.term, request_id=self.request_id)


@quick_init
@dataclass(frozen=True, slots=True)
class UpdatePosition:
    """Durable positions of the sender and everyone syncing from it, sent upstream."""

    term: int
    positions: tuple[MemberPosition, ...]

    def validate(self) -> None:
        _check_non_negative(term=self.term)
        for position in self.positions:
            position.validate()


@quick_init
@dataclass(frozen=True, slots=True)
class StatusProbe:
    """Pull engine's member-to-member heartbeat: liveness, round-trip time, positions.

    Like MongoDB's replSetHeartbeat, every pair of members exchanges probes, so each node
    knows who is up, how far along it is and how far away it is: the sync-source policy's
    inputs. One exchange per pair serves both sides (PullEngine._send_probes).
    `sent_at` is echoed back so the prober measures the round trip with its own clock. It is
    when the probe leaves the sender's capped pipes (handed over, plus the wait behind the bytes
    they already hold: PullEngine._queued_ahead), so the round trip measures distance, not load.
    """

    term: int
    sent_at: float
    last_index: int
    last_term: int
    commit: int
    commit_term: int
    is_primary: bool
    sync_source: NodeId | None = None
    pullers: int = 0  # members holding a slot at the sender (the `spread` policy's input)
    overflow: bool = False  # the sender pulls beyond its source's cap (`spread`)
    # The sender's measured round trip to the receiver (the same path both ways round): the
    # receiver, which skips probing a member that probes it, learns the RTT from this.
    rtt: float | None = None

    def validate(self) -> None:
        if self.rtt is not None and not (math.isfinite(self.rtt) and self.rtt >= 0):
            raise ValueError(f"rtt must be a finite number >= 0, got {self.rtt}")
        _check_non_negative(
            term=self.term,
            last_index=self.last_index,
            last_term=self.last_term,
            commit=self.commit,
            commit_term=self.commit_term,
            pullers=self.pullers,
        )


@quick_init
@dataclass(frozen=True, slots=True)
class StatusReply:
    """Answer to a StatusProbe, echoing `sent_at` plus the wait of this reply in the
    replier's capped pipes (see StatusProbe): the prober's round trip leaves queues out."""

    term: int
    sent_at: float
    last_index: int
    last_term: int
    commit: int
    commit_term: int
    is_primary: bool
    sync_source: NodeId | None = None
    primary: NodeId | None = None
    pullers: int = 0
    overflow: bool = False

    def validate(self) -> None:
        _check_non_negative(
            term=self.term,
            last_index=self.last_index,
            last_term=self.last_term,
            commit=self.commit,
            commit_term=self.commit_term,
            pullers=self.pullers,
        )


# ---- snapshots (both engines) ---------------------------------------------------------------

MAX_SNAPSHOT_CHUNK = 64 << 20  # no chunk is larger; a bigger one is refused when decoded


def _check_chunk(
    index: int, snap_term: int, total_size: int, checksum: int, offset: int, data: bytes, done: bool
) -> None:
    """A chunk is a slice of one snapshot: in range, and `done` exactly when it ends it."""
    if index < 1 or snap_term < 1:
        raise ValueError("a snapshot covers at least entry 1, of a term >= 1")
    if not 0 <= checksum < 1 << 32:
        raise ValueError("checksum must be a CRC-32")
    if len(data) > MAX_SNAPSHOT_CHUNK:
        raise ValueError(f"chunk of {len(data)} bytes exceeds {MAX_SNAPSHOT_CHUNK}")
    end = offset + len(data)
    if end > total_size:
        raise ValueError(f"chunk ends at {end}, past the snapshot's {total_size} bytes")
    if done != (end == total_size):
        raise ValueError("done must be set exactly on the chunk that ends the snapshot")


@quick_init
@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """Push: the leader sends its snapshot (index, snap_term) in chunks; Raft §7.

    Chunks travel in order but may be lost; the follower takes a chunk only at the offset it has
    reached and answers with that offset, which is the leader's window and resume point.
    """

    term: int
    index: int
    snap_term: int
    total_size: int
    checksum: int
    offset: int
    data: bytes
    done: bool

    def validate(self) -> None:
        _check_non_negative(term=self.term, total_size=self.total_size, offset=self.offset)
        if self.snap_term > self.term:
            raise ValueError("snapshot term after the leader's term")
        _check_chunk(
            self.index,
            self.snap_term,
            self.total_size,
            self.checksum,
            self.offset,
            self.data,
            self.done,
        )


@quick_init
@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    """The bytes of snapshot (index, snap_term) the follower holds in order (`offset`).

    `reject`: the completed snapshot did not verify; the leader starts it over. A snapshot that
    was installed is acknowledged with an AppendResponse at its index instead (after it is
    durable), which moves the follower back to log replication.
    """

    term: int
    index: int
    snap_term: int
    offset: int
    reject: bool = False

    def validate(self) -> None:
        _check_non_negative(
            term=self.term, index=self.index, snap_term=self.snap_term, offset=self.offset
        )


@quick_init
@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """Pull: a member too stale for its source copies the source's snapshot (initial sync).

    It asks for the bytes from `offset` of snapshot (index, snap_term); index 0 asks for the
    source's current one. One chunk per request: the puller paces the transfer, and resumes an
    interrupted one (even at another source: the encoding is deterministic) from its offset.
    """

    term: int
    request_id: int
    index: int
    snap_term: int
    offset: int

    def validate(self) -> None:
        _check_non_negative(
            term=self.term,
            request_id=self.request_id,
            index=self.index,
            snap_term=self.snap_term,
            offset=self.offset,
        )


@quick_init
@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """Pull: the source's answer to a SnapshotRequest (its current snapshot when it no longer
    holds the one asked for: then `offset` is 0)."""

    term: int
    request_id: int
    index: int
    snap_term: int
    total_size: int
    checksum: int
    offset: int
    data: bytes
    done: bool

    def validate(self) -> None:
        _check_non_negative(
            term=self.term,
            request_id=self.request_id,
            total_size=self.total_size,
            offset=self.offset,
        )
        _check_chunk(
            self.index,
            self.snap_term,
            self.total_size,
            self.checksum,
            self.offset,
            self.data,
            self.done,
        )


Message = (
    VoteRequest
    | VoteResponse
    | Heartbeat
    | HeartbeatResponse
    | TimeoutNow
    | AppendEntries
    | AppendResponse
    | PullRequest
    | PullResponse
    | UpdatePosition
    | StatusProbe
    | StatusReply
    | PullCancel
    | InstallSnapshot
    | InstallSnapshotResponse
    | SnapshotRequest
    | SnapshotChunk
)

MESSAGE_TYPES: tuple[type[Message], ...] = (
    VoteRequest,
    VoteResponse,
    Heartbeat,
    HeartbeatResponse,
    TimeoutNow,
    AppendEntries,
    AppendResponse,
    PullRequest,
    PullResponse,
    UpdatePosition,
    StatusProbe,
    StatusReply,
    PullCancel,
    InstallSnapshot,
    InstallSnapshotResponse,
    SnapshotRequest,
    SnapshotChunk,
)


@quick_init
@dataclass(frozen=True, slots=True)
class Envelope:
    """A message with its addressing. `src` is authenticated by the transport, not trusted."""

    src: NodeId
    dst: NodeId
    message: Message
