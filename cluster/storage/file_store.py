"""FileLogStore: the LogStore of the real runtime, one append-only file per node.

Files in the data directory::

    raft.log      the file header, then one checksummed record per persist() call
    raft.log.tmp  a log being created or compacted; only ever renamed over raft.log when
                  complete and fsynced, and deleted if found on open
    snapshot      the latest snapshot (see snapshot_file); snapshot.tmp: one being written
    LOCK          held with flock() while the store is open: two processes never share a log

save_snapshot() writes the snapshot file atomically first, then rewrites the log without the
entries it covers (a BASE record, the entries after it, the hard state). A crash between the
two leaves a new snapshot and an old log: opening drops the covered entries and finishes the
rewrite. The rewrite reads the log back, so its cost is the log since the last snapshot, which
the snapshot threshold bounds.

persist() encodes its truncation point, entries and hard state as one record, writes it with
one write and makes it durable with one fdatasync (policy `always`). Group commit comes from
the caller: the runtime calls persist() once per Ready, and a Ready holds every entry that
arrived while the previous persist was in flight, so under load many entries share an fsync.
Truncation is a record too, so the file is never rewritten in place; on open, a log made mostly
of dead records (truncated entries, superseded hard states) is rewritten compactly.

A failed write or fsync leaves the file in an unknown state (and after a failed fsync the
kernel may have dropped the dirty pages), so the store refuses all further work: the node must
restart, and recovery then cuts whatever half-record the failure left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import threading
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from types import TracebackType

from cluster.storage import snapshot_file
from cluster.storage.records import Batch, encode_base, encode_batch, file_header
from cluster.storage.recovery import RecoveryReport, Replay, replay, scan, with_snapshot
from protocols.errors import CallerError, StorageError
from protocols.snapshot import Snapshot
from protocols.storage import StoredState
from protocols.types import Entry, HardState

logger = logging.getLogger(__name__)

LOG_FILE = "raft.log"
TMP_FILE = "raft.log.tmp"
LOCK_FILE = "LOCK"
COMPACT_CHUNK = 4096  # entries per record when a log is rewritten
DEFAULT_COMPACT_MIN_BYTES = 8 << 20


class FsyncPolicy(StrEnum):
    """When persist() forces data to the device.

    `always` (the default) makes persist() durable on return. `never` leaves it to the kernel:
    a process crash loses nothing, a machine crash may lose or tear anything not yet written
    back. It exists for experiments only, and results taken with it must say so.
    """

    ALWAYS = "always"
    NEVER = "never"


def open_store(
    data_dir: Path,
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS,
    *,
    compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
) -> FileLogStore:
    """Open (or create) the log in `data_dir`, recovering from a crash; see `store.recovery`.

    Raises StorageError when the log cannot be trusted (bad header, corrupt middle, a record
    that does not decode) or when another process holds it.
    """
    return FileLogStore.open(data_dir, fsync, compact_min_bytes=compact_min_bytes)


class FileLogStore:
    """A durable LogStore over one append-only file. Thread-safe: calls are serialized."""

    def __init__(
        self,
        data_dir: Path,
        fsync: FsyncPolicy,
        *,
        lock_fd: int,
        log_fd: int,
        recovered: StoredState,
        recovery: RecoveryReport,
    ) -> None:
        """Use `open_store()`: this takes over already opened and recovered files."""
        self.data_dir = data_dir
        self.path = data_dir / LOG_FILE
        self.fsync_policy = fsync
        self.recovery = recovery
        # Fault injection (slow disk): sleep this long at every persist's sync point. Applies
        # under both policies, so a slow-disk experiment never silently does nothing.
        self.fsync_delay_seconds = 0.0
        # Counters for /metrics.
        self.persist_calls = 0
        self.fsync_count = 0
        self.fsync_seconds = 0.0
        self.bytes_written = 0
        self.entries_written = 0
        self.snapshots_saved = 0
        self.snapshot_bytes = 0  # size of the snapshot file
        self._lock = threading.Lock()
        self._lock_fd = lock_fd
        self._fd: int | None = log_fd
        self._end = recovery.compacted_to or recovery.valid_bytes
        self._snapshot = recovered.snapshot
        self._base = recovered.first_index - 1
        self._last_index = self._base + len(recovered.entries)
        self._loaded: StoredState | None = recovered  # served by the first load()
        self._failed: str | None = None

    # ---- opening ---------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        data_dir: Path,
        fsync: FsyncPolicy = FsyncPolicy.ALWAYS,
        *,
        compact_min_bytes: int = DEFAULT_COMPACT_MIN_BYTES,
    ) -> FileLogStore:
        """See `open_store()`."""
        try:
            if not data_dir.is_dir():
                data_dir.mkdir(parents=True)
                if fsync is FsyncPolicy.ALWAYS:
                    _sync_directory(data_dir.parent)  # the new directory's name is durable too
        except OSError as error:
            raise StorageError(f"cannot create data directory {data_dir}: {error}") from error
        lock_fd = _lock_directory(data_dir)
        try:
            return cls._open_locked(data_dir, fsync, lock_fd, compact_min_bytes)
        except BaseException:
            os.close(lock_fd)  # closing releases the flock
            raise

    @classmethod
    def _open_locked(
        cls, data_dir: Path, fsync: FsyncPolicy, lock_fd: int, compact_min_bytes: int
    ) -> FileLogStore:
        path = data_dir / LOG_FILE
        sync = fsync is FsyncPolicy.ALWAYS
        with _storage_errors(f"cannot open the log in {data_dir}"):
            (data_dir / TMP_FILE).unlink(missing_ok=True)  # an interrupted create or compaction
            (data_dir / snapshot_file.SNAPSHOT_TMP).unlink(missing_ok=True)
            created = not path.exists()
            if created:
                _write_new_file(data_dir, [], sync)
            data = path.read_bytes()
        snapshot = snapshot_file.read(data_dir)
        found = scan(data, path)
        recovered = replay(found.records, path)
        state = with_snapshot(recovered, snapshot, path)
        del data
        report = RecoveryReport(
            path, created, found.file_bytes, found.valid_end, len(found.records), found.tail_problem
        )
        with _storage_errors(f"cannot recover the log {path}"):
            if found.tail_problem is not None:
                logger.warning(
                    "%s: cut %d bytes of torn or corrupt tail (%s); kept %d records",
                    path,
                    report.dropped_bytes,
                    found.tail_problem,
                    report.records,
                )
                with open(path, "r+b") as file:
                    file.truncate(found.valid_end)
                    if sync:
                        os.fsync(file.fileno())
            unfinished = snapshot is not None and snapshot.index > recovered.base_index
            if unfinished:
                logger.warning("%s: finishing the log's compaction behind the snapshot", path)
            if unfinished or _worth_compacting(recovered, found.valid_end, compact_min_bytes):
                size = _write_new_file(data_dir, _compact_records(state), sync)
                logger.info("%s: compacted %d bytes to %d", path, found.valid_end, size)
                report = dataclasses.replace(report, compacted_to=size)
            log_fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        return cls(
            data_dir, fsync, lock_fd=lock_fd, log_fd=log_fd, recovered=state, recovery=report
        )

    # ---- the LogStore contract -------------------------------------------------------------

    def load(self) -> StoredState:
        """Everything durable, contiguous from index 1 (re-read from disk after a persist)."""
        with self._lock:
            self._check_usable()
            if self._loaded is None:
                with _storage_errors(f"cannot read {self.path}"):
                    data = self.path.read_bytes()
                found = scan(data, self.path)
                if found.tail_problem is not None:
                    raise StorageError(f"{self.path}: damaged while open ({found.tail_problem})")
                self._loaded = with_snapshot(
                    replay(found.records, self.path), self._snapshot, self.path
                )
            state = self._loaded
            return StoredState(state.hard_state, list(state.entries), state.snapshot)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Write the snapshot file atomically, then rewrite the log without what it covers."""
        with self._lock:
            self._check_usable()
            if snapshot.index <= self._base:
                return
            sync = self.fsync_policy is FsyncPolicy.ALWAYS
            self.snapshot_bytes = snapshot_file.write(self.data_dir, snapshot, sync)
            self._snapshot = snapshot
            self.snapshots_saved += 1
            try:
                data = self.path.read_bytes()
                found = scan(data, self.path)
                state = with_snapshot(replay(found.records, self.path), snapshot, self.path)
                del data
                size = _write_new_file(self.data_dir, _compact_records(state), sync)
                assert self._fd is not None
                os.close(self._fd)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
            except (OSError, StorageError) as error:
                self._failed = f"compacting the log behind snapshot {snapshot.index}: {error}"
                raise StorageError(f"{self.path}: {self._failed}; restart to recover") from error
            self._end = size
            self._base = snapshot.index
            self._last_index = snapshot.index + len(state.entries)
            self._loaded = state

    def persist(
        self,
        hard_state: HardState | None,
        truncate_after: int | None,
        entries: list[Entry],
    ) -> None:
        """Truncate, then append `entries`, then record `hard_state`, as one record.

        Durable on return under policy `always`. A CallerError (bad arguments) changes nothing;
        a StorageError (the disk failed) leaves the store unusable until reopened.
        """
        with self._lock:
            self._check_usable()
            last = self._check_arguments(truncate_after, entries)
            self.persist_calls += 1
            if truncate_after is not None and truncate_after >= self._last_index:
                truncate_after = None  # removes nothing: not worth a byte
            if hard_state is None and truncate_after is None and not entries:
                return
            try:
                record = encode_batch(Batch(truncate_after, entries, hard_state))
            except ValueError as error:  # only the size bound can fail here
                raise CallerError(str(error)) from error
            self._append(record)
            self._last_index = last
            self.entries_written += len(entries)
            self._loaded = None

    # ---- the rest of the public surface ----------------------------------------------------

    @property
    def last_index(self) -> int:
        """Index of the last durable entry."""
        return self._last_index

    @property
    def file_bytes(self) -> int:
        """Current size of the log file."""
        return self._end

    def close(self) -> None:
        """Release the files (idempotent). Everything persisted is already on disk."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                os.close(self._lock_fd)
                self._fd = None

    def __enter__(self) -> FileLogStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---- internals -------------------------------------------------------------------------

    def _check_usable(self) -> None:
        if self._fd is None:
            raise CallerError(f"store {self.path} is closed")
        if self._failed is not None:
            raise StorageError(f"{self.path}: unusable after an earlier failure ({self._failed})")

    def _check_arguments(self, truncate_after: int | None, entries: list[Entry]) -> int:
        """The last index after the call, or CallerError (the same rules as MemoryLogStore)."""
        last = self._last_index
        if truncate_after is not None:
            if truncate_after < self._base:
                raise CallerError(
                    f"truncate_after {truncate_after} below the snapshot {self._base}"
                )
            last = min(last, truncate_after)
        if entries:
            first = entries[0].index
            if first <= self._base:
                raise CallerError(f"entry index {first} is covered by the snapshot {self._base}")
            if first > last + 1:
                raise CallerError(f"gap: appending {first} after {last}")
            for offset, entry in enumerate(entries):
                if entry.index != first + offset:
                    raise CallerError("entries to persist are not contiguous")
            last = entries[-1].index
        return last

    def _append(self, record: bytes) -> None:
        assert self._fd is not None
        try:
            written = 0
            while written < len(record):
                written += os.pwrite(self._fd, record[written:], self._end + written)
            self._end += written
            self.bytes_written += written
            if self.fsync_delay_seconds > 0:
                time.sleep(self.fsync_delay_seconds)
            if self.fsync_policy is FsyncPolicy.ALWAYS:
                started = time.perf_counter()
                _datasync(self._fd)
                self.fsync_seconds += time.perf_counter() - started
                self.fsync_count += 1
        except OSError as error:
            self._failed = f"{error.strerror or error} while appending at offset {self._end}"
            raise StorageError(f"{self.path}: {self._failed}; restart to recover") from error


def _lock_directory(data_dir: Path) -> int:
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as error:
        raise StorageError(f"cannot create the lock file in {data_dir}: {error}") from error
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        os.close(fd)
        raise StorageError(
            f"{data_dir} is in use by another store (another node process?): {error}"
        ) from error
    return fd


def _write_new_file(data_dir: Path, records: list[bytes], sync: bool) -> int:
    """Atomically replace (or create) the log with a header and `records`; returns its size."""
    tmp = data_dir / TMP_FILE
    size = 0
    with open(tmp, "wb") as file:
        for chunk in [file_header(), *records]:
            file.write(chunk)
            size += len(chunk)
        file.flush()
        if sync:
            os.fsync(file.fileno())
    os.replace(tmp, data_dir / LOG_FILE)
    if sync:
        _sync_directory(data_dir)  # makes the new name itself durable
    return size


def _compact_records(state: StoredState) -> list[bytes]:
    """The live state as fresh records (base, chunks of entries, then the hard state)."""
    entries = state.entries
    snapshot = state.snapshot
    base = [encode_base(snapshot.index, snapshot.term)] if snapshot is not None else []
    records = base + [
        encode_batch(Batch(None, entries[start : start + COMPACT_CHUNK], None))
        for start in range(0, len(entries), COMPACT_CHUNK)
    ]
    if state.hard_state != HardState():
        records.append(encode_batch(Batch(None, [], state.hard_state)))
    return records


def _worth_compacting(recovered: Replay, file_bytes: int, min_bytes: int) -> bool:
    """More dead than live items, in a file big enough for the rewrite to matter."""
    return file_bytes >= min_bytes and recovered.dead_items > len(recovered.state.entries)


def _datasync(fd: int) -> None:
    # fdatasync is enough for an append: it also flushes the size, which reading the data
    # back needs; it skips timestamps. (Not every platform has it.)
    sync = getattr(os, "fdatasync", os.fsync)
    sync(fd)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    """OSError from the filesystem as a StorageError that says what was being done."""
    try:
        yield
    except OSError as error:
        raise StorageError(f"{what}: {error}") from error
