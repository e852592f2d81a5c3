"""Pull replication, MongoDB-style (Zhou & Mu, NSDI '21; mongodb/mongo src/mongo/db/repl).

Theory of operation. The primary only appends to its own log and never sends entries unasked.
Every secondary picks a *sync source* (the primary or a secondary ahead of it: chaining) with
a `SyncSourceSelector` and keeps one `PullRequest(after=(term, index))` outstanding there. The
source answers with the entries that follow, or holds the request as a long poll until it has
some, its commit point moves, or `long_poll_timeout` passes. The puller checks that the batch
follows its own log; if the source's log diverged from its own, it searches back for the last
common entry and rolls back to it (never at or below its commit point: a source that would take
that away is stale and is deny-listed instead).

On capped pipes a source has back-pressure: the runtime's `EgressGauge` (protocols/egress.py)
says how full each pipe towards a puller is, and a source keeps at most a heartbeat interval of
bytes queued there, holding a stream while the pipe is full and sizing batches to a fair share
of the room. Without it a source flooded its uplink, its long-poll answers and heartbeats
waited seconds behind the data, and pullers timed out and pulled the same range again.

Positions travel the other way. After each persist a secondary sends `UpdatePosition` upstream
with its durable (term, index) and the fresh positions of everyone syncing from it, so the
primary learns every position through chains. The primary commits the highest index i such
that a majority reports a durable position whose term is the primary's current term and whose
index is >= i: by log matching such a member holds the primary's prefix. Counting bare indexes
would be MongoDB's SERVER-22136. The commit point flows down on pull answers (trusted once the
batch it came with has been validated, capped at the validated prefix) and on the primary's
heartbeats (trusted only when its term equals the term of the receiver's last entry).

Members probe each other (`StatusProbe`, like replSetHeartbeat) for liveness, positions,
round-trip times, each other's sync sources and puller counts: the selector's inputs; one
exchange per pair and period, rarer where pull traffic already carries them. At rest nothing
is sent twice: a pull answer from the primary is leader contact (the primary heartbeats only
members it has not answered for a heartbeat interval), a source relays its own contact's age
to chained pullers, and heartbeats ask for answers only when a member's positions went quiet. Under
the `spread` policy a source serves at most `max_pullers` members (protocols/pullers.py) unless
a puller says it found no free slot anywhere (see protocols/sync_source.py). Elections are
the shared Raft ones (pre-vote, one vote per term, the election restriction), plus member priorities
(priority 0 never stands; a caught-up member of higher priority than the primary takes over)
and a catch-up phase: a new primary first pulls whatever the freshest member it knows of has,
bounded by `catchup_bound`, then appends a no-op of its term and takes writes. A primary that
has not heard from a majority, directly or through chains, within an election timeout steps down.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field, replace

from protocols.config import Config
from protocols.egress import PipeLoad
from protocols.engine import MemberProgress, Ready
from protocols.events import EventKind
from protocols.messages import (
    Envelope,
    Heartbeat,
    HeartbeatResponse,
    MemberPosition,
    Message,
    PullCancel,
    PullRequest,
    PullResponse,
    PullStatus,
    SnapshotChunk,
    SnapshotRequest,
    StatusProbe,
    StatusReply,
    UpdatePosition,
)
from protocols.pullers import PullerSlots
from protocols.quorum import committed_index, has_quorum
from protocols.replica import ReplicaBase
from protocols.snapshot import Snapshot
from protocols.storage import StoredState
from protocols.sync_source import MemberView, SyncSourceSelector, SyncView
from protocols.types import Entry, NodeId, Position, Role

_ZERO = Position(0, 0)
_RTT_WEIGHT = 0.2  # exponentially weighted moving average of measured round trips
_PULL_RETRIES = 2  # consecutive timed-out pulls before a source is dropped
SOURCE_HISTORY = 256  # sync-source decisions kept in PullStats.history


@dataclass(slots=True)
class _Member:
    """What this node knows about another member, from probes, pulls and heartbeats."""

    position: Position = _ZERO
    last_heard: float = -math.inf
    rtt: float | None = None
    sync_source: NodeId | None = None
    pullers: int = 0
    overflow: bool = False
    probed_us: float = -math.inf  # when its last StatusProbe came
    probed_at: float = -math.inf  # when we last probed it
    steady: bool = False  # its last probe or reply showed the same status as the one before


@dataclass(slots=True)
class _Pull:
    """The one PullRequest this node has outstanding."""

    request_id: int
    source: NodeId
    sent_at: float
    after_index: int
    after_term: int


@dataclass(slots=True)
class _Fetch:
    """A snapshot this member copies from its source because it is too stale for it.

    The identity (index, term, size, checksum) is learned from the first chunk; the bytes are
    kept across a failed source, so another source holding the same snapshot resumes them.
    """

    source: NodeId | None  # None: no request out (the source failed; the next one resumes)
    request_id: int
    sent_at: float
    index: int = 0
    term: int = 0
    total_size: int = 0
    checksum: int = 0
    received: bytearray = field(default_factory=bytearray)


@dataclass(slots=True)
class _Held:
    """A long poll this node holds for a puller."""

    src: NodeId
    request: PullRequest
    deadline: float
    commit_seen: int


@dataclass(slots=True)
class _CatchUp:
    """A new primary's catch-up (MongoDB's CatchupState).

    First the target is unknown: the primary heartbeats everyone and collects the positions in
    the answers; once a majority (itself included) has answered, the target is the freshest
    position among them. Then it pulls from that member until it reaches the target, or gives
    up at `deadline`, and only then writes its no-op and takes writes.
    """

    deadline: float
    responses: dict[NodeId, Position] = field(default_factory=dict)
    target: Position | None = None
    source: NodeId | None = None


@dataclass(slots=True)
class PullStats:
    """Counters for metrics and tests."""

    rollbacks: int = 0
    entries_rolled_back: int = 0
    source_changes: int = 0
    stale_sources_refused: int = 0
    catchups: int = 0
    pulls_sent: int = 0
    pulls_timed_out: int = 0
    snapshot_fetches: int = 0  # too stale for a source: copied its snapshot (initial sync)
    snapshot_chunks_served: int = 0
    pullers_refused: int = 0  # `spread`: pull requests refused because every slot was taken
    batches_cut: int = 0  # answers holding fewer entries than we had: a capped pipe was full
    # The latest sync-source decisions (time, source, why), oldest first: a bounded window, so
    # a member whose source flaps for hours holds the same memory as one that chose once.
    history: deque[tuple[float, NodeId | None, str]] = field(
        default_factory=lambda: deque(maxlen=SOURCE_HISTORY)
    )


class PullEngine(ReplicaBase):
    """MongoDB-style pull replication with chaining, on the shared Raft core."""

    protocol = "pull"

    def __init__(self, config: Config, stored: StoredState, rng: random.Random, now: float):
        # Secondaries pull; a dry run (pre-vote) does not change that, as in MongoDB. True
        # while the role is FOLLOWER or PRE_CANDIDATE: a plain attribute, set by each role
        # change below before the shared code switches the role (read on every step).
        self._syncing = True  # (the shared constructor starts as a FOLLOWER)
        super().__init__(config, stored, rng, now)
        self._selector = SyncSourceSelector(
            config.sync.effective(config.election_timeout),
            random.Random(rng.getrandbits(64)),
            election_timeout=config.election_timeout,
        )
        self._info: dict[NodeId, _Member] = {peer: _Member() for peer in self.peers}
        self._probe_interval = config.election_timeout / 5  # MongoDB: 2 s against 10 s
        self._keepalive_interval = config.election_timeout / 4
        self._next_probe = now
        self._timer_slack = config.long_poll_timeout / 2  # see `tick`
        # Fixed by the configuration; read by `next_deadline`, which runs after every step.
        self._long_poll = config.long_poll_timeout
        self._streaming = config.pull_streaming
        self._failure_after = config.long_poll_timeout + 2 * config.heartbeat_interval
        self.stats = PullStats()
        # Puller side.
        self._pull: _Pull | None = None
        self._fetch: _Fetch | None = None  # a snapshot being copied (instead of pulling)
        self._next_request_id = 1
        self._pull_retry_at = now
        self._failed_pulls = 0
        self._next_source_check = now
        self._looking_since: float | None = None  # being added: when the primary was first known
        self._established = False  # the chosen source has served us since it was chosen
        self._established_at = -math.inf
        self._probe_point: int | None = None  # divergence search: pull after this index
        self._source_rollback_id: int | None = None
        self._downstream: dict[NodeId, tuple[Position, float]] = {}
        self._reported: Position | None = None  # last position sent upstream (durable when sent)
        self._positions_dirty = False
        self._next_keepalive = now
        self._depth: int | None = None  # our source's depth + 1, from its last answer
        # Source side.
        self._held: dict[NodeId, _Held] = {}
        # Back-pressure on capped pipes (protocols/egress.py): a source queues at most a
        # send horizon's worth of bytes in a pipe, so what it sends after (heartbeats,
        # long-poll answers, position reports) waits at most that long behind bulk data,
        # well within a pull's failure timeout (`_failure_after`). A heartbeat interval
        # keeps the pipe busy across a loaded host's scheduling delays.
        self._send_horizon = config.heartbeat_interval
        self._charged: dict[Hashable, float] = {}  # batch bytes handed over, not yet sent
        self._recheck_at = math.inf  # when a stream held back by a full pipe is looked at
        self._serving: dict[NodeId, Snapshot] = {}  # snapshots being copied from us
        self._served_bytes: dict[NodeId, int] = {}  # how far each copy got (for /status)
        self._pullers = PullerSlots(
            self._selector.settings.puller_cap, self._selector.silence_limit
        )
        # Primary side.
        self._positions: dict[NodeId, Position] = {}
        self._heard: dict[NodeId, float] = {}
        self._commit_moved = False
        self._commit_basis = -1  # our durable index when `_advance_commit` last ran (-1: never)
        self._catchup: _CatchUp | None = None
        self._next_heartbeat = now
        self._next_liveness_check = now
        # When each member last got a message from us that counts as leader contact (a
        # heartbeat, or an answer to its pull): a heartbeat goes only to members without one
        # for a heartbeat interval, so a member pulling from us gets none while its stream flows.
        self._contact_sent: dict[NodeId, float] = {}
        self._relayed_at: dict[NodeId, float] = {}  # chained members: their positions came relayed

    # ---- what callers read -----------------------------------------------------------------

    def _sync_source(self) -> NodeId | None:
        """The source we pull from, once it has served us (a chosen one may still refuse)."""
        if not self._established:  # (first: the simulator asks after every step)
            return None
        return self._selector.source if self._syncing else None

    def _sync_depth(self) -> int | None:
        """Hops from the primary to us: 0 for the primary, None while we have no source."""
        if self._role is Role.LEADER:
            return 0
        return self._depth if self._sync_source() is not None else None

    def _overflowing(self) -> bool:
        """Do we pull beyond our source's cap (`spread`: no source had a free slot)?"""
        return self._selector.overflow and self._sync_source() is not None

    def pullers(self) -> tuple[NodeId, ...]:
        """The members holding a slot here (`spread`; others: those recently admitted)."""
        return self._pullers.pullers(self._now)

    @property
    def sync_source_since(self) -> float:
        """When the current sync source first served us (for cycle checks across restarts)."""
        return self._established_at

    def _peers_seen(self) -> tuple[NodeId, ...]:
        horizon = self._now - self.config.election_timeout
        info = self._info
        return tuple(p for p in self.peers if p in info and info[p].last_heard >= horizon)

    @property
    def selector(self) -> SyncSourceSelector:
        return self._selector

    @property
    def catching_up(self) -> bool:
        return self._catchup is not None

    def durable_position(self) -> Position:
        stable = self.log.stable_index
        return Position(self.log.term_at(stable) or 0, stable)

    def next_deadline(self) -> float:
        # The earliest timer, compared one by one with the helpers inlined (no tuples, no
        # method calls): the simulator asks after every step.
        deadline = self._next_probe
        if self._held:
            deadline = min(deadline, self._recheck_at)
            for held in self._held.values():
                deadline = min(deadline, held.deadline)
        role = self._role
        if role is Role.LEADER:
            deadline = min(deadline, self._next_heartbeat)
            deadline = min(deadline, self._next_liveness_check)
            catchup = self._catchup
            if catchup is not None:
                deadline = min(deadline, catchup.deadline, self._pull_deadline())
        elif self._syncing:
            now = self._now
            # The periodic source check (`_next_source_check`) sets no timer of its own: it
            # runs at the next wake-up after it is due (a pull answer comes at least every
            # long poll, a probe or keepalive sooner; a silent source fails by the pull
            # timeout), which at rest halves the timer wake-ups of a secondary.
            deadline = min(deadline, self._election_deadline)
            # (`_pull_deadline`, inlined)
            fetch, pull = self._fetch, self._pull
            if fetch is not None and fetch.source is not None:
                pull_deadline = fetch.sent_at + self._failure_after
            elif pull is None:
                # A due retry happens in the next ready(), not in tick(): no timer for it.
                retry = self._pull_retry_at
                pull_deadline = retry if retry > now else math.inf
            else:
                pull_deadline = pull.sent_at + self._failure_after
            deadline = min(deadline, pull_deadline)
            # Follower timers are skipped by a tick in which the election timer fires (after
            # a long stall, e.g. SIGSTOP), so one may already be due: it then runs at the
            # next tick (the probe timer guarantees one) instead of pinning the deadline
            # in the past.
            if self._selector.source is not None:
                # The keepalive timer. While a stream is open its answers (one per long
                # poll at least) wake us anyway, and the report goes with the first one after
                # it is due (`_flush`): the timer is then a backstop, one long poll later.
                keepalive = self._next_keepalive
                if pull is not None and self._streaming:
                    keepalive += self._long_poll
                if now < keepalive < deadline:
                    deadline = keepalive
            takeover = self._takeover_at
            if takeover is not None and now < takeover < deadline:
                deadline = takeover
        else:
            deadline = min(deadline, self._election_deadline)
        return deadline

    def _pull_deadline(self) -> float:
        fetch = self._fetch
        if fetch is not None and fetch.source is not None:
            return fetch.sent_at + self._failure_after
        if self._pull is None:
            # A due retry happens in the next ready(), not in tick(): no timer for it.
            return self._pull_retry_at if self._pull_retry_at > self._now else math.inf
        return self._pull.sent_at + self._failure_after

    # ---- timers ------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        # When a timer of ours is due, the probe timer, if due within `_timer_slack`, runs
        # with it rather than wake the node again (keeping its grid: no more probes), and a
        # long poll that expires answers those expiring within the slack too: at rest a
        # primary's polls, one per puller, fall into one rhythm. A tick with nothing due (a
        # harness may give them) runs nothing early, and polls keep their length.
        soon = now + self._timer_slack if now >= self.next_deadline() else now
        self._now = now
        if soon >= self._next_probe:
            self._next_probe += self._probe_interval
            if self._next_probe <= now:  # a stall (SIGSTOP, a loaded host): start afresh
                self._next_probe = now + self._probe_interval
            self._send_probes(now)
        if now >= self._recheck_at:
            self._recheck_at = math.inf  # the next flush looks at the held streams again
        self._expire_held(now, soon)
        self._check_pull_timeout(now)
        super().tick(now)

    def _check_pull_timeout(self, now: float) -> None:
        fetch = self._fetch
        if fetch is not None and fetch.source is not None:
            if now >= fetch.sent_at + self._failure_after:
                # The source stopped answering: choose another one; if that one says we are
                # too stale for it too, the copy resumes there.
                self.stats.pulls_timed_out += 1
                self._abandon_source(
                    now, "snapshot copy timed out", self._selector.settings.deny_seconds
                )
            return
        pull = self._pull
        if pull is None or now < pull.sent_at + self._failure_after:
            return
        self.stats.pulls_timed_out += 1
        self._cancel_pull()
        if self._catchup is not None:
            self._catchup.source = None  # a catching-up primary gives up on it (deadline ends it)
            return
        self._failed_pulls += 1
        if self._failed_pulls >= _PULL_RETRIES:
            # Like MongoDB's oplog fetcher: one restart against the same source, then it is
            # considered failed and deny-listed.
            self._failed_pulls = 0
            self._abandon_source(now, "pull timed out", self._selector.settings.deny_seconds)
        else:
            self._pull_retry_at = now

    def _tick_follower(self, now: float) -> None:
        if not self._syncing:
            return
        if self._selector.source is not None and now >= self._next_keepalive:
            self._next_keepalive = now + self._keepalive_interval
            self._positions_dirty = True
        self._maybe_priority_takeover(now)

    def _tick_leader(self, now: float) -> None:
        if now >= self._next_heartbeat:
            self._send_due_heartbeats(now)
        if now >= self._next_liveness_check:
            self._next_liveness_check = now + self.config.election_timeout
            horizon = now - self.config.election_timeout
            reachable = {self.node_id} | {n for n, t in self._heard.items() if t >= horizon}
            if self.config.check_quorum and not has_quorum(reachable, self.voters):
                self._become_follower(self._term, None, now)
                return
        if self._catchup is not None:
            self._continue_catchup(now)

    def _send_probes(self, now: float) -> None:
        """Probe the members whose turn it is: one exchange per pair and period.

        A probe tells its receiver all the reply would (and our RTT to it) and the reply tells
        us all about it, so one exchange serves both sides: the member with the lower id
        probes, the other only when those probes stop coming. The period (`_probe_period`)
        stretches where other traffic already carries the status.
        """
        last = self.log.last_position
        probe = StatusProbe(
            self._term,
            now,
            last.index,
            last.term,
            self._commit,
            self.log.term_at(self._commit) or 0,
            self._role is Role.LEADER,
            self._sync_source(),
            self._pullers.count(now),
            self._overflowing(),
        )
        slack = self._probe_interval / 2
        for peer in self._probe_targets():
            info = self._member(peer)
            period = self._probe_period(peer, info, now)
            paired = peer < self.node_id and bool(self.members)  # a newcomer measures itself
            if paired and now - info.probed_us < period + slack:
                continue  # it probes this pair, and its probes come
            if now - info.probed_at < period - slack:
                continue
            info.probed_at = now
            message = probe if info.rtt is None else replace(probe, rtt=info.rtt)
            queued = self._queued_ahead(peer)
            if queued > 0.0:  # dated when it leaves our pipes: see `_queued_ahead`
                message = replace(message, sent_at=now + queued)
            self._send(peer, message)

    def _queued_ahead(self, dst: NodeId) -> float:
        """Seconds a message handed over now waits in our capped pipes towards `dst` behind
        what they already hold (0: uncapped or idle).

        A probe and its reply are timed without this wait (the probe is dated when it leaves
        our pipes, a reply adds its own wait to the echoed time), so the round trip the
        sync-source policies compare is the distance between two members, not how much bulk
        data one of them is streaming. Counting the queue made a busy source look far away
        (up to a send horizon, 200 ms in geo-bandwidth): pullers left it as `closer-member`
        for an idle one, even in another region, whose pipe then filled in turn, and trees
        settled with two copies through one pipe once the change budget was spent.
        """
        gauge = self.egress_gauge
        if gauge is None:
            return 0.0
        charged = self._charged
        wait = 0.0
        for load in gauge.pipe_loads(dst, self._now):
            wait = max(wait, load.queued + charged.get(load.key, 0.0) / load.rate)
        return wait

    def _probe_period(self, peer: NodeId, info: _Member, now: float) -> float:
        """How often a pair exchanges probes: less often where their content is known.

        Our sync source and our pullers are heard on every pull answer and position report,
        which carry positions, sources and liveness: a probe once per election timeout keeps
        their RTT and slot counts current. A member whose last status equalled the one before
        (an idle cluster) is probed every other interval: still twice per election timeout,
        the silence that makes it unusable as a source. Any change restores the interval.
        """
        linked = peer == self._sync_source() or peer in self._held
        if linked and now - info.last_heard < 2 * self._keepalive_interval:
            return self.config.election_timeout
        return 2 * self._probe_interval if info.steady else self._probe_interval

    # ---- one door: messages ------------------------------------------------------------------

    def _on_stale_message(self, src: NodeId, message: Message, now: float) -> None:
        """Data and status flow regardless of terms; answering tells the sender our term."""
        if isinstance(message, (PullRequest, StatusProbe, UpdatePosition, SnapshotRequest)):
            self._step(src, message, now)
        else:
            super()._on_stale_message(src, message, now)

    def _step(self, src: NodeId, message: Message, now: float) -> None:
        match message:
            case PullRequest():
                self._serve_pull(src, message, now)
            case PullCancel():
                held = self._held.get(src)
                if held is not None and held.request.request_id == message.request_id:
                    del self._held[src]
                    self._pullers.release(src)  # it closed the stream it held a slot for
            case PullResponse():
                if message.primary == src and self._role is not Role.LEADER:
                    # An answer from the primary itself, in our term: leader contact, as a
                    # heartbeat would be (the primary sends none while our stream flows).
                    self._heard_from_leader(src, now)
                    self._leader_last = Position(message.last_term, message.last_index)
                else:
                    self._relayed_leader_contact(src, message, now)
                self._handle_pull_response(src, message, now)
            case SnapshotRequest():
                self._serve_snapshot(src, message)
            case SnapshotChunk():
                self._handle_snapshot_chunk(src, message, now)
            case UpdatePosition():
                self._handle_update_position(src, message, now)
            case StatusProbe():
                member = self._heard_status(src, message, now)
                member.probed_us = now
                if message.rtt is not None:
                    member.rtt = message.rtt  # its measure of the round trip we share
                last = self.log.last_position
                self._send(
                    src,
                    StatusReply(
                        self._term,
                        message.sent_at + self._queued_ahead(src),
                        last.index,
                        last.term,
                        self._commit,
                        self.log.term_at(self._commit) or 0,
                        self._role is Role.LEADER,
                        self._sync_source(),
                        self._leader,
                        self._pullers.count(now),
                        self._overflowing(),
                    ),
                )
            case StatusReply():
                member = self._heard_status(src, message, now)
                sample = max(0.0, now - message.sent_at)
                member.rtt = (
                    sample
                    if member.rtt is None
                    else ((1 - _RTT_WEIGHT) * member.rtt + _RTT_WEIGHT * sample)
                )
            case Heartbeat():
                self._handle_heartbeat(src, message, now)
            case HeartbeatResponse():
                if self._role is Role.LEADER:
                    position = Position(message.last_term, message.last_index)
                    self._heard[src] = now
                    self._record_position(src, position)
                    self._heard_member(src, now, None)
                    if self._catchup is not None:
                        self._catchup_heard(src, position, now)
                    if message.ctx:
                        self._reads.ack(message.ctx, src, self.voters)
            case _:
                pass  # push-only messages have no meaning here

    def _relayed_leader_contact(self, src: NodeId, message: PullResponse, now: float) -> None:
        """Our source vouches that it heard from our leader `age` ago: leader contact then.

        Like MongoDB's oplog fetcher, which resets the election timer on a sync source's
        metadata naming a primary; here the contact is dated back by the source's own age of
        it, so the timer and the lease run from when the primary was last heard, never later.
        The primary heartbeats chained members only every keepalive interval meanwhile.
        """
        age = message.primary_contact_age
        if (
            age is None
            or self._role is not Role.FOLLOWER
            or message.primary is None
            or message.primary != self._leader
            or src != self._selector.source
        ):
            return
        contact = now - age
        if contact > self._last_leader_contact:
            self._last_leader_contact = contact
            self._reset_election_timer(contact)

    def _heard_status(self, src: NodeId, message: StatusProbe | StatusReply, now: float) -> _Member:
        member = self._member(src)
        position = Position(message.last_term, message.last_index)
        status = (position, message.sync_source, message.pullers, message.overflow)
        member.steady = status == (
            member.position,
            member.sync_source,
            member.pullers,
            member.overflow,
        )
        self._heard_member(src, now, position)
        member.sync_source = message.sync_source
        member.pullers, member.overflow = message.pullers, message.overflow
        if not self.members and self._selector.source is None:
            self._next_source_check = now  # being added: this may end its wait (see below)
        return member

    def _member(self, peer: NodeId) -> _Member:
        """What we know of `peer` (a member added since we started, or the leader that adds
        us, starts unknown)."""
        member = self._info.get(peer)
        if member is None:
            member = self._info[peer] = _Member()
        return member

    def _heard_member(self, src: NodeId, now: float, position: Position | None) -> _Member:
        member = self._member(src)
        member.last_heard = now
        if position is not None:
            member.position = position
        return member

    # ---- source side: serving pulls ------------------------------------------------------------

    def _accepts(self, src: NodeId, request: PullRequest) -> bool:
        """May `src` sync from us right now? Judged with our own, current state.

        The primary serves anyone. A member serves a puller it is strictly ahead of, or any
        puller while it syncs straight from the primary itself. A member never serves its own
        sync source. Why no cycle can form: along an edge accepted for being strictly ahead,
        the puller never overtakes its source (it gets entries only from it); an edge into a
        member that syncs from the primary ends a chain, since the primary pulls from nobody,
        and that member releases its pullers (`_recheck_held`) the moment it changes source.
        Under `spread` a puller must also hold one of our slots (`PullerSlots`, taken in
        `_serve_pull`, checked in `_decide`): a cap refuses, it never adds an edge.
        """
        if self._role is Role.LEADER:
            return True
        if src == self._selector.source:
            return False
        log = self.log  # (Position order, on plain tuples: asked for every held poll per step)
        if (log.last_term, log.last_index) > (request.last_term, request.last_index):
            return True
        return (
            self._established
            and self._leader is not None
            and (self._selector.source == self._leader)
        )

    def _recheck_held(self) -> None:
        """Our state changed (new source, rollback): release pullers we may no longer serve."""
        for src, held in list(self._held.items()):
            if not self._accepts(src, held.request):
                del self._held[src]
                self._answer_pull(src, held.request, PullStatus.NOT_SYNCING)

    def _decide(
        self, src: NodeId, request: PullRequest, final: bool, commit_seen: int | None
    ) -> tuple[PullStatus, int] | None:
        """How to answer `request` now, or None to keep holding it (long poll)."""
        if not self._accepts(src, request):
            return PullStatus.NOT_SYNCING, 0
        if self._pullers.limit is not None and not self._pullers.holds(src, self._now):
            # `spread`: its slot expired (it went quiet) or it never got one: a full source
            # refuses it as it refuses a would-be cycle, and a stream to it ends here.
            return PullStatus.NOT_SYNCING, 0
        after, after_term = request.after_index, request.after_term
        log = self.log
        if after < log.snapshot_index:
            # We compacted what follows its point: it must copy our snapshot (initial sync).
            return PullStatus.TOO_STALE, 0
        ours = log.term_at(after)
        last = log.last_index
        if ours is None and (log.last_term, last) <= (after_term, after):
            # We lack the puller's point but may get it from our own source: wait for it.
            return (PullStatus.NOT_SYNCING, 0) if final else None
        if ours != after_term:
            # Shorter but newer (a higher last term), or another entry at `after`: the puller
            # holds entries we do not, and must search back for our common point.
            return PullStatus.DIVERGED, log.conflict_hint(after, after_term)
        if not final and last > after and self._pipe_full(src, after):
            return None  # like a full socket buffer: send once the pipe has drained
        if final or last > after or self._commit != commit_seen:
            return PullStatus.OK, 0
        return None

    def _room(self, dst: NodeId) -> tuple[float, list[PipeLoad]] | None:
        """Bytes we may still queue towards `dst` within the send horizon; None: uncapped.

        The narrowest pipe decides, counting what we handed over since our last Ready was
        sent (the gauge sees only what the runtime has scheduled).
        """
        gauge = self.egress_gauge
        if gauge is None:
            return None
        loads = list(gauge.pipe_loads(dst, self._now))
        if not loads:
            return None
        horizon, charged = self._send_horizon, self._charged
        room = min((horizon - p.queued) * p.rate - charged.get(p.key, 0.0) for p in loads)
        return room, loads

    def _pipe_full(self, dst: NodeId, after: int) -> bool:
        """Would the next entry after `after` overfill a capped pipe towards `dst`?"""
        measured = self._room(dst)
        if measured is None or after < self.log.snapshot_index:
            return False
        if measured[0] >= self.log.entry(after + 1).command.payload_size():
            return False
        # Drains at the pipes' rate: look again after a quarter of the horizon.
        self._recheck_at = min(self._recheck_at, self._now + self._send_horizon / 4)
        return True

    def _batch(self, src: NodeId, after: int) -> tuple[Entry, ...]:
        """The entries for a pull answer: a fair share of what the pipes towards `src` take."""
        limit: float = self.config.max_batch_bytes
        measured = self._room(src)
        if measured is not None:
            room = measured[0]
            if room < self.log.entry(after + 1).command.payload_size():
                self.stats.batches_cut += 1
                return ()  # a long-poll answer to a full pipe carries no entries
            last = self.log.last_index
            wanting = 1 + sum(1 for h in self._held.values() if last > h.request.after_index)
            limit = min(limit, room / wanting)
        entries = tuple(self.log.batch_after(after, self.config.max_batch_entries, int(limit)))
        if measured is not None:
            available = min(self.log.last_index - after, self.config.max_batch_entries)
            if limit < self.config.max_batch_bytes and len(entries) < available:
                self.stats.batches_cut += 1
            size = float(sum(e.command.payload_size() for e in entries))
            for load in measured[1]:
                self._charged[load.key] = self._charged.get(load.key, 0.0) + size
        return entries

    def advance(self, ready: Ready) -> None:
        super().advance(ready)
        self._charged.clear()  # sent: the gauge now sees those bytes in the pipes

    def _serve_pull(self, src: NodeId, request: PullRequest, now: float) -> None:
        self._held.pop(src, None)  # a new request replaces a held one
        # A puller we would serve takes (or keeps) a slot; beyond `spread`'s cap only one that
        # found no free slot anywhere gets in. Refused ones get NOT_SYNCING from `_decide`.
        if self._accepts(src, request) and not self._pullers.admit(
            src, now, overflow=request.overflow
        ):
            self.stats.pullers_refused += 1
        decision = self._decide(src, request, final=not request.wait, commit_seen=self._commit)
        if decision is None:
            self._hold(src, request)
        else:
            self._answer_pull(src, request, *decision)

    def _hold(self, src: NodeId, request: PullRequest) -> None:
        deadline = self._now + self._long_poll
        self._held[src] = _Held(src, request, deadline, self._commit)

    def _answer_pull(
        self, src: NodeId, request: PullRequest, status: PullStatus, hint: int = 0
    ) -> None:
        entries: tuple[Entry, ...] = ()
        if status is PullStatus.NOT_SYNCING:
            self._pullers.release(src)  # refused: it will look elsewhere
        if status is PullStatus.OK and self.log.last_index > request.after_index:
            entries = self._batch(src, request.after_index)
        if status is PullStatus.OK and request.stream:
            # Exhaust mode: the request stays open, continuing after what we just sent.
            sent = entries[-1] if entries else None
            after = (sent.index, sent.term) if sent else (request.after_index, request.after_term)
            following = request.continued(*after)
            self._hold(src, following)
        log = self.log
        last = log.last_position
        now = self._now
        contact_age: float | None = None
        primary: NodeId | None
        source: NodeId | None
        depth: int | None
        if self._role is Role.LEADER:  # (`_sync_source()` and `_sync_depth()`, inlined)
            primary, source, depth = self.node_id, None, 0
            if self._heard.get(src, -math.inf) > now - 2 * self._keepalive_interval:
                # Its heartbeat waits; one whose positions stopped coming keeps getting them
                # (asking for answers: our check-quorum must still see it).
                self._contact_sent[src] = now
        else:
            primary = self._leader
            source = self._sync_source()
            depth = self._depth if source is not None else None
            if primary is not None and self._last_leader_contact > -math.inf:
                contact_age = max(0.0, now - self._last_leader_contact)
        commit = self._commit
        self._send(
            src,
            PullResponse(
                term=self._term,
                request_id=request.request_id,
                status=status,
                entries=entries,
                commit=commit,
                commit_term=log.term_at(commit) or 0,
                rollback_id=self._rollback_id,
                last_index=last.index,
                last_term=last.term,
                primary=primary,
                sync_source=source,
                hint_index=hint,
                hint_term=log.term_at(hint) or 0 if hint else 0,
                prev_index=request.after_index,
                prev_term=request.after_term,
                depth=depth,
                primary_contact_age=contact_age,
            ),
        )

    def _expire_held(self, now: float, soon: float) -> None:
        """Answer the long polls whose time is up and, if there are any, those due by `soon`
        (see `tick`): an answer a little early is an empty batch, and the polls it re-arms
        expire together."""
        if not any(now >= held.deadline for held in self._held.values()):
            return
        for src, held in list(self._held.items()):
            if now >= held.deadline:
                self._release_held(src, held, final=True)
            elif soon >= held.deadline:
                decision = self._decide(src, held.request, True, held.commit_seen)
                if decision is not None and decision[0] is PullStatus.OK:  # refusals wait
                    del self._held[src]
                    self._answer_pull(src, held.request, *decision)

    def _answer_ready_polls(self) -> None:
        """Long polls that can be answered: entries arrived or the commit point moved."""
        if not self._held:
            return
        for src, held in list(self._held.items()):
            decision = self._decide(src, held.request, False, held.commit_seen)
            if decision is not None:
                del self._held[src]
                self._answer_pull(src, held.request, *decision)

    def _release_held(self, src: NodeId, held: _Held, final: bool) -> None:
        decision = self._decide(src, held.request, final, held.commit_seen)
        if decision is not None:
            del self._held[src]
            self._answer_pull(src, held.request, *decision)

    def _polls_answerable(self) -> bool:
        if not self._held:
            return False
        last, commit = self.log.last_index, self._commit
        for src, held in self._held.items():
            request = held.request
            if (last > request.after_index or commit != held.commit_seen) and self._decide(
                src, request, False, held.commit_seen
            ) is not None:
                return True
        return False

    # ---- puller side ---------------------------------------------------------------------------

    def _view(self, now: float) -> SyncView:
        primary = self.node_id if self._role is Role.LEADER else self._leader
        # Sources come from the configuration in force, plus the primary: a member that is
        # being added knows no configuration until it pulls one from there.
        candidates = self.peers if self.members else self._heard_address_book()
        if primary is not None and primary != self.node_id and primary not in candidates:
            candidates = (*candidates, primary)
        unknown = _Member()
        members = tuple(
            MemberView(
                peer,
                info.position,
                info.last_heard,
                rtt=info.rtt,
                sync_source=info.sync_source,
                pullers=info.pullers,
                overflow=info.overflow,
            )
            for peer in candidates
            for info in (self._info.get(peer, unknown),)
        )
        return SyncView(self.node_id, self.log.last_position, primary, members, now)

    # A member being added holds no configuration until its first sync brings one, so it knows
    # only the primary (whose contact told it it was added). The members of the configuration
    # that added it probe it, though (members probe their configuration's peers): those are
    # its candidates too (they probe a member as soon as it is added), and it probes them back
    # to measure their round trips. Its first choice waits until all it heard from are
    # measured, or one probe interval after the first contact, so that `nearest` can pick a
    # nearby member for the initial sync instead of the primary (MongoDB's new member likewise
    # learns the set and its ping times from heartbeats before choosing). Any source is safe:
    # its answers are checked alike.

    def _heard_address_book(self) -> tuple[NodeId, ...]:
        """Nodes of the start-up address book that sent us their status (being added)."""
        return tuple(
            peer
            for peer in self.config.members
            if peer != self.node_id
            and (info := self._info.get(peer)) is not None
            and info.last_heard > -math.inf
        )

    def _probe_targets(self) -> tuple[NodeId, ...]:
        return self.peers if self.members else self._heard_address_book()

    def _awaiting_members(self, now: float) -> bool:
        """Being added, before the first choice: wait for a measured member (see above)."""
        if self.members or self._selector.source is not None:
            return False
        if self.config.sync.policy in ("primary", "fixed"):
            return False
        heard = self._heard_address_book()
        if not heard and self._leader is None:
            return False  # nobody to choose from, nothing to wait for
        if self._looking_since is None:
            self._looking_since = now
        until = self._looking_since + self._probe_interval
        if now >= until or (heard and all(self._info[p].rtt is not None for p in heard)):
            return False
        self._send_probes(now)  # those heard and not yet probed, now
        # Nothing to do until then (or until a probe answer comes): no pending flush meanwhile.
        self._pull_retry_at = max(self._pull_retry_at, until)
        self._next_source_check = max(self._next_source_check, until)
        return True

    def _maybe_pull(self, now: float) -> None:
        """Keep one pull (or stream) open at the chosen source; re-check the choice now and then.

        The source is re-evaluated at most once per heartbeat interval (doing it per batch
        would cost more than the answer is worth).
        """
        if not self._syncing or (not self.members and self._awaiting_members(now)):
            return  # (a member of the configuration never waits: checked first, per step)
        previous = self._selector.source
        if previous is None or now >= self._next_source_check:
            self._next_source_check = now + self.config.heartbeat_interval
            decision = self._selector.update(self._view(now), record=False)
            if decision.source != previous:
                self._cancel_pull()  # abandon the request (or stream) to the old source
                why = str(decision.reason or "chosen")
                if self._selector.overflow:
                    why += ", overflow"  # `spread`: no source had a free slot
                self._source_changed(now, decision.source, why)
        source = self._selector.source
        if source is None:
            self._pull_retry_at = max(self._pull_retry_at, now + self.config.heartbeat_interval)
            return
        fetch = self._fetch
        if fetch is not None and fetch.source is not None:
            return  # a copy is under way (a source that says too-stale resumes it: _start_fetch)
        if self._pull is None and now >= self._pull_retry_at:
            self._send_pull(source, now)

    def _source_changed(self, now: float, source: NodeId | None, why: str) -> None:
        self.stats.source_changes += 1
        if self._fetch is not None:
            self._fetch.source = None  # pull at the new source; it may have what we need
        self._failed_pulls = 0
        self._established = False
        self._depth = None
        self._recheck_held()
        self.stats.history.append((now, source, why))
        self._event(EventKind.SOURCE_CHANGED, f"{source} ({why})")
        self._probe_point = None
        self._source_rollback_id = None
        self._reported = None  # tell the new source where we are at once
        self._positions_dirty = source is not None
        if source is not None:
            # Pull at once: the retry timer only paces the search while no source is usable,
            # and waiting it out would delay a new primary's first commit by up to a heartbeat.
            self._pull_retry_at = now

    def _cancel_pull(self) -> None:
        """Forget the open request, and close it at the source if it streams."""
        pull = self._pull
        if pull is not None and self.config.pull_streaming:
            self._send(pull.source, PullCancel(self._term, pull.request_id))
        self._pull = None

    def _send_pull(self, source: NodeId, now: float) -> None:
        after = self.log.last_index if self._probe_point is None else self._probe_point
        after_term = self.log.term_at(after) or 0
        request_id = self._next_request_id
        self._next_request_id += 1
        self._pull = _Pull(request_id, source, now, after, after_term)
        self.stats.pulls_sent += 1
        last = self.log.last_position
        request = PullRequest(
            self._term,
            after,
            after_term,
            request_id,
            last_index=last.index,
            last_term=last.term,
            stream=self.config.pull_streaming,
            # A catching-up primary must get what it needs, however full the source is.
            overflow=self._selector.overflow or self._catchup is not None,
        )
        self._send(source, request)

    def _abandon_source(self, now: float, reason: str, deny_seconds: float) -> None:
        self._cancel_pull()
        if self._fetch is not None:
            self._fetch.source = None  # the copy resumes at the next source (same snapshot)
        source = self._selector.drop(now, deny_seconds=deny_seconds, reason=reason)
        self._established = False
        self._depth = None
        self._recheck_held()
        if self._catchup is not None and self._catchup.source == source:
            self._catchup.source = None
        self.stats.history.append((now, None, f"dropped {source}: {reason}"))
        self._event(EventKind.SOURCE_CHANGED, f"None (dropped {source}: {reason})")
        self._probe_point = None
        self._source_rollback_id = None
        self._pull_retry_at = now

    def _handle_pull_response(self, src: NodeId, response: PullResponse, now: float) -> None:
        member = self._heard_member(src, now, Position(response.last_term, response.last_index))
        member.sync_source = response.sync_source
        pull = self._pull
        if pull is None or pull.request_id != response.request_id or pull.source != src:
            if response.status is PullStatus.OK:
                # An answer we no longer wait for: if it is a stream, close it at the source.
                self._send(src, PullCancel(self._term, response.request_id))
            return
        self._pull = None
        self._failed_pulls = 0
        if not (self._syncing or self._catchup is not None):
            return
        if (response.prev_index, response.prev_term) != (pull.after_index, pull.after_term):
            # Not an answer to the point we asked about: a streamed batch went missing (or
            # arrived twice, or late). Open a new request from where we are.
            self._pull_retry_at = now
            return
        streaming = self.config.pull_streaming and response.status is PullStatus.OK
        taken = self._accept_pull_response(src, pull, response, now)
        if (
            taken
            and streaming
            and self._pull is None
            and self._catchup is None
            and (self._syncing and self._selector.source == src)
        ):
            # The stream stays open, continuing right after what the source just sent (our
            # log may run further, unvalidated: the source's next batch decides about it).
            sent = response.entries[-1] if response.entries else None
            after = (sent.index, sent.term) if sent else (pull.after_index, pull.after_term)
            self._pull = _Pull(pull.request_id, src, now, after[0], after[1])

    def _accept_pull_response(
        self, src: NodeId, pull: _Pull, response: PullResponse, now: float
    ) -> bool:
        """Act on an answer to our pull; True when it was a batch we took (a stream goes on)."""
        settings = self._selector.settings
        if self._source_rollback_id not in (None, response.rollback_id):
            # The source rolled back since we last pulled: re-validate from our last entry.
            self._source_rollback_id = response.rollback_id
            self._probe_point = None
            self._pull_retry_at = now
            return False
        self._source_rollback_id = response.rollback_id
        if self.log.term_at(pull.after_index) != pull.after_term:
            self._pull_retry_at = now  # our own log changed meanwhile; ask again
            return False
        source_position = Position(response.last_term, response.last_index)
        match response.status:
            case PullStatus.OK:
                if not self._apply_batch(src, pull, response, now):
                    return False
                self._fetch = None  # this source has what we need: no copy to resume
                self._depth = None if response.depth is None else response.depth + 1
                if self._catchup is None and not self._established:
                    self._established = True
                    self._established_at = now
                    self._selector.record_change(now)
                    self._recheck_held()
            case PullStatus.DIVERGED:
                if source_position <= self.log.last_position or pull.after_index <= self._commit:
                    # Not ahead of us, or diverging at/below our commit point: a stale source.
                    self.stats.stale_sources_refused += 1
                    self._abandon_source(now, "diverged stale source", settings.deny_seconds)
                    return False
                hint = self.log.conflict_hint(
                    min(response.hint_index, pull.after_index - 1), response.hint_term
                )
                self._probe_point = max(hint, self._commit)
            case PullStatus.TOO_STALE:
                if self._catchup is not None or not self._syncing:
                    self._abandon_source(now, "too stale for source", settings.stale_deny_seconds)
                else:
                    self._start_fetch(src, now)
                return False
            case PullStatus.NOT_SYNCING:
                # Usually a passing state (it is behind us, or between sources): a short
                # deny-list entry, so that our next choice looks elsewhere first.
                refused = 2 * self.config.heartbeat_interval
                self._abandon_source(now, "source will not serve us", refused)
                return False
        self._pull_retry_at = now
        if self._catchup is not None and self._catchup.source == src:
            self._send_pull(src, now)
        # A secondary pulls again from `_maybe_pull`, which re-checks the source first.
        return response.status is PullStatus.OK

    def _apply_batch(self, src: NodeId, pull: _Pull, response: PullResponse, now: float) -> bool:
        """Validate and append a batch; roll back what conflicts. False: source refused."""
        entries = response.entries
        settings = self._selector.settings
        conflict = next(
            (e.index for e in entries if self.log.term_at(e.index) not in (None, e.term)), None
        )
        if conflict is not None:
            if conflict <= self._commit or self._catchup is not None:
                # Rolling back a committed entry (or a primary's own log) is never right: the
                # source is the stale one.
                self.stats.stale_sources_refused += 1
                self._abandon_source(
                    now, "would roll back committed entries", settings.deny_seconds
                )
                return False
            removed = self.log.last_index - (conflict - 1)
            self._truncate_after(conflict - 1)
            self._rollback_id += 1
            self.stats.rollbacks += 1
            self.stats.entries_rolled_back += removed
            self._recheck_held()
        if entries:
            self.log.merge(entries)
        self._probe_point = None
        # Our log up to `validated` is now the source's (the answer followed our point, which
        # the source found in its log, and the batch was merged): its commit point holds there.
        validated = pull.after_index + len(entries)
        self._set_commit(min(response.commit, validated))
        return True

    # ---- snapshots: too stale for the source -----------------------------------------------------

    def _start_fetch(self, source: NodeId, now: float) -> None:
        """MongoDB's too-stale path: copy the source's snapshot, then pull from its point."""
        self.stats.snapshot_fetches += 1
        self.stats.history.append((now, source, "too stale: copying its snapshot"))
        if self._fetch is None:
            self._fetch = _Fetch(source, 0, now)
        self._request_chunk(source, now)  # from the bytes held (a copy cut short resumes)

    def _request_chunk(self, source: NodeId, now: float) -> None:
        fetch = self._fetch
        assert fetch is not None
        request_id = self._next_request_id
        self._next_request_id += 1
        fetch.source, fetch.request_id, fetch.sent_at = source, request_id, now
        offset = len(fetch.received)
        self._send(source, SnapshotRequest(self._term, request_id, fetch.index, fetch.term, offset))

    def _serve_snapshot(self, src: NodeId, request: SnapshotRequest) -> None:
        """One chunk of our snapshot; from 0 of the current one if the asked one is gone.

        The snapshot a puller is copying is kept for it until its last chunk went out, so a
        newer snapshot taken meanwhile does not restart the copy.
        """
        asked = (request.index, request.snap_term)
        snapshot = self._serving.get(src)
        if snapshot is None or (snapshot.index, snapshot.term) != asked:
            snapshot = self._snapshot
        if snapshot is None:
            return  # nothing to copy (we never said too stale): its request times out
        offset = request.offset if (snapshot.index, snapshot.term) == asked else 0
        offset = min(offset, snapshot.size)
        data = snapshot.data[offset : offset + self.config.snapshot_chunk_bytes]
        end = offset + len(data)
        if end < snapshot.size:
            self._serving[src] = snapshot
            self._served_bytes[src] = end
        else:
            self._serving.pop(src, None)
            self._served_bytes.pop(src, None)
        self.stats.snapshot_chunks_served += 1
        self._send(
            src,
            SnapshotChunk(
                self._term,
                request.request_id,
                snapshot.index,
                snapshot.term,
                snapshot.size,
                snapshot.checksum,
                offset,
                data,
                end == snapshot.size,
            ),
        )

    def _handle_snapshot_chunk(self, src: NodeId, chunk: SnapshotChunk, now: float) -> None:
        fetch = self._fetch
        if fetch is None or fetch.source != src or fetch.request_id != chunk.request_id:
            return  # an answer we no longer wait for
        if not self._syncing:
            return  # an election is under way: the request times out, the copy resumes
        self._failed_pulls = 0
        identity = (chunk.index, chunk.snap_term, chunk.total_size, chunk.checksum)
        if identity != (fetch.index, fetch.term, fetch.total_size, fetch.checksum):
            if chunk.offset != 0:
                return  # cannot happen with a well-behaved source; the timeout moves on
            fetch.index, fetch.term, fetch.total_size, fetch.checksum = identity
            fetch.received = bytearray()
        if chunk.offset != len(fetch.received):
            return
        fetch.received += chunk.data
        if len(fetch.received) < fetch.total_size:
            self._request_chunk(src, now)
            return
        self._fetch = None
        snapshot = Snapshot(fetch.index, fetch.term, bytes(fetch.received), fetch.checksum)
        installed = self._install_snapshot(snapshot)
        if not installed and snapshot.index > self._commit:
            # It did not verify: that source sends garbage.
            self.stats.stale_sources_refused += 1
            self._abandon_source(
                now, "sent a corrupt snapshot", self._selector.settings.stale_deny_seconds
            )
            return
        self._probe_point = None
        self._source_rollback_id = None
        self._positions_dirty = True
        self._pull_retry_at = now  # pull from the snapshot's point at once

    def _install_snapshot(self, snapshot: Snapshot) -> bool:
        installed = super()._install_snapshot(snapshot)
        if installed:
            # Entries after our old commit point went: to whoever pulls from us, a rollback.
            self._rollback_id += 1
            self._recheck_held()
        return installed

    # ---- positions flowing upstream --------------------------------------------------------------

    def _handle_update_position(self, src: NodeId, message: UpdatePosition, now: float) -> None:
        self._heard_member(src, now, None)
        self._pullers.refresh(src, now)  # it still pulls from us: keep its slot
        for reported in message.positions:
            node = reported.node
            if node == self.node_id or not self._known_peer(node):
                continue
            position = Position(reported.term, reported.index)
            if self._role is Role.LEADER:
                self._heard[node] = now
                if node != src:
                    self._relayed_at[node] = now
                self._record_position(node, position)
            else:
                self._downstream[node] = (position, now)
                self._positions_dirty = True

    def _upstream_positions(self, now: float, mine: Position) -> tuple[MemberPosition, ...]:
        horizon = now - self.config.election_timeout
        positions = [MemberPosition(self.node_id, mine.term, mine.index)]
        for node, (position, heard) in sorted(self._downstream.items()):
            if heard >= horizon:
                positions.append(MemberPosition(node, position.term, position.index))
        return tuple(positions)

    def _record_position(self, node: NodeId, position: Position) -> None:
        positions = self._positions
        if positions.get(node) == position and self._commit_basis == self.log.stable_index:
            return  # a repeated report: nothing `_advance_commit` reads changed (see there)
        positions[node] = position
        self._advance_commit()

    def _advance_commit(self) -> None:
        """The highest index durable on a majority in positions of the current term.

        It reads the positions, our durable index, the voters and the term. After it has run
        as a primary done catching up, `_commit_basis` holds our durable index: while that
        stays and a report repeats a known position, its answer would be the same, so
        `_record_position` and `_on_persisted` skip it (about half the reports repeat, and
        most Readies persist no entry of ours). A position that changes, a membership change
        and a new term (`_commit_basis` reset) always run it.
        """
        if self._role is not Role.LEADER or self._catchup is not None:
            return
        voters, term, log = self.voters, self._term, self.log
        indexes = [
            p.index for node, p in self._positions.items() if p.term == term and node in voters
        ]
        stable = self._commit_basis = log.stable_index  # (our `durable_position()`)
        if (log.term_at(stable) or 0) == term and self.node_id in voters:
            indexes.append(stable)
        candidate = min(committed_index(indexes, len(voters)), log.last_index)
        if candidate > self._commit:
            self._set_commit(candidate)
            self._commit_moved = True

    def _on_persisted(self) -> None:
        if self._role is Role.LEADER:
            if self._commit_basis != self.log.stable_index:
                self._advance_commit()
        else:  # (`durable_position() != self._reported`, without building the position)
            reported, log = self._reported, self.log
            stable = log.stable_index
            if (
                reported is None
                or reported.index != stable
                or reported.term != (log.term_at(stable) or 0)
            ):
                self._positions_dirty = True

    # ---- heartbeats and reads ------------------------------------------------------------------

    def _heartbeat(self, ctx: int, want_reply: bool = True) -> Heartbeat:
        last = self.log.last_position
        return Heartbeat(
            self._term,
            self._commit,
            self.log.term_at(self._commit) or 0,
            ctx,
            last.index,
            last.term,
            want_reply,
        )

    def _broadcast_heartbeat(self, ctx: int) -> None:
        """To every member, answers wanted: a read barrier's round, or a new primary's first."""
        heartbeat = self._heartbeat(ctx)
        for peer in self.peers:
            self._send(peer, heartbeat)
            self._contact_sent[peer] = self._now
        self._next_heartbeat = self._now + self.config.heartbeat_interval

    def _send_due_heartbeats(self, now: float) -> None:
        """A heartbeat to each member that has had no leader contact for a heartbeat interval.

        Members pulling from us hear from us on every answer to their stream; a chained member
        (its positions reach us relayed) hears of us from its source (`primary_contact_age`),
        so it gets a heartbeat only every keepalive interval, as a backstop; the others (a
        stalled stream, a member without a source) every heartbeat interval, as before. An
        answer is wanted only from a member whose position we have not heard (directly or
        relayed) for two keepalive intervals, or while catching up (the answers fix the
        target): otherwise its UpdatePosition traffic already keeps liveness and positions
        fresh.
        """
        quiet = now - 2 * self._keepalive_interval
        heartbeats: dict[bool, Heartbeat] = {}
        next_due = math.inf
        for peer in self.peers:
            chained = self._relayed_at.get(peer, -math.inf) > quiet
            interval = self._keepalive_interval if chained else self.config.heartbeat_interval
            due = self._contact_sent.get(peer, -math.inf) + interval
            if now >= due:
                want_reply = self._catchup is not None or self._heard.get(peer, -math.inf) <= quiet
                if want_reply not in heartbeats:
                    heartbeats[want_reply] = self._heartbeat(0, want_reply)
                self._send(peer, heartbeats[want_reply])
                self._contact_sent[peer] = now
                due = now + interval
            next_due = min(next_due, due)
        self._next_heartbeat = next_due

    def _handle_heartbeat(self, src: NodeId, message: Heartbeat, now: float) -> None:
        self._heard_member(src, now, Position(message.last_term, message.last_index))
        if message.commit_term == self.log.last_term:
            # Our last entry has the commit point's term: our log holds the primary's prefix
            # up to our last entry (log matching), so its commit point is safe up to there.
            self._set_commit(min(message.commit, self.log.last_index))
        if message.want_reply or message.ctx:
            durable = self.durable_position()
            self._send(src, HeartbeatResponse(self._term, message.ctx, durable.index, durable.term))

    # ---- elections: priorities, catch-up, takeover ----------------------------------------------

    def _on_become_leader(self, now: float) -> None:
        self._cancel_pull()
        self._fetch = None
        self._positions = {}
        self._commit_basis = -1
        self._heard = {}
        self._contact_sent = {}
        self._relayed_at = {}
        self._next_liveness_check = now + self.config.election_timeout
        self._catchup = _CatchUp(deadline=now + self.config.catchup_bound)
        self._catchup.responses[self.node_id] = self.log.last_position
        self._event(EventKind.CATCHUP_START)
        # Ask every member for its position now, in this very Ready (MongoDB's catch-up asks
        # at once too): the answers, from a majority, fix the catch-up target.
        self._broadcast_heartbeat(0)
        self._continue_catchup(now)

    def _catchup_heard(self, node: NodeId, position: Position, now: float) -> None:
        """A heartbeat answer during catch-up: one more position towards the target."""
        catchup = self._catchup
        assert catchup is not None
        catchup.responses[node] = position
        self._continue_catchup(now)

    def _continue_catchup(self, now: float) -> None:
        catchup = self._catchup
        assert catchup is not None
        answered = sum(1 for node in catchup.responses if node in self.voters)
        if catchup.target is None and answered >= len(self.voters) // 2 + 1:
            position, node = max((p, n) for n, p in catchup.responses.items())
            catchup.target = position
            ahead = position > self.log.last_position
            if ahead:
                catchup.source = node
                self.stats.catchups += 1
            self._event(
                EventKind.CATCHUP_TARGET,
                f"{position.term}/{position.index} at {node if ahead else 'us'}"
                f" ({len(catchup.responses)} answers)",
            )
        target = catchup.target
        if target is not None and self.log.last_position >= target:
            self._finish_catchup(now, "reached")
            return
        if now >= catchup.deadline:
            self._finish_catchup(now, "deadline")
            return
        if catchup.source is not None and self._pull is None:
            self._send_pull(catchup.source, now)

    def _finish_catchup(self, now: float, why: str) -> None:
        self._event(EventKind.CATCHUP_END, why)
        self._catchup = None
        self._cancel_pull()
        self._probe_point = None
        self._append_noop(now)

    def _accepting_writes(self) -> bool:
        return self._catchup is None

    def _on_appended(self, now: float) -> None:
        if self.voters == (self.node_id,):
            self._advance_commit()

    def _on_membership_changed(self, now: float) -> None:
        # A source that left the configuration is dropped at the next check (not-a-member);
        # a leader's quorum changed, which may commit more. A member just added is probed
        # at once: a newcomer chooses its first source from those that contact it.
        self._next_source_check = now
        if any(self._member(peer).probed_at == -math.inf for peer in self.peers):
            self._next_probe = now
        if self._role is Role.LEADER:
            self._advance_commit()

    def _handover_target(self) -> NodeId | None:
        caught_up = [
            (position, node)
            for node, position in self._positions.items()
            if node in self.voters
            and position.term == self._term
            and position.index >= self._commit
        ]
        return max(caught_up)[1] if caught_up else None

    def _member_progress(self) -> tuple[MemberProgress, ...]:
        last = self.log.last_index
        rows = []
        for peer in self.peers:
            position = self._positions.get(peer, _ZERO)
            snapshot = self._serving.get(peer)
            rows.append(
                MemberProgress(
                    peer,
                    self.membership.role_of(peer) or "none",
                    position.index,
                    max(0, last - position.index),
                    self._served_bytes.get(peer, 0) if snapshot else 0,
                    snapshot.size if snapshot else 0,
                )
            )
        return tuple(rows)

    def _on_step_down(self) -> None:
        self._catchup = None
        self._positions = {}
        self._commit_basis = -1
        self._heard = {}
        self._commit_moved = False
        self._pull = None
        self._pull_retry_at = self._now

    def _on_leader_learned(self, leader: NodeId, now: float) -> None:
        # A new primary: re-judge the sync source now rather than at the next periodic check
        # (the old one may be the deposed primary, or a member that stopped syncing).
        self._next_source_check = now

    def _become_follower(self, term: int, leader: NodeId | None, now: float) -> None:
        if not self._syncing:
            self._pull = None
        self._syncing = True
        try:
            super()._become_follower(term, leader, now)
        finally:  # (it refuses a term going back, before the role changes)
            role = self._role
            self._syncing = role is Role.FOLLOWER or role is Role.PRE_CANDIDATE

    def _become_pre_candidate(self, now: float) -> None:
        self._syncing = True
        super()._become_pre_candidate(now)

    def _become_candidate(self, now: float) -> None:
        self._cancel_pull()
        self._established = False
        self._syncing = False
        super()._become_candidate(now)
        self._recheck_held()

    def _become_leader(self, now: float) -> None:
        self._syncing = False
        super()._become_leader(now)

    # ---- flushing accumulated intent -----------------------------------------------------------

    def _has_pending_flush(self) -> bool:
        if self._held and self._polls_answerable():
            return True
        if self._syncing:
            now = self._now
            fetch = self._fetch
            fetching = fetch is not None and fetch.source is not None
            if not fetching and self._pull is None and now >= self._pull_retry_at:
                return True
            if now >= self._next_source_check:
                return True
            if self._selector.source is None:
                return False
            # A keepalive is due (it goes with this wake-up), or a position to report.
            return now >= self._next_keepalive or self._positions_dirty
        return False

    def _flush(self) -> None:
        first = len(self._outbox)
        self._answer_ready_polls()
        self._commit_moved = False
        if not self._syncing:
            return
        self._maybe_pull(self._now)
        source = self._selector.source
        if source is None:
            return
        # Our position once this Ready is written. A secondary's messages leave only after
        # its Ready's persist, so when this Ready writes entries the report rides in it, the
        # first of this flush's messages: the primary hears of them as soon as they are
        # durable, not one more Ready later and behind the batches we forward to our pullers.
        unstable = self.log.has_unstable
        mine = self.log.last_position if unstable else self.durable_position()
        if (unstable and mine != self._reported) or self._now >= self._next_keepalive:
            self._positions_dirty = True
        if self._positions_dirty:
            self._positions_dirty = False
            self._next_keepalive = self._now + self._keepalive_interval
            positions = self._upstream_positions(self._now, mine)
            self._reported = mine
            self._outbox.insert(
                first, Envelope(self.node_id, source, UpdatePosition(self._term, positions))
            )
