"""`WireSizer` must give exactly `len(codec.encode(envelope))`: the reports' byte figures
come from it, and it computes them without encoding every copy of a batch."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from test_codec import EXAMPLES

from protocols import codec
from protocols.messages import AppendEntries, Envelope, PullResponse, PullStatus
from protocols.types import Command, Entry, Op

# Integers and strings across msgpack's size classes (fixint, 8, 16, 32, 64 bits; fixstr,
# str 8, str 16), text beyond ASCII included.
_ints = st.one_of(
    st.integers(0, 130), st.integers(0, 70_000), st.integers(0, 2**40), st.integers(0, 2**63)
)
_texts = st.one_of(st.text(max_size=40), st.text(min_size=250, max_size=300))
_commands = st.one_of(
    st.builds(
        Command,
        st.sampled_from([Op.PUT, Op.CAS]),
        st.text(min_size=1, max_size=40),
        _texts,
        st.one_of(st.none(), _texts),
        st.text(max_size=20),
        _ints,
    ),
    st.builds(Command, st.just(Op.DELETE), st.text(min_size=1, max_size=10)),
    st.just(Command(Op.NOOP)),
)


_Batch = tuple[int, tuple[Entry, ...]]  # (prev_index, entries)


@st.composite
def _batches(draw: st.DrawFn) -> _Batch:
    prev_index = draw(_ints)
    commands = draw(st.lists(_commands, max_size=20))
    term = draw(_ints)
    return prev_index, tuple(
        Entry(term, prev_index + 1 + i, command) for i, command in enumerate(commands)
    )


def _messages(prev_index: int, entries: tuple[Entry, ...], number: int) -> list[Envelope]:
    """A leader's broadcast (same entries to two followers) and a pull answer with them."""
    append = AppendEntries(number, prev_index, 0, entries, number)
    pulled = PullResponse(
        number, number, PullStatus.OK, entries, number, 1, 0, number, 1, "n1", None,
        prev_index=prev_index, primary_contact_age=0.25,
    )  # fmt: skip
    return [
        Envelope("n1", "n2", append),
        Envelope("n1", "n3", dataclasses.replace(append, commit=number + 1)),
        Envelope("n2", "n3", pulled),
    ]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_batches(), _ints), min_size=1, max_size=6))
def test_sizes_equal_the_encoded_length(batches: list[tuple[_Batch, int]]) -> None:
    sizer = codec.WireSizer(capacity=3)  # small: the table is emptied on the way
    sent = [
        envelope
        for (prev_index, entries), number in batches
        for envelope in _messages(prev_index, entries, number)
    ]
    for envelope in sent + sent:  # the second pass finds every batch kept
        assert sizer.size(envelope) == len(codec.encode(envelope))


def test_every_message_type_is_sized_exactly() -> None:
    sizer = codec.WireSizer()
    for message in EXAMPLES:
        envelope = Envelope("n1", "n2", message)
        assert sizer.size(envelope) == len(codec.encode(envelope))


def test_equal_but_distinct_entries_are_sized_on_their_own() -> None:
    """A batch is recognised by its entries' identity, never by a key that merely matches."""
    sizer = codec.WireSizer()
    short = tuple(Entry(1, i, Command(Op.PUT, "k", "v", None, "c", i)) for i in range(1, 6))
    bigger = (Entry(1, i, Command(Op.PUT, "k", "v" * 300, None, "c", i)) for i in range(2, 6))
    longer = (short[0], *bigger)
    first = Envelope("n1", "n2", AppendEntries(1, 0, 0, short, 0))
    second = Envelope("n1", "n2", AppendEntries(1, 0, 0, longer, 0))
    assert sizer.size(first) == len(codec.encode(first))
    assert sizer.size(second) == len(codec.encode(second)) > len(codec.encode(first))
