"""Push replication: vanilla Raft, the leader sends AppendEntries to every follower.

Theory of operation (Ongaro & Ousterhout, extended paper §5, plus etcd-io/raft's additions).
The leader tracks a `Progress` per follower. A follower being probed gets one AppendEntries at
a time until one is accepted; then it is replicated to with up to `max_inflight` pipelined
messages, each a batch of entries. A rejection carries a hint (the follower's last index whose
term could still match) so the leader skips whole terms when backtracking. Intent is batched:
proposals and commit moves only mark what must be sent, and `_flush` (run by `ready()`) turns
it into at most one burst of messages per follower, so everything proposed between two Readies
travels together. The leader commits the highest index stored durably on a majority whose
entry is of its own term (§5.4.2, the Figure 8 rule); it counts itself only up to what its own
disk holds. A leader that has not heard from a majority within an election timeout steps down
(check-quorum). Followers ignore vote requests while they hear from a leader (pre-vote + lease).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from protocols.config import Config
from protocols.engine import MemberProgress
from protocols.errors import InvariantViolation
from protocols.messages import (
    AppendEntries,
    AppendResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
)
from protocols.progress import Progress, ReplState
from protocols.quorum import committed_index, has_quorum
from protocols.replica import ReplicaBase
from protocols.snapshot import Snapshot
from protocols.storage import StoredState
from protocols.types import NodeId, Role


@dataclass(slots=True)
class _Incoming:
    """A snapshot a follower is receiving: its identity and the bytes so far, in order."""

    index: int
    term: int
    total_size: int
    checksum: int
    received: bytearray


class PushEngine(ReplicaBase):
    """Vanilla Raft with pre-vote, check-quorum, pipelining, fast backtracking, ReadIndex."""

    protocol = "push"

    def __init__(self, config: Config, stored: StoredState, rng: random.Random, now: float):
        super().__init__(config, stored, rng, now)
        self._progress: dict[NodeId, Progress] = {}
        self._dirty: set[NodeId] = set()  # followers that may be sent something at flush
        self._commit_moved = False  # followers must learn the new commit index
        self._next_heartbeat = 0.0
        self._next_quorum_check = 0.0
        self._incoming: _Incoming | None = None  # follower: a snapshot being received

    # ---- leader --------------------------------------------------------------------------------

    def _on_become_leader(self, now: float) -> None:
        last = self.log.last_index
        self._progress = {peer: Progress(match=0, next=last + 1) for peer in self.peers}
        self._next_heartbeat = now + self.config.heartbeat_interval
        self._next_quorum_check = now + self.config.election_timeout
        self._append_noop(now)

    def _on_membership_changed(self, now: float) -> None:
        """Track the members of the new configuration; a smaller quorum may commit more."""
        if self._role is not Role.LEADER:
            return
        last = self.log.last_index
        self._progress = {
            peer: self._progress.get(peer) or Progress(match=0, next=last + 1)
            for peer in self.peers
        }
        self._dirty.intersection_update(self.peers)
        self._dirty.update(peer for peer in self.peers if self._progress[peer].match == 0)
        self._maybe_commit()

    def _handover_target(self) -> NodeId | None:
        caught_up = [
            (pr.match, peer)
            for peer, pr in self._progress.items()
            if peer in self.voters and pr.match >= self._commit
        ]
        return max(caught_up)[1] if caught_up else None

    def _member_progress(self) -> tuple[MemberProgress, ...]:
        last = self.log.last_index
        rows = []
        for peer, pr in self._progress.items():
            snapshot = pr.snapshot if pr.state is ReplState.SNAPSHOT else None
            rows.append(
                MemberProgress(
                    peer,
                    self.membership.role_of(peer) or "none",
                    pr.match,
                    max(0, last - pr.match),
                    pr.snapshot_acked if snapshot else 0,
                    snapshot.size if snapshot else 0,
                )
            )
        return tuple(rows)

    def _on_step_down(self) -> None:
        self._progress = {}
        self._dirty.clear()
        self._commit_moved = False

    def _on_appended(self, now: float) -> None:
        self._dirty.update(self.peers)
        if not self.peers:
            self._maybe_commit()

    def _on_persisted(self) -> None:
        if self._role is Role.LEADER:
            self._maybe_commit()

    def _tick_leader(self, now: float) -> None:
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.config.heartbeat_interval
            self._broadcast_heartbeat(0)
        if now >= self._next_quorum_check:
            self._next_quorum_check = now + self.config.election_timeout
            if self.config.check_quorum:
                active = {self.node_id} | {
                    peer for peer, pr in self._progress.items() if pr.recent_active
                }
                for pr in self._progress.values():
                    pr.recent_active = False
                if not has_quorum(active, self.voters):
                    self._become_follower(self._term, None, now)

    def next_deadline(self) -> float:
        if self._role is Role.LEADER:
            return min(self._next_heartbeat, self._next_quorum_check)
        return super().next_deadline()

    def _peers_seen(self) -> tuple[NodeId, ...]:
        if self._role is Role.LEADER:
            return tuple(p for p, pr in self._progress.items() if pr.recent_active)
        return (self._leader,) if self._leader and self._leader != self.node_id else ()

    def _broadcast_heartbeat(self, ctx: int) -> None:
        last = self.log.last_position
        for peer, pr in self._progress.items():
            # Never tell a follower a commit index beyond what it is known to hold (etcd).
            commit = min(pr.match, self._commit)
            heartbeat = Heartbeat(self._term, commit, 0, ctx, last.index, last.term)
            self._send(peer, heartbeat)
            pr.heartbeat_sent()

    def _maybe_commit(self) -> None:
        voters = self.voters
        acknowledged = [pr.match for peer, pr in self._progress.items() if peer in voters]
        if self.node_id in voters:  # (a leader removing itself counts for nothing)
            acknowledged.append(self.log.stable_index)
        candidate = committed_index(acknowledged, len(voters))
        # Figure 8: only an entry of the current term is committed by counting replicas.
        if candidate > self._commit and self.log.term_at(candidate) == self._term:
            self._set_commit(candidate)
            self._commit_moved = True

    def _has_pending_flush(self) -> bool:
        return self._role is Role.LEADER and (bool(self._dirty) or self._commit_moved)

    def _flush(self) -> None:
        if self._role is not Role.LEADER:
            return
        targets = set(self.peers) if self._commit_moved else self._dirty
        for peer in self.peers:  # member order keeps the output deterministic
            if peer in targets:
                self._send_appends(peer, send_empty=self._commit_moved)
        self._dirty.clear()
        self._commit_moved = False

    def _send_appends(self, peer: NodeId, send_empty: bool) -> None:
        """Send what `peer` lacks, pipelined up to the in-flight window."""
        pr = self._progress[peer]
        if pr.state is not ReplState.SNAPSHOT and pr.next - 1 < self.log.snapshot_index:
            # The entries it needs are compacted: it gets the snapshot, then entries after it.
            assert self._snapshot is not None  # a compacted log always has its snapshot
            pr.become_snapshot(self._snapshot)
        if pr.state is ReplState.SNAPSHOT:
            self._send_snapshot_chunks(peer, pr)
            return
        sent_any = False
        while not pr.is_paused(self.config.max_inflight):
            prev_index = pr.next - 1
            prev_term = self.log.term_at(prev_index)
            if prev_term is None:
                raise InvariantViolation(f"progress of {peer} points past the log: {pr}")
            entries = self.log.batch_after(
                prev_index, self.config.max_batch_entries, self.config.max_batch_bytes
            )
            if not entries and (sent_any or not send_empty) and pr.state is ReplState.REPLICATE:
                return
            message = AppendEntries(self._term, prev_index, prev_term, tuple(entries), self._commit)
            self._send(peer, message)
            pr.sent(prev_index + len(entries), len(entries))
            sent_any = True
            if not entries:
                return

    def _send_snapshot_chunks(self, peer: NodeId, pr: Progress) -> None:
        """Chunks of the snapshot, up to `snapshot_inflight` chunks beyond what was acked."""
        snapshot = pr.snapshot
        assert snapshot is not None
        chunk = self.config.snapshot_chunk_bytes
        window = self.config.snapshot_inflight * chunk
        while pr.snapshot_sent < snapshot.size and pr.snapshot_sent - pr.snapshot_acked < window:
            offset = pr.snapshot_sent
            data = snapshot.data[offset : offset + chunk]
            end = offset + len(data)
            message = InstallSnapshot(
                self._term,
                snapshot.index,
                snapshot.term,
                snapshot.size,
                snapshot.checksum,
                offset,
                data,
                end == snapshot.size,
            )
            self._send(peer, message)
            pr.snapshot_sent = end

    def _step_leader(self, src: NodeId, message: Message, now: float) -> None:
        pr = self._progress.get(src)
        if pr is None:
            return
        match message:
            case AppendResponse():
                pr.recent_active = True
                if pr.state is ReplState.SNAPSHOT:
                    # Only the acknowledgement of the installed snapshot moves it on.
                    snapshot = pr.snapshot
                    if not message.reject and snapshot and message.index >= snapshot.index:
                        pr.maybe_update(message.index)
                        pr.become_replicate()
                        self._maybe_commit()
                        self._dirty.add(src)
                    return
                if message.reject:
                    hint = message.hint_index
                    if message.hint_term > 0:
                        hint = self.log.conflict_hint(message.hint_index, message.hint_term)
                    if pr.maybe_decrease(message.index, hint):
                        if pr.state is ReplState.REPLICATE:
                            pr.become_probe()
                        self._dirty.add(src)
                    return
                was_paused = pr.is_paused(self.config.max_inflight)
                if pr.maybe_update(message.index):
                    if pr.state is ReplState.PROBE:
                        pr.become_replicate()
                    self._maybe_commit()
                    self._dirty.add(src)
                elif was_paused:
                    self._dirty.add(src)
            case InstallSnapshotResponse():
                pr.recent_active = True
                snapshot = pr.snapshot
                if pr.state is not ReplState.SNAPSHOT or snapshot is None:
                    return
                if (message.index, message.snap_term) != (snapshot.index, snapshot.term):
                    return  # about a transfer this one replaced
                if message.reject:  # it did not verify at the follower: start over
                    pr.snapshot_acked = pr.snapshot_sent = 0
                else:
                    pr.snapshot_acknowledged(message.offset)
                self._dirty.add(src)
            case HeartbeatResponse():
                pr.recent_active = True
                if pr.state is ReplState.SNAPSHOT:
                    if pr.snapshot_stalled():
                        pr.snapshot_sent = pr.snapshot_acked  # chunks lost: resume from there
                    self._dirty.add(src)
                    if message.ctx:
                        self._reads.ack(message.ctx, src, self.voters)
                    return
                pr.probe_sent = False
                if pr.stalled():
                    pr.become_probe()  # resend from the last acknowledged entry
                elif pr.state is ReplState.REPLICATE and pr.is_paused(self.config.max_inflight):
                    pr.inflight.popleft()  # an append or its answer may be lost: free a slot
                if pr.match < self.log.last_index:
                    self._dirty.add(src)
                if message.ctx:
                    self._reads.ack(message.ctx, src, self.voters)
            case _:
                pass

    # ---- follower ------------------------------------------------------------------------------

    def _step(self, src: NodeId, message: Message, now: float) -> None:
        if self._role is Role.LEADER:
            self._step_leader(src, message, now)
            return
        match message:
            case AppendEntries():
                self._handle_append(src, message)
            case InstallSnapshot():
                self._handle_install_snapshot(src, message)
            case Heartbeat():
                # The leader caps the commit index at what we are known to hold.
                self._set_commit(min(message.commit, self.log.last_index))
                self._send(src, HeartbeatResponse(self._term, message.ctx))
            case _:
                pass

    def _handle_append(self, src: NodeId, message: AppendEntries) -> None:
        if message.prev_index < self._commit:
            # Everything up to our commit index already matches the leader (§5.3).
            self._send(src, AppendResponse(self._term, self._commit))
            return
        if self.log.matches(message.prev_index, message.prev_term):
            entries = message.entries
            if entries:
                # Only entries we already hold can conflict: those up to our last index (the
                # batch follows prev_index contiguously; decoding checks it).
                held = entries[: max(self.log.last_index - message.prev_index, 0)]
                first_conflict = next(
                    (e.index for e in held if self.log.term_at(e.index) not in (None, e.term)),
                    None,
                )
                if first_conflict is not None and first_conflict <= self._commit:
                    raise InvariantViolation(
                        f"{self.node_id}: leader {src} overwrites committed entry {first_conflict}"
                    )
                if first_conflict is not None:
                    self._truncate_after(first_conflict - 1)
                self.log.merge(entries)
            last_new = message.prev_index + len(entries)
            self._set_commit(min(message.commit, last_new))
            self._send(src, AppendResponse(self._term, last_new))
            return
        hint_index = self.log.conflict_hint(
            min(message.prev_index, self.log.last_index), message.prev_term
        )
        hint_term = self.log.term_at(hint_index) or 0
        self._send(
            src,
            AppendResponse(self._term, message.prev_index, True, hint_index, hint_term),
        )

    def _handle_install_snapshot(self, src: NodeId, message: InstallSnapshot) -> None:
        """Collect chunks in order; install the completed snapshot if it verifies.

        Every chunk is answered with the bytes held, which is the leader's window and, after a
        loss or a new leader, its resume point. The installed snapshot is acknowledged with an
        AppendResponse at its index, sent after the Ready that saves it (so it is durable).
        """
        if message.index <= self._commit:
            self._incoming = None  # we have all of it already
            self._send(src, AppendResponse(self._term, self._commit))
            return
        incoming = self._incoming
        identity = (message.index, message.snap_term, message.total_size, message.checksum)
        if incoming is None or identity != (
            incoming.index,
            incoming.term,
            incoming.total_size,
            incoming.checksum,
        ):
            if message.offset != 0:
                self._send(src, InstallSnapshotResponse(self._term, *identity[:2], 0))
                return
            incoming = _Incoming(*identity, bytearray())
            self._incoming = incoming
        if message.offset == len(incoming.received):
            incoming.received += message.data
        # (a duplicate, or a chunk after a gap: the answer tells the leader where we are)
        if len(incoming.received) == incoming.total_size:
            self._incoming = None
            snapshot = Snapshot(
                incoming.index, incoming.term, bytes(incoming.received), incoming.checksum
            )
            if self._install_snapshot(snapshot):
                self._send(src, AppendResponse(self._term, snapshot.index))
            else:
                self._send(
                    src,
                    InstallSnapshotResponse(self._term, *identity[:2], 0, reject=True),
                )
            return
        self._send(src, InstallSnapshotResponse(self._term, *identity[:2], len(incoming.received)))
