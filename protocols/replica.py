"""What both engines share: terms and votes, elections, the log, applying, reads, Ready.

Theory of operation. A replica is a sans-I/O state machine: the caller feeds it `tick`,
`receive`, `propose` and `read` with its own `now`, and collects all resulting work with
`ready()`. Every incoming message goes through one door, `receive`: the term rules first
(higher term: step down; lower term: answer so the sender learns, or ignore), then elections,
which both protocols run alike (pre-vote, one vote per term, the election restriction of §5.4.1,
a leader lease against disruptive candidates), then the protocol's own `_step`. Only the
`_become_*` methods change the role. The push and pull engines subclass this and add only how
entries travel and when the leader commits.

Membership (protocols/membership.py). The configuration in force is the latest one in the log
(or, with none there, the snapshot's, or the start-up settings'), committed or not: it takes
effect when appended and goes back when truncated. Every majority — commit, votes, read
index, check-quorum — is a majority of its voters; learners are replicated to and count for
nothing. A node that is no voter never stands for election. A leader takes one change at a time
(the previous one committed, and an entry of its own term); a leader that removed itself keeps
leading until the change commits, counting itself in no majority, then steps down and asks the
most caught-up voter to campaign at once (TimeoutNow).
"""

from __future__ import annotations

import math
import random

from protocols.config import Config
from protocols.egress import EgressGauge
from protocols.engine import (
    ClientReply,
    ClientRequest,
    Consistency,
    MemberProgress,
    MembershipRequest,
    ReadRequest,
    Ready,
    ReplyStatus,
    Status,
)
from protocols.errors import CallerError, InvariantViolation, PeerError
from protocols.events import EventKind, EventLog, ProtocolEvent
from protocols.kv import KVStateMachine, Result
from protocols.log import RaftLog
from protocols.membership import (
    Membership,
    MembershipError,
    apply_change,
    config_command,
    membership_of,
)
from protocols.messages import (
    AppendEntries,
    Envelope,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    Message,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from protocols.quorum import VoteResult, vote_result
from protocols.reads import ReadBarrier
from protocols.snapshot import Snapshot, SnapshotError, restore, take
from protocols.storage import StoredState
from protocols.types import NOOP, Command, Entry, HardState, NodeId, Op, Position, Role

# Messages only a leader sends: receiving one in the current term names the leader.
LEADER_MESSAGES: tuple[type, ...] = (AppendEntries, Heartbeat, TimeoutNow, InstallSnapshot)


class ReplicaBase:
    """Shared state and rules; subclasses implement the `_step_*`, `_flush` and tick hooks."""

    def __init__(self, config: Config, stored: StoredState, rng: random.Random, now: float):
        self.config = config.validate()
        self.node_id: NodeId = config.node_id
        # Members of priority above 1 time out sooner, so the first leader is usually the
        # member the operator prefers and priority takeovers (with their churn) stay rare.
        # (Worked out once: the timer is reset on every message from the leader.)
        self._base_timeout = config.election_timeout / max(1.0, config.priority_of(self.node_id))
        self._rng = rng
        self._now = now
        # The runtime's reading of our capped outgoing pipes (None: nothing is capped);
        # engines that stream bulk data use it as a socket's back-pressure.
        self.egress_gauge: EgressGauge | None = None

        hard = stored.hard_state
        snapshot = stored.snapshot
        self.kv = KVStateMachine()
        self._snapshot: Snapshot | None = snapshot  # the latest, served to lagging members
        self._snapshot_to_save: Snapshot | None = None  # goes out in the next Ready
        self.snapshots_taken = 0
        self.snapshots_installed = 0
        # The configuration before the log's first configuration entry; None for a joining
        # node, which does not know the one it was added to until its log holds it.
        self._base_membership: Membership | None
        if snapshot is None:
            self.log = RaftLog(stored.entries)
            self._base_membership = self._initial_membership()
        else:
            try:
                self._base_membership, self.kv = restore(snapshot)
            except SnapshotError as error:
                raise CallerError(f"stored snapshot is unusable: {error}") from error
            self.log = RaftLog(stored.entries, snapshot.index, snapshot.term)
        # The configuration entries in the log after the snapshot, and the one in force.
        self._configs: list[tuple[int, Membership]] = []
        self._configs_version = -1
        self.membership = Membership(())
        self.voters: tuple[NodeId, ...] = ()
        self.members: tuple[NodeId, ...] = ()
        self.peers: tuple[NodeId, ...] = ()
        self._refresh_membership(notify=False)
        self._term = hard.term
        self._vote = hard.vote
        if self.log.last_term > hard.term:
            # A torn write kept entries of a newer term but not the hard state written after
            # them: no vote of that term was sent (it waits for the hard state), so adopt it.
            self._term, self._vote = self.log.last_term, None
        self._rollback_id = hard.rollback_id
        self._commit = max(min(hard.commit, self.log.last_index), self.log.snapshot_index)
        self._handed_hard_state = hard

        self._role = Role.FOLLOWER
        self._leader: NodeId | None = None
        self._votes: dict[NodeId, bool] = {}
        self._forced_campaign = False  # the running campaign may ignore leader stickiness
        self._leader_last = Position(0, 0)  # the leader's last entry, from its heartbeats
        self._takeover_at: float | None = None
        self.priority_takeovers = 0
        self._election_deadline = 0.0
        self._last_leader_contact = -math.inf
        self._reset_election_timer(now)

        self._outbox: list[Envelope] = []
        self._replies: list[ClientReply] = []
        self._pending_writes: dict[int, tuple[int, int]] = {}  # index -> (request_id, term)
        self._reads = ReadBarrier()
        self._ready_outstanding = False
        self._events = EventLog()
        self._leader_learned_term = -1  # the term whose leader a LEADER_LEARNED event named
        self._term_committed = -1  # the term whose first commit a TERM_COMMITTED event named

    # ---- what callers read -----------------------------------------------------------------

    @property
    def term(self) -> int:
        return self._term

    @property
    def role(self) -> Role:
        return self._role

    @property
    def leader(self) -> NodeId | None:
        return self._leader

    @property
    def commit_index(self) -> int:
        return self._commit

    def status(self) -> Status:
        return Status(
            node_id=self.node_id,
            role=self._role,
            term=self._term,
            leader=self._leader,
            commit=self._commit,
            applied=self.kv.applied_index,
            last_index=self.log.last_index,
            last_term=self.log.last_term,
            sync_source=self._sync_source(),
            peers_seen=self._peers_seen(),
            snapshot_index=self.log.snapshot_index,
            log_entries=self.log.entry_count,
            log_bytes=self.log.size_bytes,
            sync_depth=self._sync_depth(),
            pullers=self.pullers(),
            membership=self.membership,
            config_index=self.config_index,
            config_committed=not self.config_pending,
            progress=self._member_progress() if self._role is Role.LEADER else (),
        )

    def _member_progress(self) -> tuple[MemberProgress, ...]:
        """Leader: each member's catch-up (the engines know where their members are)."""
        return ()

    # ---- membership --------------------------------------------------------------------------

    def _initial_membership(self) -> Membership | None:
        """The configuration of a node whose log and snapshot hold none (None: joining)."""
        config = self.config
        if config.joining:
            return None
        if config.bootstrap:
            return Membership((config.node_id,))
        return Membership(config.voters or config.members)

    @property
    def config_index(self) -> int:
        """The log index of the configuration in force (0: the snapshot's or the initial)."""
        return self._configs[-1][0] if self._configs else 0

    @property
    def config_pending(self) -> bool:
        """Is the configuration in force not committed yet (a change under way)?"""
        return self.config_index > self._commit

    def membership_at(self, index: int) -> Membership | None:
        """The configuration in force once entries up to `index` are in the log (None: a
        joining node's, before the first configuration entry it holds)."""
        for config_index, membership in reversed(self._configs):
            if config_index <= index:
                return membership
        return self._base_membership

    def _refresh_membership(self, notify: bool = True) -> None:
        """Re-read the configuration entries if the log's changed (appended, truncated, ...)."""
        if self.log.config_version == self._configs_version:
            return
        self._configs_version = self.log.config_version
        self._configs = [
            (index, membership_of(self.log.entry(index).command))
            for index in self.log.config_indexes
        ]
        current = self._configs[-1][1] if self._configs else self._base_membership
        current = current or Membership(())
        if current == self.membership and notify:
            return
        self.membership = current
        self.voters = current.voters
        self.members = current.members
        self.peers = tuple(m for m in current.members if m != self.node_id)
        if notify:
            self._event(EventKind.CONFIG_CHANGED, current.describe())
            self._on_membership_changed(self._now)

    def _known_peer(self, node: NodeId) -> bool:
        """May `node` talk to us: in the start-up address book or the configuration in force?"""
        return node in self.config.members or node in self.members

    def change_membership(self, request: MembershipRequest, now: float) -> None:
        """Propose one configuration change (leader only); the reply comes once it commits."""
        self._now = now
        if self._role is not Role.LEADER:
            self._replies.append(
                ClientReply(request.request_id, ReplyStatus.NOT_LEADER, leader=self._leader)
            )
            return
        if not self._accepting_writes() or not self._committed_in_term():
            # §4.1's fix: a new leader first commits an entry of its term, so that a change
            # begun by an earlier leader cannot still be uncommitted behind it.
            self._replies.append(ClientReply(request.request_id, ReplyStatus.RETRY))
            return
        why = None
        if self.config_pending:
            why = f"a membership change is pending (entry {self.config_index} is not committed)"
        else:
            try:
                new = apply_change(self.membership, request.change)
            except MembershipError as error:
                why = str(error)
        if why is not None:
            self._replies.append(
                ClientReply(request.request_id, ReplyStatus.REFUSED, Result(False, why))
            )
            return
        (entry,) = self.log.append_new(self._term, [config_command(new, request.change)])
        self._pending_writes[entry.index] = (request.request_id, self._term)
        self._refresh_membership()
        self._on_appended(now)

    def _maybe_leave(self) -> None:
        """A leader that removed itself steps down once that change is committed."""
        if (
            self._role is Role.LEADER
            and self.node_id not in self.voters
            and self._commit >= self.config_index
        ):
            target = self._handover_target()
            if target is not None:
                self._send(target, TimeoutNow(self._term))
            self._become_follower(self._term, None, self._now)

    @property
    def sync_source(self) -> NodeId | None:
        """The member this node pulls from (pull engine); None for push."""
        return self._sync_source()

    def _sync_source(self) -> NodeId | None:
        return None

    def _sync_depth(self) -> int | None:
        return None

    def pullers(self) -> tuple[NodeId, ...]:
        """The members pulling from this node (pull engine); () for push."""
        return ()

    def _peers_seen(self) -> tuple[NodeId, ...]:
        return ()

    def next_deadline(self) -> float:
        """The earliest `now` at which `tick` has something to do."""
        takeover = self._takeover_at
        if takeover is not None and takeover > self._now and self._role is not Role.LEADER:
            return min(self._election_deadline, takeover)
        return self._election_deadline

    @property
    def last_leader_contact(self) -> float:
        """When this member last heard from its leader (pull: also as its source relays it)."""
        return self._last_leader_contact

    @property
    def election_deadline(self) -> float:
        """When a follower or candidate starts the next election if it hears nothing."""
        return self._election_deadline

    # ---- inputs ----------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self._now = now
        if self._role is Role.LEADER:
            self._tick_leader(now)
        elif now >= self._election_deadline:
            self._on_election_timeout(now)
        else:
            self._tick_follower(now)

    def receive(self, envelope: Envelope, now: float) -> None:
        """One door for every peer message. Raises PeerError for input to drop and count."""
        self._now = now
        src = envelope.src
        if envelope.dst != self.node_id:
            raise PeerError(f"message for {envelope.dst!r} delivered to {self.node_id!r}")
        if src == self.node_id or not self._known_peer(src):
            raise PeerError(f"message from unknown member {src!r}")
        message = envelope.message
        if not self._check_term(src, message, now):
            return
        match message:
            case VoteRequest():
                self._handle_vote_request(src, message, now)
            case VoteResponse():
                self._handle_vote_response(src, message, now)
            case TimeoutNow():
                if self._role is not Role.LEADER:
                    self._campaign(now, pre_vote=False, force=True)
            case _:
                if isinstance(message, LEADER_MESSAGES):
                    self._heard_from_leader(src, now)
                    if isinstance(message, Heartbeat):
                        self._leader_last = Position(message.last_term, message.last_index)
                self._step(src, message, now)
        self._refresh_membership()  # entries or a snapshot may have brought a configuration

    def propose(self, request: ClientRequest, now: float) -> None:
        """Replicate a write; the reply arrives in a later Ready."""
        self._now = now
        if self._role is not Role.LEADER or not self._accepting_writes():
            status = ReplyStatus.NOT_LEADER if self._role is not Role.LEADER else ReplyStatus.RETRY
            self._replies.append(ClientReply(request.request_id, status, leader=self._leader))
            return
        (entry,) = self.log.append_new(self._term, [request.command])
        self._pending_writes[entry.index] = (request.request_id, self._term)
        self._on_appended(now)

    def read(self, request: ReadRequest, now: float) -> None:
        """Serve a read at the requested consistency; the reply arrives in a later Ready."""
        self._now = now
        if request.consistency is Consistency.LOCAL:
            self._reply_read(request)
            return
        if self._role is not Role.LEADER:
            self._replies.append(
                ClientReply(request.request_id, ReplyStatus.NOT_LEADER, leader=self._leader)
            )
            return
        if request.consistency is Consistency.LEADER:
            self._reply_read(request)
            return
        self._reads.enqueue(request)

    def _reply_read(self, request: ReadRequest) -> None:
        """Answer from the applied state, with the applied index the value was read at."""
        value = self.kv.get(request.key)
        index = self.kv.applied_index
        self._replies.append(
            ClientReply(
                request.request_id, ReplyStatus.OK, Result(True, value), self._leader, index
            )
        )

    # ---- Ready / advance ---------------------------------------------------------------------

    def hard_state(self) -> HardState:
        return HardState(self._term, self._vote, self._commit, self._rollback_id)

    def has_ready(self) -> bool:
        handed = self._handed_hard_state
        return bool(
            self._outbox
            or self._replies
            or self.log.has_unstable
            or self._commit > self.kv.applied_index
            or self._term != handed.term
            or self._vote != handed.vote
            or self._commit != handed.commit
            or self._rollback_id != handed.rollback_id
            or self._has_pending_flush()
            or self._reads.has_servable(self.kv.applied_index)
            or (self._role is Role.LEADER and self._can_start_read_round())
            or bool(self._events)
            or self._snapshot_to_save is not None
        )

    def _can_start_read_round(self) -> bool:
        return self._role is Role.LEADER and self._reads.has_queued and self._committed_in_term()

    def ready(self) -> Ready:
        if self._ready_outstanding:
            raise CallerError("ready() called again before advance()")
        self._flush()
        leader = self._role is Role.LEADER  # (spares followers the leader-only calls below)
        if leader and self._can_start_read_round():
            ctx = self._reads.start_round(self._commit, self.node_id, self.voters)
            if ctx is not None:
                self._broadcast_heartbeat(ctx)
        handed = self._handed_hard_state
        send_first = (
            self._role is Role.LEADER
            and self._term == handed.term
            and self._vote == handed.vote
            and self._rollback_id == handed.rollback_id
        )
        changed_hard: HardState | None = None
        if (  # built only when it changed: most Readies carry none (a per-step cost)
            self._term != handed.term
            or self._vote != handed.vote
            or self._commit != handed.commit
            or self._rollback_id != handed.rollback_id
        ):
            changed_hard = self._handed_hard_state = self.hard_state()
        # (the guards below spare calls on every Ready: most have nothing to apply or serve)
        committed = self._apply_committed() if self._commit > self.kv.applied_index else []
        if leader:
            self._maybe_leave()
        config = self.config
        if config.snapshot_entries > 0 or config.snapshot_bytes > 0:
            self._maybe_take_snapshot()
        truncate_after, entries = self.log.take_unstable()
        # Answered with the applied index, not the read index: the state may have moved past
        # the read index, and the answer must not look older than the value it carries.
        if self._reads.has_servable(self.kv.applied_index):
            for _, request in self._reads.take_servable(self.kv.applied_index):
                self._reply_read(request)
        ready = Ready(
            hard_state=changed_hard,
            truncate_after=truncate_after,
            entries=entries,
            messages=self._outbox,
            committed=committed,
            replies=self._replies,
            events=self._events.drain(),
            snapshot=self._snapshot_to_save,
            send_first=send_first,
        )
        self._snapshot_to_save = None
        self._outbox, self._replies = [], []
        self._ready_outstanding = True
        return ready

    def advance(self, ready: Ready) -> None:
        """The caller made `ready` durable, sent its messages and delivered its replies."""
        if not self._ready_outstanding:
            raise CallerError("advance() without an outstanding ready()")
        self._ready_outstanding = False
        self.log.mark_persisted()
        self._on_persisted()

    def _apply_committed(self) -> list[Entry]:
        if self._commit <= self.kv.applied_index:
            return []
        committed = self.log.entries(self.kv.applied_index + 1, self._commit)
        apply = self.kv.apply
        pending_writes = self._pending_writes
        for entry in committed:
            result = apply(entry)
            if not pending_writes:  # (a follower: nothing of its own awaits these entries)
                continue
            pending = pending_writes.pop(entry.index, None)
            if pending is None:
                continue
            request_id, term = pending
            if entry.term == term:
                self._replies.append(
                    ClientReply(request_id, ReplyStatus.OK, result, self._leader, entry.index)
                )
            else:  # our entry was overwritten: it never applied, but a retry may have
                self._replies.append(ClientReply(request_id, ReplyStatus.UNKNOWN))
        return committed

    # ---- snapshots ---------------------------------------------------------------------------

    def _maybe_take_snapshot(self) -> None:
        """Compact the log once it passed the configured size (only what is applied and durable).

        The state machine holds exactly entries 1..applied, so that is the snapshot's point; if
        the log is not yet durable that far (a follower applies what the leader committed, which
        may still be in flight to its own disk), a later Ready takes it.
        """
        config = self.config
        if config.snapshot_entries <= 0 and config.snapshot_bytes <= 0:
            return  # snapshots are off (asked on every Ready)
        applied = self.kv.applied_index
        since = applied - self.log.snapshot_index
        if since <= 0 or applied > self.log.stable_index:
            return
        due = (config.snapshot_entries > 0 and since >= config.snapshot_entries) or (
            config.snapshot_bytes > 0 and self.log.size_bytes >= config.snapshot_bytes
        )
        if not due:
            return
        term = self.log.term_at(applied)
        assert term is not None  # applied > snapshot index and <= last index
        membership = self.membership_at(applied)
        if membership is None:
            return  # a joining node snapshots once it holds a configuration up to there
        snapshot = take(applied, term, membership, self.kv)
        self.log.compact(applied)
        self._base_membership = membership
        self._refresh_membership()
        self._snapshot = snapshot
        self._snapshot_to_save = snapshot
        self.snapshots_taken += 1

    def _install_snapshot(self, snapshot: Snapshot) -> bool:
        """Replace log and state by a received snapshot; False (nothing changed) if unusable.

        Only a snapshot beyond our commit point is installed: one at or below it would take
        back state we applied (and it tells us nothing we do not have).
        """
        if snapshot.index <= self._commit:
            return False
        try:
            membership, kv = restore(snapshot)
        except SnapshotError:
            return False
        if self._role is Role.LEADER:
            raise InvariantViolation(f"{self.node_id}: a leader installing a snapshot")
        self._truncate_after(self._commit)  # answers any client waiting on a removed entry
        self.log.restore(snapshot.index, snapshot.term)
        self._base_membership = membership
        self._refresh_membership()
        self.kv = kv
        self._commit = snapshot.index
        self._snapshot = snapshot
        self._snapshot_to_save = snapshot
        self.snapshots_installed += 1
        self._event(EventKind.SNAPSHOT_INSTALLED, f"index {snapshot.index}, {snapshot.size} bytes")
        return True

    def _committed_in_term(self) -> bool:
        """Raft §6.4: a leader serves reads only once an entry of its term is committed."""
        return self.log.term_at(self._commit) == self._term

    # ---- term rules and elections ------------------------------------------------------------

    def _in_lease(self, now: float) -> bool:
        """Heard from a live leader recently (or are one): refuse to help disrupt it."""
        if not self.config.check_quorum:
            return False
        if self._role is Role.LEADER:
            return True
        return (
            self._leader is not None
            and now - self._last_leader_contact < self.config.election_timeout
        )

    def _check_term(self, src: NodeId, message: Message, now: float) -> bool:
        """Raft §5.1 plus pre-vote and the lease; False means 'handled, stop here'."""
        term = message.term
        if term > self._term:
            if isinstance(message, VoteRequest):
                if not message.force and self._in_lease(now):
                    return False
                if message.pre_vote:
                    return True
            elif isinstance(message, VoteResponse) and message.pre_vote and message.granted:
                return True
            leader = src if isinstance(message, LEADER_MESSAGES) else None
            self._become_follower(term, leader, now)
            return True
        if term < self._term:
            self._on_stale_message(src, message, now)
            return False
        return True

    def _on_stale_message(self, src: NodeId, message: Message, now: float) -> None:
        """A message from an older term: tell its sender our term where that helps it."""
        if isinstance(message, VoteRequest) and message.pre_vote:
            self._send(src, VoteResponse(self._term, granted=False, pre_vote=True))
        elif isinstance(message, LEADER_MESSAGES):
            # A deposed leader learns the new term from this and steps down (etcd does the same
            # when check-quorum or pre-vote keep it from learning through a vote request).
            self._send(src, HeartbeatResponse(self._term))

    def _heard_from_leader(self, src: NodeId, now: float) -> None:
        if self._role is Role.LEADER:
            raise InvariantViolation(f"two leaders in term {self._term}: {self.node_id}, {src}")
        if self._role is not Role.FOLLOWER and not (
            self._role is Role.PRE_CANDIDATE and self._forced_campaign
        ):
            # A forced dry run (takeover, transfer) is meant to replace this very leader.
            self._become_follower(self._term, src, now)
        self._leader = src
        self._last_leader_contact = now
        self._reset_election_timer(now)
        if self._leader_learned_term != self._term:
            self._leader_learned_term = self._term
            self._event(EventKind.LEADER_LEARNED, src)
            self._on_leader_learned(src, now)

    def _reset_election_timer(self, now: float) -> None:
        timeout = self._base_timeout  # (shorter for members of priority above 1: see __init__)
        self._election_deadline = now + timeout + self._rng.random() * timeout

    def _on_election_timeout(self, now: float) -> None:
        if not self._may_campaign(now):
            self._reset_election_timer(now)
            return
        self._campaign(now, pre_vote=self.config.pre_vote)

    def _may_campaign(self, now: float) -> bool:
        """Only voters stand for election; of them, not those of priority 0 (MongoDB's rule)."""
        return self.node_id in self.voters and self.config.priority_of(self.node_id) > 0

    def _maybe_priority_takeover(self, now: float) -> None:
        """A caught-up member of higher priority than the leader calls a (forced) election.

        MongoDB's priority takeover; etcd reaches the same end with leadership transfer. Both
        engines do it, so a scenario can pin the leader to a region for either protocol.
        """
        leader = self._leader
        mine = self.config.priority_of(self.node_id)
        if (
            leader is None
            or mine <= self.config.priority_of(leader)
            or (self.log.last_position < self._leader_last)
        ):
            self._takeover_at = None
            return
        if self._takeover_at is None:
            higher = sum(
                1 for peer in self.peers if peer != leader and self.config.priority_of(peer) > mine
            )
            self._takeover_at = now + self.config.heartbeat_interval * (2 + higher)
            return
        if now >= self._takeover_at:
            self._takeover_at = None
            self.priority_takeovers += 1
            self._campaign(now, pre_vote=self.config.pre_vote, force=True)

    def _campaign(self, now: float, pre_vote: bool, force: bool = False) -> None:
        if self.node_id not in self.voters:
            self._reset_election_timer(now)  # (a learner, or removed: a TimeoutNow or takeover)
            return
        self._forced_campaign = force
        self._takeover_at = None  # whatever was armed, an election is under way now
        last_contact = self._last_leader_contact
        if pre_vote:
            self._become_pre_candidate(now)
        else:
            self._become_candidate(now)
        term = self._term + 1 if pre_vote else self._term
        kind = EventKind.PRE_VOTE if pre_vote else EventKind.CANDIDATE
        self._event(kind, "forced" if force else "", term=term, last_contact=last_contact)
        request = VoteRequest(term, self.log.last_term, self.log.last_index, pre_vote, force)
        for peer in self.voters:
            if peer != self.node_id:
                self._send(peer, request)
        self._tally_votes(now)

    def _handle_vote_request(self, src: NodeId, message: VoteRequest, now: float) -> None:
        can_vote = (
            self._vote == src
            or (self._vote is None and self._leader is None)
            or (message.pre_vote and message.term > self._term)
        )
        if can_vote and self.log.is_up_to_date(message.last_term, message.last_index):
            # A granted pre-vote answers with the term asked for, so the candidate counts it.
            self._send(src, VoteResponse(message.term, granted=True, pre_vote=message.pre_vote))
            if not message.pre_vote:
                self._vote = src
                self._reset_election_timer(now)
        else:
            self._send(src, VoteResponse(self._term, granted=False, pre_vote=message.pre_vote))

    def _handle_vote_response(self, src: NodeId, message: VoteResponse, now: float) -> None:
        expected_kind = self._role is Role.PRE_CANDIDATE and message.pre_vote
        expected_kind |= self._role is Role.CANDIDATE and not message.pre_vote
        if not expected_kind:
            return
        self._votes[src] = message.granted
        self._tally_votes(now)

    def _tally_votes(self, now: float) -> None:
        result = vote_result(self._votes, self.voters)
        if result is VoteResult.WON:
            if self._role is Role.PRE_CANDIDATE:
                self._campaign(now, pre_vote=False, force=self._forced_campaign)
            else:
                self._become_leader(now)
        elif result is VoteResult.LOST:
            self._become_follower(self._term, None, now)

    # ---- role changes ------------------------------------------------------------------------

    def _become_follower(self, term: int, leader: NodeId | None, now: float) -> None:
        was_leader = self._role is Role.LEADER
        if was_leader:
            self._event(EventKind.STEPPED_DOWN, f"to term {term}" if term != self._term else "")
        if term != self._term:
            if term < self._term:
                raise InvariantViolation(f"term going back from {self._term} to {term}")
            self._term = term
            self._vote = None
        self._role = Role.FOLLOWER
        self._leader = leader
        if leader is not None:
            self._last_leader_contact = now
        self._reset_election_timer(now)
        if was_leader:
            self._step_down()

    def _become_pre_candidate(self, now: float) -> None:
        self._role = Role.PRE_CANDIDATE
        self._leader = None
        self._votes = {self.node_id: True}
        self._reset_election_timer(now)

    def _become_candidate(self, now: float) -> None:
        self._role = Role.CANDIDATE
        self._term += 1
        self._vote = self.node_id
        self._leader = None
        self._votes = {self.node_id: True}
        self._reset_election_timer(now)

    def _become_leader(self, now: float) -> None:
        self._role = Role.LEADER
        self._leader = self.node_id
        self._event(EventKind.ELECTED)
        self._on_become_leader(now)

    def _step_down(self) -> None:
        """Leadership ended: answer every client we still owe an answer."""
        for request_id, _term in self._pending_writes.values():
            self._replies.append(ClientReply(request_id, ReplyStatus.UNKNOWN))
        self._pending_writes.clear()
        for request in self._reads.reset():
            self._replies.append(ClientReply(request.request_id, ReplyStatus.NOT_LEADER))
        self._on_step_down()

    def _append_noop(self, now: float) -> None:
        """A new leader's entry of its own term, so earlier entries can commit (§5.4.2, §8).

        A bootstrapped node's first one is its configuration instead (hashicorp/raft writes
        it at bootstrap): from then on the log, not a start-up flag, says who the voters are.
        """
        command = NOOP
        if self.config.bootstrap and not self._configs and self.log.snapshot_index == 0:
            command = Command(Op.CONFIG, f"bootstrap {self.node_id}", self.membership.encode())
        self.log.append_new(self._term, [command])
        self._refresh_membership()
        self._on_appended(now)

    def _send(self, dst: NodeId, message: Message) -> None:
        self._outbox.append(Envelope(self.node_id, dst, message))

    def _set_commit(self, index: int) -> None:
        """Move the commit index forward; it never moves back on any node."""
        if index > self._commit:
            if index > self.log.last_index:
                raise InvariantViolation(f"commit {index} beyond last index {self.log.last_index}")
            self._commit = index
            if (
                self._role is Role.LEADER
                and self._term_committed != self._term
                and self.log.term_at(index) == self._term
            ):
                self._term_committed = self._term
                self._event(EventKind.TERM_COMMITTED, f"index {index}")

    def _event(
        self,
        kind: EventKind,
        detail: str = "",
        *,
        term: int | None = None,
        last_contact: float | None = None,
    ) -> None:
        """Record a protocol milestone at the time of the input being handled."""
        self._events.record(
            ProtocolEvent(
                self._now, kind, self._term if term is None else term, detail, last_contact
            )
        )

    def _truncate_after(self, index: int) -> None:
        """Remove entries after `index`; committed entries are never removed."""
        if index < self._commit:
            raise InvariantViolation(
                f"{self.node_id}: truncating after {index} below commit {self._commit}"
            )
        self.log.truncate_after(index)
        for stale in [i for i in self._pending_writes if i > index]:
            request_id, _ = self._pending_writes.pop(stale)
            self._replies.append(ClientReply(request_id, ReplyStatus.UNKNOWN))

    # ---- hooks for the protocols ---------------------------------------------------------------

    def _step(self, src: NodeId, message: Message, now: float) -> None:
        raise NotImplementedError

    def _tick_leader(self, now: float) -> None:
        raise NotImplementedError

    def _on_leader_learned(self, leader: NodeId, now: float) -> None:
        """Hook: the first message from the leader of the current term arrived."""

    def _tick_follower(self, now: float) -> None:
        """Followers' timers besides the election (pull adds pulling and probing)."""
        self._maybe_priority_takeover(now)

    def _on_become_leader(self, now: float) -> None:
        raise NotImplementedError

    def _on_step_down(self) -> None:
        """Protocol-specific cleanup when leadership ends."""

    def _on_appended(self, now: float) -> None:
        """The leader appended entries to its log."""

    def _on_membership_changed(self, now: float) -> None:
        """Hook: the configuration in force changed (members to track, quorums to recount)."""

    def _handover_target(self) -> NodeId | None:
        """Hook: the most caught-up voter, for a leader that removed itself to hand over to."""
        return None

    def _on_persisted(self) -> None:
        """The caller made handed-out entries durable (the leader may now count itself)."""

    def _accepting_writes(self) -> bool:
        """Hook: the pull engine's new primary refuses writes during catch-up."""
        return True

    def _flush(self) -> None:
        """Turn accumulated intent (new entries, commit moves) into batched messages."""

    def _has_pending_flush(self) -> bool:
        return False

    def _broadcast_heartbeat(self, ctx: int) -> None:
        raise NotImplementedError
