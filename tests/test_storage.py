"""FileLogStore: the durable LogStore of the real runtime (cluster/storage).

The crash tests work on file images: every persist() call is one write, so the file as it was
before and after each call gives every state a crash can leave, byte by byte.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import tempfile
import time
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cluster.storage import FileLogStore, FsyncPolicy, open_store
from cluster.storage import file_store as file_store_module
from cluster.storage.file_store import LOG_FILE, TMP_FILE
from cluster.storage.records import FILE_HEADER_SIZE, RecordType, file_header, frame
from protocols.errors import CallerError, StorageError
from protocols.storage import MemoryLogStore, StoredState
from protocols.types import NOOP, Command, Entry, HardState, Op


def put(term: int, index: int, value: str = "v") -> Entry:
    return Entry(term, index, Command(Op.PUT, f"k{index}", value, None, "client-1", index))


def run(first: int, count: int, term: int) -> list[Entry]:
    return [put(term, index) for index in range(first, first + count)]


# A history exercising every field and every kind of call: appends, a hard-state-only call,
# an explicit truncation, an overwriting append, vote None and set, CAS with expected None.
HISTORY: list[tuple[HardState | None, int | None, list[Entry]]] = [
    (HardState(1, "n1", 0), None, run(1, 3, 1)),
    (HardState(1, "n1", 2), None, []),
    (None, None, [Entry(1, 4, Command(Op.CAS, "k", "new", None, "c2", 7))]),
    (HardState(2, None, 2, 1), 2, [Entry(2, 3, NOOP)]),
    (None, None, [Entry(2, 3, Command(Op.DELETE, "ключ", None, None, "", 0)), put(2, 4, "é")]),
    (HardState(3, "n3", 4, 1), None, run(5, 2, 3)),
]


def expected_states() -> list[StoredState]:
    """The state after each prefix of HISTORY, computed by the reference store."""
    model = MemoryLogStore()
    states = [model.load()]
    for call in HISTORY:
        model.persist(*call)
        states.append(model.load())
    return states


def write_history(data_dir: Path) -> list[bytes]:
    """Persist HISTORY; the file image before the first call and after each call."""
    images = []
    with open_store(data_dir) as store:
        images.append((data_dir / LOG_FILE).read_bytes())
        for call in HISTORY:
            store.persist(*call)
            images.append((data_dir / LOG_FILE).read_bytes())
    return images


def reopen(data_dir: Path, image: bytes) -> FileLogStore:
    data_dir.mkdir(exist_ok=True)
    (data_dir / LOG_FILE).write_bytes(image)
    return open_store(data_dir, FsyncPolicy.NEVER)


def load_image(data_dir: Path, image: bytes) -> tuple[StoredState, int, str | None]:
    with reopen(data_dir, image) as store:
        return store.load(), store.recovery.dropped_bytes, store.recovery.tail_problem


@pytest.fixture
def images(tmp_path: Path) -> list[bytes]:
    return write_history(tmp_path / "history")


# ---- fresh stores and round trips ---------------------------------------------------------


def test_nonexistent_directory_is_created_with_an_empty_state(tmp_path: Path) -> None:
    data_dir = tmp_path / "a" / "b"
    with open_store(data_dir) as store:
        assert store.load() == StoredState()
        assert store.last_index == 0
        assert store.recovery.created
        assert store.recovery.dropped_bytes == 0
    assert (data_dir / LOG_FILE).read_bytes() == file_header()


def test_existing_empty_directory_gives_an_empty_state(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        assert store.load() == StoredState()


def test_every_call_survives_a_reopen_exactly(tmp_path: Path) -> None:
    states = expected_states()
    with open_store(tmp_path) as store:
        for call, state in zip(HISTORY, states[1:], strict=True):
            store.persist(*call)
            assert store.load() == state
            assert store.last_index == len(state.entries)
    with open_store(tmp_path) as store:
        assert store.load() == states[-1]
        assert not store.recovery.created
        assert store.recovery.records == len(HISTORY)
        assert store.recovery.tail_problem is None


def test_load_returns_a_copy(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.persist(None, None, run(1, 2, 1))
        store.load().entries.clear()
        assert len(store.load().entries) == 2


def test_caller_errors_write_nothing_and_leave_the_store_usable(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.persist(HardState(1), None, run(1, 3, 1))
        size = store.file_bytes
        bad_calls: list[tuple[int | None, list[Entry]]] = [
            (None, run(5, 1, 1)),  # gap after 3
            (1, run(3, 1, 1)),  # gap after a truncation to 1
            (None, [put(1, 4), put(1, 6)]),  # not contiguous
            (-1, []),
            (None, [put(1, 0)]),
        ]
        for truncate_after, entries in bad_calls:
            with pytest.raises(CallerError):
                store.persist(HardState(9), truncate_after, entries)
        assert store.file_bytes == size == (tmp_path / LOG_FILE).stat().st_size
        store.persist(None, None, run(4, 1, 1))
        assert store.last_index == 4
    with open_store(tmp_path) as store:
        assert store.load().hard_state == HardState(1)


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.close()
    store.close()
    with pytest.raises(CallerError):
        store.persist(None, None, run(1, 1, 1))


# ---- fsync policy and counters ------------------------------------------------------------


def test_policy_always_syncs_every_call_that_writes(tmp_path: Path) -> None:
    with open_store(tmp_path, FsyncPolicy.ALWAYS) as store:
        store.persist(HardState(1), None, run(1, 64, 1))
        store.persist(None, None, [])  # nothing to write: no record, no fsync
        store.persist(None, 99, [])  # truncates nothing
        store.persist(HardState(1, "n1", 3), None, [])
        assert store.persist_calls == 4
        assert store.fsync_count == 2
        assert store.entries_written == 64
        assert store.bytes_written == store.file_bytes - FILE_HEADER_SIZE


def test_policy_never_writes_without_syncing(tmp_path: Path) -> None:
    with open_store(tmp_path, FsyncPolicy.NEVER) as store:
        store.persist(HardState(2), None, run(1, 10, 2))
        assert store.fsync_count == 0
        assert store.bytes_written > 0
    with open_store(tmp_path, FsyncPolicy.NEVER) as store:
        assert store.load() == StoredState(HardState(2), run(1, 10, 2))


def test_fsync_delay_sleeps_before_every_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(time, "sleep", lambda s: calls.append(f"sleep {s}"))
    monkeypatch.setattr(file_store_module, "_datasync", lambda fd: calls.append("sync"))
    with open_store(tmp_path) as store:
        store.persist(None, None, run(1, 1, 1))
        assert calls == ["sync"]
        store.fsync_delay_seconds = 0.25
        store.persist(None, None, run(2, 1, 1))
        store.persist(None, None, run(3, 1, 1))
    assert calls == ["sync", "sleep 0.25", "sync", "sleep 0.25", "sync"]


# ---- crashes: torn and truncated writes ---------------------------------------------------


def test_a_torn_write_at_any_byte_recovers_the_previous_or_the_full_state(
    tmp_path: Path, images: list[bytes]
) -> None:
    """A crash during call i leaves image[i] plus any prefix of what call i wrote, maybe
    followed by zeros (size extended, data not written) or garbage (stale blocks)."""
    states = expected_states()
    data_dir = tmp_path / "crash"
    garbage = random.Random(7).randbytes(64)
    for call in range(len(HISTORY)):
        before, after = images[call], images[call + 1]
        assert after.startswith(before)
        for cut in range(len(before), len(after)):
            torn = after[:cut]
            for tail in (b"", bytes(len(after) - cut), garbage):
                image = torn + tail
                state, dropped, problem = load_image(data_dir, image)
                if image == after:  # the zeros were what the write would have put there
                    assert (state, dropped, problem) == (states[call + 1], 0, None)
                    continue
                assert state == states[call], (call, cut, tail[:4])
                assert dropped == len(image) - len(before)
                assert (problem is None) == (dropped == 0)
        state, dropped, problem = load_image(data_dir, after)
        assert (state, dropped, problem) == (states[call + 1], 0, None)


def test_the_cut_tail_is_removed_from_disk_and_appends_continue(
    tmp_path: Path, images: list[bytes]
) -> None:
    torn = images[-1][:-3]
    with reopen(tmp_path, torn) as store:
        assert store.recovery.dropped_bytes == len(torn) - len(images[-2])
        assert store.recovery.tail_problem is not None
        assert store.recovery.tail_problem.startswith(f"offset {len(images[-2])}:")
        assert (tmp_path / LOG_FILE).stat().st_size == len(images[-2])
        last = store.last_index
        store.persist(HardState(4, "n2", 1), None, run(last + 1, 2, 4))
        expected = store.load()
    with open_store(tmp_path) as store:
        assert store.recovery.tail_problem is None
        assert store.load() == expected


def test_a_flipped_byte_anywhere_is_cut_at_the_tail_and_refused_elsewhere(
    tmp_path: Path, images: list[bytes]
) -> None:
    """Every byte is covered by a checksum: a flip in the last record loses only that record;
    a flip in the file header or in an earlier record refuses to start, naming the offset."""
    states = expected_states()
    final = images[-1]
    starts = [len(image) for image in images[:-1]]  # where each record begins
    data_dir = tmp_path / "flip"
    for position in range(len(final)):
        damaged = bytearray(final)
        damaged[position] ^= 0x01 if position % 2 else 0xFF
        if position >= starts[-1]:
            state, dropped, problem = load_image(data_dir, bytes(damaged))
            assert state == states[-2]
            assert dropped == len(final) - starts[-1]
            assert problem is not None and problem.startswith(f"offset {starts[-1]}:")
            continue
        with pytest.raises(StorageError) as caught:
            reopen(data_dir, bytes(damaged))
        message = str(caught.value)
        assert str(data_dir / LOG_FILE) in message and "refusing to start" in message
        if position >= FILE_HEADER_SIZE:
            record_start = max(start for start in starts if start <= position)
            assert f"corrupt record at offset {record_start} " in message
        assert (data_dir / LOG_FILE).read_bytes() == damaged, "a refused file is left untouched"


# ---- files that are not logs, or logs this version did not write ----------------------------


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (b"", "shorter than the 16-byte header"),
        (b"RBLOG", "shorter than the 16-byte header"),
        (b"hello, this is not a log file at all", "not a raftbench log file"),
        (file_header()[:-1] + b"\x00", "file header checksum mismatch"),
    ],
)
def test_a_file_that_is_not_a_log_refuses_to_start(
    tmp_path: Path, content: bytes, phrase: str
) -> None:
    (tmp_path / LOG_FILE).write_bytes(content)
    with pytest.raises(StorageError, match=phrase):
        open_store(tmp_path)


def test_a_newer_format_version_refuses_to_start(tmp_path: Path) -> None:
    head = struct.pack("<8sHH", b"RBLOG\x00\r\n", 2, 0)
    (tmp_path / LOG_FILE).write_bytes(head + struct.pack("<I", zlib.crc32(head)))
    with pytest.raises(StorageError, match="unsupported log format version 2"):
        open_store(tmp_path)


@pytest.mark.parametrize(
    ("record", "phrase"),
    [
        (frame(RecordType.BATCH, b"\xc1"), "does not decode"),
        (frame(RecordType.BATCH, b"\x93\xc0\xc0\x00"), "does not decode"),
        (
            frame(RecordType.BATCH, b"\x94\xc0\xc0\x01\x91\x97\x01\xa3bad\xa0\xc0\xc0\xa0\x00"),
            "not a valid Op",
        ),
        (
            frame(RecordType.BATCH, b"\x94\xc0\xc0\x05\x91\x97\x01\xa4noop\xa0\xc0\xc0\xa0\x00"),
            "gap",
        ),
        (frame(7, b"\x90"), "type 7"),  # type: ignore[arg-type]
    ],
)
def test_an_intact_record_that_makes_no_sense_refuses_to_start(
    tmp_path: Path, record: bytes, phrase: str
) -> None:
    """A record that passes its checksums was written that way: never cut it as a torn tail."""
    (tmp_path / LOG_FILE).write_bytes(file_header() + record)
    with pytest.raises(StorageError, match=phrase):
        open_store(tmp_path)


# ---- the rest of the file-level behaviour ---------------------------------------------------


def test_a_second_store_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    with open_store(tmp_path), pytest.raises(StorageError, match="in use"):
        open_store(tmp_path)
    with open_store(tmp_path) as store:  # closing released the lock
        assert store.load() == StoredState()


def test_a_leftover_temporary_file_is_discarded(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.persist(HardState(1), None, run(1, 2, 1))
    (tmp_path / TMP_FILE).write_bytes(b"half a compaction")
    with open_store(tmp_path) as store:
        assert store.load() == StoredState(HardState(1), run(1, 2, 1))
    assert not (tmp_path / TMP_FILE).exists()


def test_a_log_of_mostly_dead_records_is_compacted_on_open(tmp_path: Path) -> None:
    with open_store(tmp_path) as store:
        store.persist(None, None, run(1, 1, 1))
        for term in range(1, 30):
            store.persist(HardState(term, "n1", 1), 1, run(2, 20, term))
        expected = store.load()
        size = store.file_bytes
    with open_store(tmp_path, compact_min_bytes=size + 1) as store:
        assert store.recovery.compacted_to is None  # below the size threshold
    with open_store(tmp_path, compact_min_bytes=0) as store:
        assert store.recovery.compacted_to is not None
        assert store.recovery.compacted_to < size // 10
        assert store.file_bytes == (tmp_path / LOG_FILE).stat().st_size
        assert store.load() == expected
        store.persist(None, None, run(22, 1, 29))
        expected = store.load()
    with open_store(tmp_path, compact_min_bytes=0) as store:
        assert store.recovery.compacted_to is None  # nothing dead left
        assert store.load() == expected


def test_a_failed_write_makes_the_store_refuse_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_store(tmp_path) as store:
        store.persist(HardState(1), None, run(1, 2, 1))

        real_pwrite = os.pwrite
        end = store.file_bytes

        def half_write(fd: int, data: bytes, offset: int) -> int:
            if offset == end:
                return real_pwrite(fd, data[:10], offset)  # a partial write, then the disk fails
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "pwrite", half_write)
        with pytest.raises(StorageError, match="No space left on device"):
            store.persist(HardState(2), None, run(3, 5, 2))
        monkeypatch.undo()
        with pytest.raises(StorageError, match="unusable"):
            store.persist(None, None, run(3, 1, 1))
    with open_store(tmp_path) as store:
        assert store.recovery.dropped_bytes == 10
        assert store.load() == StoredState(HardState(1), run(1, 2, 1))


def test_a_failed_fsync_makes_the_store_refuse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_sync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with open_store(tmp_path) as store:
        monkeypatch.setattr(file_store_module, "_datasync", failing_sync)
        with pytest.raises(StorageError, match="Input/output error"):
            store.persist(HardState(1), None, [])
        with pytest.raises(StorageError, match="unusable"):
            store.load()


# ---- against the reference store, on random histories with crashes --------------------------

commands = st.builds(
    Command,
    op=st.just(Op.PUT),
    key=st.text(min_size=1, max_size=8),
    value=st.text(max_size=12),
    expected=st.none() | st.text(max_size=4),
    client_id=st.text(max_size=4),
    seq=st.integers(0, 2**40),
)
hard_states = st.builds(
    HardState,
    term=st.integers(0, 2**33),
    vote=st.none() | st.text(max_size=4),
    commit=st.integers(0, 50),
    rollback_id=st.integers(0, 5),
)


class StoreMatchesMemoryStore(RuleBasedStateMachine):
    """FileLogStore behaves as MemoryLogStore; a crash during a persist() leaves the state
    before it or after it (never a mix, never less); a reopen changes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="raftbench-storage-"))
        self.store = open_store(self.directory, FsyncPolicy.NEVER)
        self.model = MemoryLogStore()

    def draw_call(self, data: st.DataObject) -> tuple[HardState | None, int | None, list[Entry]]:
        """A valid persist() call for the current log: truncation and overwrites included."""
        last = self.model.last_index
        truncate_after = data.draw(st.none() | st.integers(0, last + 2))
        kept = last if truncate_after is None else min(last, truncate_after)
        first = data.draw(st.integers(1, kept + 1))
        term = data.draw(st.integers(1, 9))
        rows = data.draw(st.lists(commands, max_size=6))
        entries = [Entry(term, first + offset, row) for offset, row in enumerate(rows)]
        return data.draw(st.none() | hard_states), truncate_after, entries

    @rule(data=st.data())
    def persist(self, data: st.DataObject) -> None:
        call = self.draw_call(data)
        self.store.persist(*call)
        self.model.persist(*call)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = open_store(self.directory, FsyncPolicy.NEVER)
        assert self.store.recovery.dropped_bytes == 0

    @rule(data=st.data(), damage=st.sampled_from(["cut", "zeros", "flip"]))
    def crash_during_a_persist(self, data: st.DataObject, damage: str) -> None:
        call = self.draw_call(data)
        start = self.store.file_bytes
        self.store.persist(*call)
        self.store.close()
        path = self.directory / LOG_FILE
        written = path.read_bytes()
        image = bytearray(written)
        at = data.draw(st.integers(start, len(image)))
        if damage == "flip" and at < len(image):
            image[at] ^= data.draw(st.integers(1, 255))
        elif damage == "zeros":
            image[at:] = bytes(len(image) - at)
        else:
            del image[at:]
        path.write_bytes(bytes(image))
        self.store = open_store(self.directory, FsyncPolicy.NEVER)
        if image == written:  # the damage changed nothing: the call survived whole
            self.model.persist(*call)
        else:  # the call is lost, and nothing before it
            assert self.store.recovery.valid_bytes == start
            assert self.store.recovery.dropped_bytes == len(image) - start

    @invariant()
    def same_state(self) -> None:
        assert self.store.load() == self.model.load()
        assert self.store.last_index == self.model.last_index

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.directory)


TestStoreMatchesMemoryStore = StoreMatchesMemoryStore.TestCase
TestStoreMatchesMemoryStore.settings = settings(
    max_examples=100,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
