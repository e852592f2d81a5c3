"""The in-memory view of the replicated log that both engines share.

The engine keeps the log after its latest snapshot in memory and tracks which part is durable:

    index:  snapshot_index (sentinel) ... stable_index | handed out, not durable | unstable

The sentinel carries the snapshot's (index, term), so the log-matching check at the snapshot
point works as at any entry; entries at or below it are gone (`term_at` answers None).

`take_unstable()` hands the caller what must be persisted next (with a truncation point when a
conflict repair or rollback removed entries); `mark_persisted()` records that the caller made it
durable. Invariant: entries at or below `stable_index` are durable *and* still in memory, so a
leader may count itself in a quorum up to `stable_index` and no further.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence

from protocols.errors import CallerError
from protocols.types import NOOP, Command, Entry, Op, Position


class RaftLog:
    """Entries 1..last_index in memory, plus the bookkeeping of what is durable."""

    def __init__(
        self, entries: Sequence[Entry] = (), snapshot_index: int = 0, snapshot_term: int = 0
    ) -> None:
        self._offset = snapshot_index
        self._entries: list[Entry] = [Entry(snapshot_term, snapshot_index, NOOP)]
        # Running payload bytes beside `_entries`: `_sums[p]` counts every entry up to position
        # p from a fixed origin, so a batch is sized by two lookups, not by summing its entries
        # again for each follower and each retry.
        self._sums: list[int] = [0]
        for offset, entry in enumerate(entries, start=snapshot_index + 1):
            if entry.index != offset:
                raise CallerError(f"stored log is not contiguous at index {offset}")
            self._entries.append(entry)
            self._sums.append(self._sums[-1] + entry.command.payload_size())
        # Indexes of the configuration entries after the snapshot (protocols/membership.py),
        # and a counter bumped whenever that list changes, so the engine re-reads it only then.
        self.config_indexes: list[int] = [
            e.index for e in self._entries[1:] if e.command.op is Op.CONFIG
        ]
        self.config_version = 0
        self.stable_index = self.last_index
        self._unstable_from = self.last_index + 1
        self._pending_truncate: int | None = None
        self._handed_out_last = self.last_index
        self._floor_since_handout = self.last_index

    # ---- reading -------------------------------------------------------------------------

    @property
    def size_bytes(self) -> int:
        """Payload bytes of the entries in memory (the compaction threshold counts them)."""
        return self._sums[-1] - self._sums[0]

    @property
    def last_index(self) -> int:
        return self._offset + len(self._entries) - 1

    @property
    def snapshot_index(self) -> int:
        """The last index covered by the snapshot; entries up to it are not in memory."""
        return self._offset

    @property
    def snapshot_term(self) -> int:
        return self._entries[0].term

    @property
    def entry_count(self) -> int:
        """Entries held in memory (after the snapshot)."""
        return len(self._entries) - 1

    @property
    def last_term(self) -> int:
        return self._entries[-1].term

    @property
    def last_position(self) -> Position:
        entries = self._entries
        return Position(entries[-1].term, self._offset + len(entries) - 1)

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`, or None when there is no such entry."""
        position = index - self._offset  # (no last_index property call: asked very often)
        if 0 <= position < len(self._entries):
            return self._entries[position].term
        return None

    def entry(self, index: int) -> Entry:
        if not self._offset < index <= self.last_index:
            raise CallerError(
                f"no entry at {index} (log holds {self._offset + 1}..{self.last_index})"
            )
        return self._entries[index - self._offset]

    def entries(self, first: int, last: int) -> list[Entry]:
        """Entries first..last inclusive (clamped to what exists)."""
        start = max(first, self._offset + 1) - self._offset
        return self._entries[start : min(last, self.last_index) - self._offset + 1]

    def batch_after(self, index: int, max_entries: int, max_bytes: int) -> list[Entry]:
        """Up to `max_entries` entries after `index`, stopping before `max_bytes` (at least one).

        `index` must not be below the snapshot (the caller sends the snapshot instead).
        """
        if index < self._offset:
            raise CallerError(f"entries after {index} are compacted (snapshot {self._offset})")
        start = index + 1 - self._offset
        end = min(start + max_entries, len(self._entries))
        if start >= end:
            return []
        sums = self._sums
        limit = sums[start - 1] + max_bytes
        if sums[end - 1] > limit:  # the first entry past the limit ends it (sums only grow)
            end = max(bisect_right(sums, limit, start, end), start + 1)
        return self._entries[start:end]

    def matches(self, index: int, term: int) -> bool:
        """Log matching check: do we hold an entry at `index` with `term`?"""
        return self.term_at(index) == term

    def is_up_to_date(self, term: int, index: int) -> bool:
        """Raft §5.4.1: is a log ending at (term, index) at least as up to date as ours?"""
        return (term, index) >= (self.last_term, self.last_index)

    def conflict_hint(self, index: int, term: int) -> int:
        """The largest index <= `index` whose term is <= `term` (etcd's findConflictByTerm).

        A follower that rejects an append at (index, term) answers with this hint so the
        leader can skip a whole term of mismatching entries in one round trip. At or below the
        snapshot there is nothing to compare: the index is returned as it is (a leader then
        sends its snapshot; a follower's snapshot is committed, so it matches).
        """
        index = min(index, self.last_index)
        while index > self._offset and self._entries[index - self._offset].term > term:
            index -= 1
        return index

    # ---- writing -------------------------------------------------------------------------

    def append_new(self, term: int, commands: Iterable[Command]) -> list[Entry]:
        """Leader side: append commands at the end in `term`."""
        added = []
        sums = self._sums
        for command in commands:
            entry = Entry(term, self.last_index + 1, command)
            self._entries.append(entry)
            sums.append(sums[-1] + command.payload_size())
            added.append(entry)
            if command.op is Op.CONFIG:
                self.config_indexes.append(entry.index)
                self.config_version += 1
        return added

    def truncate_after(self, index: int) -> None:
        """Remove every entry after `index` (conflict repair or rollback)."""
        if index < self._offset:
            raise CallerError(f"truncate_after({index}) below the snapshot at {self._offset}")
        if index >= self.last_index:
            return
        del self._entries[index + 1 - self._offset :]
        del self._sums[index + 1 - self._offset :]
        if self.config_indexes and self.config_indexes[-1] > index:
            self.config_indexes = [i for i in self.config_indexes if i <= index]
            self.config_version += 1
        self._pending_truncate = (
            index if self._pending_truncate is None else min(self._pending_truncate, index)
        )
        self._unstable_from = min(self._unstable_from, index + 1)
        self.stable_index = min(self.stable_index, index)
        self._floor_since_handout = min(self._floor_since_handout, index)

    def merge(self, entries: Sequence[Entry]) -> int:
        """Follower side: add entries that are known to follow a matching prefix.

        Entries already present with the same term are kept (a duplicate or reordered message
        must not truncate anything, Raft §5.3); the first entry with a different term and
        everything after it is replaced. Returns the index of the last entry of the batch.
        """
        for position, entry in enumerate(entries):
            if entry.index <= self._offset:
                continue  # covered by the snapshot, hence committed: it matches
            existing = self.term_at(entry.index)
            if existing == entry.term:
                continue
            if existing is not None:
                self.truncate_after(entry.index - 1)
            if entry.index != self.last_index + 1:
                raise CallerError(f"merge gap at {entry.index} (last {self.last_index})")
            added = entries[position:]
            self._check_contiguous(added)
            self._entries.extend(added)
            sums = self._sums
            for e in added:
                sums.append(sums[-1] + e.command.payload_size())
            configs = [e.index for e in added if e.command.op is Op.CONFIG]
            if configs:
                self.config_indexes.extend(configs)
                self.config_version += 1
            break
        return entries[-1].index if entries else 0

    def _check_contiguous(self, entries: Sequence[Entry]) -> None:
        previous = entries[0].index - 1
        for entry in entries:
            if entry.index != previous + 1:
                raise CallerError("entries are not contiguous")
            previous = entry.index

    # ---- snapshots -----------------------------------------------------------------------

    def compact(self, index: int) -> None:
        """Forget entries up to `index`, which a snapshot now covers; they must be durable."""
        if not self._offset < index <= self.stable_index:
            raise CallerError(
                f"compact({index}): must be after the snapshot ({self._offset}) and durable"
                f" (stable {self.stable_index})"
            )
        sentinel = Entry(self._entries[index - self._offset].term, index, NOOP)
        self._entries = [sentinel, *self._entries[index - self._offset + 1 :]]
        self._sums = self._sums[index - self._offset :]  # (the sentinel's sum is the origin)
        self._offset = index
        if self.config_indexes and self.config_indexes[0] <= index:
            # (the caller keeps the configuration in force at `index` with the snapshot)
            self.config_indexes = [i for i in self.config_indexes if i > index]
            self.config_version += 1

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log by a received snapshot's point (the caller persists it).

        Everything after it goes too, also in storage (`take_unstable` hands out the
        truncation): the entries may have come from a deposed leader.
        """
        self._entries = [Entry(term, index, NOOP)]
        self._offset = index
        self._sums = [0]
        self.config_indexes = []
        self.config_version += 1
        self._pending_truncate = index
        self._unstable_from = index + 1
        self.stable_index = index
        self._handed_out_last = index
        self._floor_since_handout = index

    # ---- durability bookkeeping ------------------------------------------------------------

    def take_unstable(self) -> tuple[int | None, list[Entry]]:
        """Hand out (truncate_after, entries) that must be made durable next."""
        truncate = self._pending_truncate
        entries = self._entries[self._unstable_from - self._offset :]
        self._pending_truncate = None
        self._unstable_from = self.last_index + 1
        self._handed_out_last = self.last_index
        self._floor_since_handout = self.last_index
        return truncate, entries

    def mark_persisted(self) -> None:
        """The caller made the last handed-out part durable."""
        durable = min(self._handed_out_last, self._floor_since_handout)
        self.stable_index = max(self.stable_index, durable)

    @property
    def has_unstable(self) -> bool:
        return (
            self._pending_truncate is not None
            or self._unstable_from < self._offset + len(self._entries)  # (<= last_index)
        )
