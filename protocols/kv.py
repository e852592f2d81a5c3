"""The replicated key-value state machine and its client-session table.

A client stamps each command with (client_id, seq), seq increasing by one per new command and
unchanged on a retry. The state machine remembers, per client, the highest seq applied and its
result: a retry (same seq) gets the remembered result without applying twice, and an older seq
(a command the client already gave up on) is ignored. This is what makes "retry after an
unknown outcome" safe for compare-and-set.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.errors import InvariantViolation
from protocols.quickinit import quick_init
from protocols.types import Command, Entry, Op


@quick_init
@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one command or read.

    `ok` is False only for a compare-and-set whose expectation did not hold, or for a stale
    duplicate that was not applied. `value` is the value read, or the previous value for writes.
    """

    ok: bool
    value: str | None = None
    duplicate: bool = False


@dataclass(slots=True)
class Session:
    seq: int
    result: Result


class KVStateMachine:
    """Applies committed entries in index order; answers reads from the applied state."""

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self._sessions: dict[str, Session] = {}
        self.applied_index = 0

    @classmethod
    def restored(
        cls, applied_index: int, data: dict[str, str], sessions: dict[str, Session]
    ) -> KVStateMachine:
        """A state machine as a snapshot left it (see protocols/snapshot.py)."""
        machine = cls()
        machine._data = data
        machine._sessions = sessions
        machine.applied_index = applied_index
        return machine

    def data_items(self) -> list[tuple[str, str]]:
        return list(self._data.items())

    def session_items(self) -> list[tuple[str, Session]]:
        return list(self._sessions.items())

    def apply(self, entry: Entry) -> Result:
        """Apply the next committed entry. Entries must arrive exactly in index order."""
        if entry.index != self.applied_index + 1:
            raise InvariantViolation(
                f"apply out of order: entry {entry.index} after applied {self.applied_index}"
            )
        self.applied_index = entry.index
        command = entry.command
        op = command.op
        if op is Op.NOOP or op is Op.CONFIG:
            return Result(ok=True)  # (a configuration is the engine's business, not the KV's)
        client_id = command.client_id
        if client_id:
            session = self._sessions.get(client_id)
            if session is not None and command.seq <= session.seq:
                if command.seq == session.seq:
                    return Result(session.result.ok, session.result.value, duplicate=True)
                return Result(ok=False, duplicate=True)
            result = self._execute(command)
            # Replaced, never mutated: copies of this table share Session objects.
            self._sessions[client_id] = Session(command.seq, result)
            return result
        return self._execute(command)

    def _execute(self, command: Command) -> Result:
        # `is` tests in turn (every node applies every entry; a match statement would compare
        # the enum's strings by value)
        key = command.key
        data = self._data
        previous = data.get(key)
        op = command.op
        if op is Op.PUT:
            assert command.value is not None  # Command.__post_init__ guarantees it
            data[key] = command.value
            return Result(True, previous)
        if op is Op.DELETE:
            data.pop(key, None)
            return Result(True, previous)
        if op is Op.CAS:
            if previous != command.expected:
                return Result(False, previous)
            assert command.value is not None  # Command.__post_init__ guarantees it
            data[key] = command.value
            return Result(True, previous)
        raise InvariantViolation(f"unknown op in log: {command.op!r}")

    def get(self, key: str) -> str | None:
        """The value as of `applied_index` (None when absent)."""
        return self._data.get(key)

    def snapshot(self) -> dict[str, str]:
        """A copy of the data, for tests and end-of-run checks."""
        return dict(self._data)
