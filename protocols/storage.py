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
from protocols.types import Entry, HardState


@dataclass(slots=True)
class StoredState:
    """What a store hands back on start: the hard state and the whole log after the sentinel."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)


class LogStore(Protocol):
    """Durable home of the log and hard state. Implementations live outside `protocols/`."""

    def load(self) -> StoredState:
        """Everything that survived, in index order, contiguous from index 1."""
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

    def load(self) -> StoredState:
        return StoredState(self._state.hard_state, list(self._state.entries))

    def persist(
        self,
        hard_state: HardState | None,
        truncate_after: int | None,
        entries: list[Entry],
    ) -> None:
        log = self._state.entries
        if truncate_after is not None:
            if truncate_after < 0:
                raise CallerError(f"truncate_after {truncate_after} < 0")
            del log[truncate_after:]
        if entries:
            first = entries[0].index
            if first > len(log) + 1:
                raise CallerError(f"gap: appending {first} after {len(log)}")
            del log[first - 1 :]
            for offset, entry in enumerate(entries):
                if entry.index != first + offset:
                    raise CallerError("entries to persist are not contiguous")
            log.extend(entries)
        if hard_state is not None:
            self._state.hard_state = hard_state
        self.persist_calls += 1

    @property
    def last_index(self) -> int:
        return len(self._state.entries)
