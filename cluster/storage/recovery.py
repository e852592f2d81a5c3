"""Reading a log file back: find the intact records, tell a torn tail from a corrupt middle.

The rule: walk records from the file header; at the first offset where no intact record starts,
look for any intact record further on. If there is one, the damage is in the middle of the log
(records written after it survived, so it once was complete and probably fsynced): refuse, with
the file and offset. If there is none, the damage is a tail that a crash left half-written (or
a last record that rotted): it is cut, and the caller reports how many bytes went.

With fsync policy `always`, each persist() is fsynced before the next is written, so a crash can
only tear the last record and recovery always succeeds. With `never`, the kernel may write pages
out of order and a crash can leave a hole before intact records: that refuses to start.

Nothing here writes: the caller decides what to do with the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cluster.storage.records import (
    FILE_HEADER_SIZE,
    RECORD_MARKER,
    MalformedRecord,
    RawRecord,
    RecordType,
    check_file_header,
    decode_base,
    decode_batch,
    parse_record,
)
from protocols.errors import StorageError
from protocols.snapshot import Snapshot
from protocols.storage import StoredState
from protocols.types import Entry, HardState


@dataclass(frozen=True, slots=True)
class Scan:
    """The intact records of a file (with their offsets) and where the good part ends."""

    records: list[tuple[int, RawRecord]]
    valid_end: int
    file_bytes: int
    tail_problem: str | None  # why the bytes after `valid_end` were not read, if any


@dataclass(slots=True)
class Replay:
    """The state the records add up to, and how much of the file is dead weight."""

    state: StoredState = field(default_factory=StoredState)
    records: int = 0
    dead_items: int = 0  # entries removed by truncation + hard states superseded by later ones
    base_index: int = 0  # the file's log starts after (base_index, base_term)
    base_term: int = 0


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What opening a store found and did; `dropped_bytes > 0` means a tail was cut."""

    path: Path
    created: bool  # there was no log: a fresh, empty store
    file_bytes: int  # size found on disk
    valid_bytes: int  # size kept
    records: int  # intact records replayed
    tail_problem: str | None  # what was wrong at offset `valid_bytes`, when a tail was cut
    compacted_to: int | None = None  # new file size when the log was rewritten on open

    @property
    def dropped_bytes(self) -> int:
        return self.file_bytes - self.valid_bytes


def scan(data: bytes, path: Path) -> Scan:
    """Split `data` (a whole log file) into intact records; StorageError if the middle is bad."""
    problem = check_file_header(data)
    if problem is not None:
        raise StorageError(f"{path}: {problem}; refusing to start")
    records: list[tuple[int, RawRecord]] = []
    offset = FILE_HEADER_SIZE
    while offset < len(data):
        parsed = parse_record(data, offset)
        if isinstance(parsed, str):
            later = find_intact_record(data, offset + 1)
            if later is not None:
                raise StorageError(
                    f"{path}: corrupt record at offset {offset} ({parsed}), followed by an"
                    f" intact record at offset {later}: the middle of the log is damaged and"
                    " acknowledged entries may be lost; refusing to start (restore the data"
                    " directory, or wipe it and re-add the node as a new member)"
                )
            return Scan(records, offset, len(data), f"offset {offset}: {parsed}")
        records.append((offset, parsed))
        offset = parsed.end
    return Scan(records, offset, len(data), None)


def find_intact_record(data: bytes, start: int) -> int | None:
    """The offset of the first intact record at or after `start`, if any."""
    position = data.find(RECORD_MARKER, start)
    while position != -1:
        if not isinstance(parse_record(data, position), str):
            return position
        position = data.find(RECORD_MARKER, position + 1)
    return None


def replay(records: list[tuple[int, RawRecord]], path: Path) -> Replay:
    """Apply the records in order, as MemoryLogStore.persist would; StorageError if one is wrong.

    Every record here passed its checksums, so one that does not make sense was written that
    way (a bug or another version), not torn by a crash: it is never cut silently.
    """
    entries: list[Entry] = []
    hard_state = HardState()
    dead = 0
    hard_states = 0
    base = base_term = 0
    for offset, record in records:
        where = f"{path}: record at offset {offset}"
        if record.record_type == RecordType.BASE and record.flags == 0:
            try:
                base, base_term = decode_base(record.payload)
            except MalformedRecord as error:
                raise StorageError(f"{where}: bad base record ({error}); refusing") from error
            dead += len(entries)
            entries = []
            continue
        if record.record_type != RecordType.BATCH or record.flags != 0:
            raise StorageError(
                f"{where} has type {record.record_type} and flags {record.flags:#x}, which this"
                " version does not write (a newer format?); refusing to start"
            )
        try:
            batch = decode_batch(record.payload)
        except MalformedRecord as error:
            raise StorageError(
                f"{where} passes its checksums but does not decode ({error}); refusing to start"
            ) from error
        truncate = batch.truncate_after
        if truncate is not None and truncate < base:
            raise StorageError(f"{where} truncates below the log's base {base}; refusing")
        if truncate is not None and truncate - base < len(entries):
            dead += len(entries) - (truncate - base)
            del entries[truncate - base :]
        if batch.entries:
            first = batch.entries[0].index
            if not base < first <= base + len(entries) + 1:
                raise StorageError(
                    f"{where} appends entries from index {first} to a log holding"
                    f" {base + 1}..{base + len(entries)}: a gap; refusing to start"
                )
            dead += len(entries) - (first - 1 - base)
            del entries[first - 1 - base :]
            entries.extend(batch.entries)
        if batch.hard_state is not None:
            hard_state = batch.hard_state
            hard_states += 1
    return Replay(
        StoredState(hard_state, entries),
        len(records),
        dead + max(hard_states - 1, 0),
        base,
        base_term,
    )


def with_snapshot(found: Replay, snapshot: Snapshot | None, path: Path) -> StoredState:
    """The stored state: the snapshot, and the file's log without what the snapshot covers.

    The log may still hold entries the snapshot covers (a crash between writing the snapshot
    and compacting the log): they are dropped here. Entries after the snapshot are kept only
    when the log's entry at its index has its term, as save_snapshot() does.
    """
    state = found.state
    base = found.base_index
    if snapshot is None:
        if base:
            raise StorageError(
                f"{path}: the log starts after index {base} but there is no snapshot file;"
                f" entries 1..{base} are lost; refusing to start"
            )
        return state
    if snapshot.index < base:
        raise StorageError(
            f"{path}: the log starts after index {base}, beyond the snapshot at"
            f" {snapshot.index}: entries in between are lost; refusing to start"
        )
    entries = state.entries
    position = snapshot.index - base  # entries before the snapshot point
    at_point = found.base_term if position == 0 else None
    if 0 < position <= len(entries):
        at_point = entries[position - 1].term
    kept = entries[position:] if at_point == snapshot.term else []
    return StoredState(state.hard_state, kept, snapshot)
