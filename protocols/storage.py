"""The narrow storage contract every engine is built on, and its in-memory implementation.

An engine never writes storage itself: it hands hard state and entries to its caller in a
`Ready`, and the caller makes them durable through a `LogStore` before sending the messages of
that Ready. On restart the engine is rebuilt from `LogStore.load()` alone, so whatever a store
returns there is, by definition, what survived.

Contract for implementations: `persist()` is atomic with respect to `load()` *as a prefix*:
after a crash, load() returns the state after some prefix of the persist() calls, plus possibly
a prefix of the last call's entries (the hard state of a call is only visible if all of its
entries are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from protocols.errors import CallerError
from protocols.snapshot import Snapshot
from protocols.types import Entry, HardState


@dataclass(slots=True)
class StoredState:
    """What a store hands back on start: hard state, latest snapshot, the log after it."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None

    @property
    def first_index(self) -> int:
        """The index `entries` start at."""
        return (self.snapshot.index if self.snapshot else 0) + 1


class LogStore(Protocol):
    """Durable home of the log and hard state. Implementations live outside `protocols/`."""

    def load(self) -> StoredState:
        """Everything that survived: entries contiguous from just after the snapshot."""
        ...

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Make `snapshot` durable, then drop the entries it covers; durable on return.

        Entries after it are kept only when the entry at its index has its term (the log
        continues the snapshot); otherwise the whole log goes. A snapshot not newer than the
        stored one is ignored. Called before persist() for the same Ready.
        """
        ...

    def persist(
        self,
        hard_state: HardState | None,
        truncate_after: int | None,
        entries: list[Entry],
    ) -> None:
        """Truncate, then append `entries`, then record `hard_state`; durable on return."""
        ...


class MemoryLogStore:
    """A LogStore in memory: the simulator's disk and the tests' storage.

    It checks the contract the engines rely on (contiguous appends, no truncation of what the
    caller did not ask), so a caller bug shows up here rather than as a confusing divergence.
    """

    def __init__(self) -> None:
        self._state = StoredState()
        self.persist_calls = 0
        self.snapshots_saved = 0

    def load(self) -> StoredState:
        state = self._state
        return StoredState(state.hard_state, list(state.entries), state.snapshot)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        state = self._state
        base = state.first_index - 1
        if snapshot.index <= base:
            return
        log = state.entries
        position = snapshot.index - base  # 1-based position of the entry at snapshot.index
        if position <= len(log) and log[position - 1].term == snapshot.term:
            del log[:position]
        else:
            log.clear()
        state.snapshot = snapshot
        self.snapshots_saved += 1

    def persist(
        self,
        hard_state: HardState | None,
        truncate_after: int | None,
        entries: list[Entry],
    ) -> None:
        log = self._state.entries
        base = self._state.first_index - 1
        if truncate_after is not None:
            if truncate_after < base:
                raise CallerError(f"truncate_after {truncate_after} below the snapshot at {base}")
            del log[truncate_after - base :]
        if entries:
            first = entries[0].index
            if first <= base:
                raise CallerError(f"appending {first}, covered by the snapshot at {base}")
            if first > base + len(log) + 1:
                raise CallerError(f"gap: appending {first} after {base + len(log)}")
            del log[first - 1 - base :]
            for offset, entry in enumerate(entries):
                if entry.index != first + offset:
                    raise CallerError("entries to persist are not contiguous")
            log.extend(entries)
        if hard_state is not None:
            self._state.hard_state = hard_state
        self.persist_calls += 1

    @property
    def last_index(self) -> int:
        return self._state.first_index - 1 + len(self._state.entries)


class CommitHold:
    """Holds back hard states that only move the commit index, so they cost no write.

    Why: a commit index needs no durability for safety (a restarted node learns it again from
    the leader, and re-applies what it has up to the durable one), yet every commit advance
    changes the hard state: written on its own, it costs a second fsync per write on every
    member. etcd's raft makes the same call (`MustSync`: only term, vote and entries force a
    sync). A held hard state rides along with the next write that happens anyway (entries, a
    truncation, a snapshot, or a term, vote or rollback-id change), so the durable commit lags
    the engine's by at most what changed since that write. Term, vote and rollback id are never
    held: they guard one vote per term and the pull engine's rollback detection.

    The caller asks `take()` for each Ready that needs persisting; one instance per engine
    incarnation (a crash loses what was held, as a real crash would).
    """

    __slots__ = ("durable", "held")

    def __init__(self, durable: HardState) -> None:
        self.durable = durable  # the last hard state written
        self.held: HardState | None = None

    def take(
        self,
        hard_state: HardState | None,
        truncate_after: int | None,
        entries: list[Entry],
        snapshot: Snapshot | None,
    ) -> tuple[bool, HardState | None]:
        """(whether to write now, the hard state to write with it)."""
        durable = self.durable
        if (
            hard_state is not None
            and not entries
            and truncate_after is None
            and snapshot is None
            and hard_state.term == durable.term
            and hard_state.vote == durable.vote
            and hard_state.rollback_id == durable.rollback_id
        ):
            self.held = hard_state
            return False, None
        write = hard_state if hard_state is not None else self.held
        self.held = None
        if write is not None:
            self.durable = write
        return True, write
