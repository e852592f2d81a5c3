"""Safety invariants the simulator checks after every step.

The checks are incremental, so that thousands of seeds stay cheap: every entry that any node
hands out for persistence is recorded once under its identity (index, term) together with its
predecessor's term; every committed entry under its index. From those two maps follow:

- election safety: at most one leader per term;
- log matching (§5.3): an entry identity always carries the same command and predecessor term,
  which by induction makes equal entries imply equal prefixes;
- leader completeness (§5.4): the leader of term T holds every entry committed by the leader
  of an earlier term (an entry's commit term is the term of the first node that applied it);
- state-machine safety: no two nodes apply different commands at one index;
- commit indexes never move backwards within a node's lifetime, nor pass the node's last entry;
- (pull) the sync-source graph never has a cycle;
- no acknowledged write is missing from the committed log;
- a snapshot (taken or installed) holds exactly the state, client sessions included, that the
  committed entries up to its index give: it loses no committed entry and no session, and
  carries the configuration in force at its index.

Membership changes: election safety and leader completeness are checked as they are, whatever
the configurations (one leader per term, whoever voted); at the end every committed entry must
be durable on a majority of the voters of the last committed configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.engine import Engine, Ready
from protocols.kv import KVStateMachine, Session
from protocols.membership import Membership, membership_of
from protocols.snapshot import take
from protocols.storage import StoredState
from protocols.types import Command, Entry, NodeId, Op, Role

SNAPSHOT_CHECKPOINT = 256  # the snapshot checks keep a reference state this often


def _copy(machine: KVStateMachine) -> KVStateMachine:
    """An independent copy (applying replaces Session objects, never mutates them)."""
    sessions: dict[str, Session] = dict(machine.session_items())
    return KVStateMachine.restored(machine.applied_index, dict(machine.data_items()), sessions)


@dataclass(slots=True)
class Violation:
    time: float
    node: NodeId
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"t={self.time:.6f} {self.node}: {self.rule}: {self.detail}"


@dataclass(slots=True)
class Invariants:
    """Everything the simulator has seen, and the violations found so far."""

    leaders: dict[int, NodeId] = field(default_factory=dict)
    identities: dict[tuple[int, int], tuple[Command, int]] = field(default_factory=dict)
    committed: dict[int, Entry] = field(default_factory=dict)
    committed_upto_by_term: dict[int, int] = field(default_factory=dict)
    _before: dict[int, int] = field(default_factory=dict)  # cache of _committed_before
    commit_seen: dict[NodeId, int] = field(default_factory=dict)
    # Incremental checks: a leader is checked again only when its term, the committed map
    # (its version) or its log (a truncation) changed since its last check.
    _commits_version: int = 0
    _leader_checked: dict[NodeId, tuple[int, int]] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    # Snapshot checks: a reference state machine follows the contiguous committed prefix; a
    # snapshot is compared with it when it reaches the snapshot's index.
    reference: KVStateMachine = field(default_factory=KVStateMachine)
    snapshots_pending: dict[int, list[tuple[float, NodeId, bytes]]] = field(default_factory=dict)
    snapshots_checked: int = 0
    members: tuple[NodeId, ...] = ()  # the initial voters
    configs: dict[int, Membership] = field(default_factory=dict)  # committed config entries
    _checkpoints: dict[int, KVStateMachine] = field(default_factory=dict)

    def _fail(self, now: float, node: NodeId, rule: str, detail: str) -> None:
        self.violations.append(Violation(now, node, rule, detail))

    def node_restarted(self, node: NodeId, durable_commit: int) -> None:
        self.commit_seen[node] = durable_commit
        self._leader_checked.pop(node, None)

    def after_step(self, now: float, engine: Engine) -> None:
        """Role and commit checks, run after every input given to `engine`."""
        node = engine.node_id
        commit = engine.commit_index
        seen = self.commit_seen.get(node, 0)
        if commit != seen:  # (a log that shrinks under its commit: see on_ready)
            if commit < seen:
                self._fail(now, node, "commit-monotonic", f"{seen} -> {commit}")
            self._check_commit_within_log(now, engine)
            self.commit_seen[node] = commit
        if engine.role is Role.LEADER:
            term = engine.term
            if self._leader_checked.get(node) != (term, self._commits_version):
                self._leader_checked[node] = (term, self._commits_version)
                self._check_leader(now, engine)

    def _check_commit_within_log(self, now: float, engine: Engine) -> None:
        commit, last = engine.commit_index, engine.log.last_index
        if commit > last:
            self._fail(now, engine.node_id, "commit-within-log", f"{commit} > last {last}")

    def _check_leader(self, now: float, engine: Engine) -> None:
        """Election safety and leader completeness for the leader `engine`."""
        node, term = engine.node_id, engine.term
        known = self.leaders.setdefault(term, node)
        if known != node:
            self._fail(now, node, "election-safety", f"{known} also leads term {term}")
            return
        index = self._committed_before(term)
        if index > engine.log.snapshot_index:  # (below it: the snapshot checks cover it)
            entry = self.committed[index]
            if engine.log.term_at(index) != entry.term:
                self._fail(
                    now,
                    node,
                    "leader-completeness",
                    f"leader of term {term} lacks entry {index}/{entry.term} "
                    "committed in an earlier term",
                )

    def _committed_before(self, term: int) -> int:
        """The highest index committed in a term before `term` (cached between commits)."""
        cached = self._before.get(term)
        if cached is None:
            cached = max((i for t, i in self.committed_upto_by_term.items() if t < term), default=0)
            self._before[term] = cached
        return cached

    def check_sync_sources(self, now: float, sources: dict[NodeId, NodeId | None]) -> None:
        """No member may (transitively) pull from itself."""
        for start in sources:
            seen = [start]
            node = sources.get(start)
            while node is not None:
                if node in seen:
                    cycle = " -> ".join([*seen[seen.index(node) :], node])
                    self._fail(now, start, "sync-source-cycle", cycle)
                    return
                seen.append(node)
                node = sources.get(node)

    def on_ready(self, now: float, engine: Engine, ready: Ready) -> None:
        """Record and check what a Ready hands out: new entries and newly applied ones."""
        node = engine.node_id
        log = engine.log
        if ready.truncate_after is not None:  # the log changed under the incremental checks
            self._check_commit_within_log(now, engine)
            if engine.role is Role.LEADER:
                self._leader_checked[node] = (engine.term, self._commits_version)
                self._check_leader(now, engine)
        identities = self.identities
        before: Entry | None = None
        for entry in ready.entries:
            if before is not None and before.index == entry.index - 1:
                previous_term: int | None = before.term  # a Ready's entries are contiguous
            else:
                previous_term = log.term_at(entry.index - 1)
            before = entry
            if previous_term is None:  # truncated again before this Ready was taken
                before = None
                continue
            key = (entry.index, entry.term)
            seen = identities.get(key)
            if seen is None:
                identities[key] = (entry.command, previous_term)
            elif seen[1] != previous_term or (
                seen[0] is not entry.command and seen[0] != entry.command
            ):  # (the simulated wire passes the same command object along: usually `is`)
                self._fail(
                    now,
                    node,
                    "log-matching",
                    f"entry {entry.index}/{entry.term} is {entry.command} after term "
                    f"{previous_term}, elsewhere {seen[0]} after term {seen[1]}",
                )
        for entry in ready.committed:
            known = self.committed.get(entry.index)
            if known is None:
                self.committed[entry.index] = entry
                if entry.command.op is Op.CONFIG:
                    self.configs[entry.index] = membership_of(entry.command)
                upto = self.committed_upto_by_term
                upto[engine.term] = max(upto.get(engine.term, 0), entry.index)
                self._before.clear()
                self._commits_version += 1
            elif known is not entry and known != entry:
                self._fail(
                    now,
                    node,
                    "state-machine-safety",
                    f"index {entry.index}: applied {entry}, elsewhere {known}",
                )
        if ready.snapshot is not None or self.snapshots_pending:
            self._check_snapshots(now, engine, ready)

    def _check_snapshots(self, now: float, engine: Engine, ready: Ready) -> None:
        snapshot = ready.snapshot
        if snapshot is not None:
            pending = self.snapshots_pending.setdefault(snapshot.index, [])
            pending.append((now, engine.node_id, snapshot.data))
        while self.snapshots_pending:
            index = min(self.snapshots_pending)
            expected = self._state_at(index)
            if expected is None:
                return  # not all of 1..index seen committed yet: checked later
            term = self.committed[index].term
            data = take(index, term, self.membership_at(index), expected).data
            for taken_at, node, got in self.snapshots_pending.pop(index):
                self.snapshots_checked += 1
                if got != data:
                    self._fail(
                        taken_at,
                        node,
                        "snapshot-state",
                        f"snapshot at {index} differs from the committed entries 1..{index}"
                        " (data or client sessions)",
                    )

    def _state_at(self, index: int) -> KVStateMachine | None:
        """The state after committed entries 1..index, or None while some are unknown.

        The reference state machine moves forward through the committed entries and leaves a
        copy every SNAPSHOT_CHECKPOINT entries, so a check behind it costs at most that many.
        """
        reference = self.reference
        while reference.applied_index < index:
            following = self.committed.get(reference.applied_index + 1)
            if following is None:
                return None
            reference.apply(following)
            if reference.applied_index % SNAPSHOT_CHECKPOINT == 0:
                self._checkpoints[reference.applied_index] = _copy(reference)
        base = index - index % SNAPSHOT_CHECKPOINT
        machine = _copy(self._checkpoints[base]) if base else KVStateMachine()
        for position in range(base + 1, index + 1):
            machine.apply(self.committed[position])
        return machine

    def membership_at(self, index: int) -> Membership:
        """The configuration in force at committed `index` (the initial one before any)."""
        before = [i for i in self.configs if i <= index]
        return self.configs[max(before)] if before else Membership(self.members)

    def on_write_acked(self, now: float, client: str, seq: int, index: int) -> None:
        """A client got an OK for (client, seq) at `index`: it must be committed there."""
        entry = self.committed.get(index)
        if entry is None or (entry.command.client_id, entry.command.seq) != (client, seq):
            self._fail(
                now,
                client,
                "acked-write-committed",
                f"write {client}#{seq} acknowledged at {index}, committed log has {entry}",
            )

    def final_check(self, now: float, stores: dict[NodeId, StoredState], commit: int) -> None:
        """At the end: the committed prefix agreed on by the cluster holds every acked write.

        `stores` are the durable states of the surviving nodes; `commit` the highest commit
        index any live node reports. Every index the simulator saw committed must be present,
        with the same entry, on a majority of the durable logs, or covered by a durable
        snapshot there (which the snapshot checks compared with the committed entries).
        """
        last = max(self.committed, default=0)
        voters = self.membership_at(last).voters if self.members else tuple(stores)
        stores = {node: stored for node, stored in stores.items() if node in voters}
        majority = len(voters) // 2 + 1
        for waiting in self.snapshots_pending.values():
            for taken_at, node, _ in waiting:
                self._fail(taken_at, node, "snapshot-state", "snapshot beyond the committed log")
        self.snapshots_pending.clear()

        def holds(stored: StoredState, index: int, entry: Entry) -> bool:
            first = stored.first_index
            if index < first:
                return True
            position = index - first
            return position < len(stored.entries) and stored.entries[position] == entry

        for index, entry in sorted(self.committed.items()):
            holders = sum(1 for stored in stores.values() if holds(stored, index, entry))
            if holders < majority:
                self._fail(
                    now,
                    "cluster",
                    "committed-durable-on-majority",
                    f"entry {entry} is durable on {holders} of the {len(voters)} voters",
                )
                return
