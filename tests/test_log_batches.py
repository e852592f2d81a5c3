"""`RaftLog` sizes batches from running sums: they must match summing the entries one by one,
through appends, conflict repairs, truncations, compactions and restores."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.log import RaftLog
from protocols.types import Command, Entry, Op


def _command(size: int) -> Command:
    return Command(Op.PUT, "k", "v" * size, None, "c", 1)


def _reference_batch(log: RaftLog, index: int, max_entries: int, max_bytes: int) -> list[Entry]:
    """The rule spelled out: whole entries in order, at least one, stop before max_bytes."""
    batch: list[Entry] = []
    size = 0
    for entry in log.entries(index + 1, index + max_entries):
        size += entry.command.payload_size()
        if batch and size > max_bytes:
            break
        batch.append(entry)
    return batch


def _check(log: RaftLog, max_bytes: int) -> None:
    held = log.entries(log.snapshot_index + 1, log.last_index)
    assert log.size_bytes == sum(e.command.payload_size() for e in held)
    for index in range(log.snapshot_index, log.last_index + 2):
        for max_entries in (0, 1, 3, 64):
            expected = _reference_batch(log, index, max_entries, max_bytes)
            assert log.batch_after(index, max_entries, max_bytes) == expected


_sizes = st.lists(st.integers(0, 120), min_size=1, max_size=8)
_actions = st.one_of(
    st.tuples(st.just("append"), _sizes),
    st.tuples(st.just("merge"), st.integers(0, 6), _sizes),
    st.tuples(st.just("truncate"), st.integers(0, 6)),
    st.tuples(st.just("compact"), st.integers(1, 6)),
    st.tuples(st.just("restore"), st.integers(0, 4)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_actions, max_size=25), st.integers(16, 400))
def test_batches_and_size_match_summing_entry_by_entry(
    actions: list[tuple[object, ...]], max_bytes: int
) -> None:
    log = RaftLog([Entry(1, 1, _command(5)), Entry(1, 2, _command(50))])
    term = 1
    for action in actions:
        kind = action[0]
        if kind == "append":
            sizes = action[1]
            assert isinstance(sizes, list)
            log.append_new(term, [_command(size) for size in sizes])
        elif kind == "merge":  # a new leader's entries replacing our last `back` ones
            back, sizes = action[1], action[2]
            assert isinstance(back, int) and isinstance(sizes, list)
            term += 1
            first = max(log.last_index - back, log.snapshot_index) + 1
            log.merge([Entry(term, first + i, _command(s)) for i, s in enumerate(sizes)])
        elif kind == "truncate":
            back = action[1]
            assert isinstance(back, int)
            log.truncate_after(max(log.last_index - back, log.snapshot_index))
        elif kind == "compact":
            ahead = action[1]
            assert isinstance(ahead, int)
            log.take_unstable()
            log.mark_persisted()
            if log.stable_index > log.snapshot_index:
                log.compact(min(log.snapshot_index + ahead, log.stable_index))
        else:
            ahead = action[1]
            assert isinstance(ahead, int)
            log.restore(log.last_index + ahead, term)
        _check(log, max_bytes)
