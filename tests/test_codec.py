"""The codec is where peer bytes enter: every message's ranges are checked there.

Messages do not check themselves when built (the simulator passes millions between engines
without the codec), so these tests pin that `decode` refuses every out-of-range field of every
message type, nested ones included, and round-trips every well-formed one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import msgpack
import pytest

from protocols import codec
from protocols.errors import DecodeError
from protocols.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendResponse,
    Envelope,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    MemberPosition,
    Message,
    PullCancel,
    PullRequest,
    PullResponse,
    PullStatus,
    SnapshotChunk,
    SnapshotRequest,
    StatusProbe,
    StatusReply,
    TimeoutNow,
    UpdatePosition,
    VoteRequest,
    VoteResponse,
)
from protocols.types import Command, Entry, Op

M = TypeVar("M")
_PUT = Command(Op.PUT, "k", "v", client_id="c1", seq=1)

EXAMPLES: list[Message] = [
    VoteRequest(3, 2, 10, pre_vote=True),
    VoteResponse(3, True),
    Heartbeat(3, 10, 2, 1, 12, 3),
    HeartbeatResponse(3, 1, 12, 3),
    TimeoutNow(3),
    AppendEntries(3, 4, 2, (Entry(2, 5, _PUT), Entry(3, 6, _PUT)), 4),
    AppendResponse(3, 6, reject=True, hint_index=4, hint_term=2),
    PullRequest(3, 4, 2, 7, last_index=5, last_term=2),
    PullResponse(
        3, 7, PullStatus.OK, (Entry(2, 5, _PUT),), 5, 2, 1, 5, 2, "n1", "n1", 0, 0, 4, 2, 1, 0.01
    ),
    PullCancel(3, 7),
    UpdatePosition(3, (MemberPosition("n2", 3, 10), MemberPosition("n3", 2, 8))),
    StatusProbe(3, 1.5, 12, 3, 10, 2, False, "n1", 1, False, 0.004),
    StatusReply(3, 1.5, 12, 3, 10, 2, False, "n1", "n1", 1, False),
    InstallSnapshot(3, 10, 2, 5, 99, 0, b"hello", True),
    InstallSnapshotResponse(3, 10, 2, 5),
    SnapshotRequest(3, 7, 10, 2, 64),
    SnapshotChunk(3, 7, 10, 2, 100, 99, 64, b"x" * 36, True),
]


def _example(message_type: type[M]) -> M:
    (message,) = [m for m in EXAMPLES if type(m) is message_type]
    assert isinstance(message, message_type)
    return message


def _wire(message: Message) -> list[Any]:
    decoded: list[Any] = msgpack.unpackb(codec.encode(Envelope("n1", "n2", message)))
    return decoded


def _int_fields(message: Message) -> list[int]:
    """Positions of the message's integer fields (bools and optional ints that are None aside)."""
    return [
        position
        for position, field in enumerate(dataclasses.fields(message))
        if type(getattr(message, field.name)) is int
    ]


def test_every_message_type_has_an_example() -> None:
    assert {type(message) for message in EXAMPLES} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_well_formed_messages_round_trip(message: Message) -> None:
    message.validate()
    envelope = Envelope("n1", "n2", message)
    assert codec.decode(codec.encode(envelope)) == envelope


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_a_negative_integer_in_any_field_is_refused(message: Message) -> None:
    positions = _int_fields(message)
    assert positions
    for position in positions:
        wire = _wire(message)
        wire[3][position] = -1
        with pytest.raises(DecodeError):
            codec.decode(msgpack.packb(wire))
        negative: dict[str, Any] = {dataclasses.fields(message)[position].name: -1}
        built = dataclasses.replace(message, **negative)
        with pytest.raises(ValueError):
            built.validate()


@pytest.mark.parametrize(
    "change",
    [
        lambda body: body[1].__setitem__(1, -1),  # a position's term
        lambda body: body[1].__setitem__(2, -1),  # a position's index
        lambda body: body[1].__setitem__(0, ""),  # no node
    ],
)
def test_a_bad_relayed_position_is_refused(change: Any) -> None:
    wire = _wire(UpdatePosition(3, (MemberPosition("n2", 3, 10),)))
    change([wire[3][0], wire[3][1][0]])
    with pytest.raises(DecodeError):
        codec.decode(msgpack.packb(wire))


@pytest.mark.parametrize("message_type", [AppendEntries, PullResponse])
def test_entries_that_do_not_follow_the_previous_point_are_refused(
    message_type: type[AppendEntries] | type[PullResponse],
) -> None:
    message = _example(message_type)
    entries_at = [f.name for f in dataclasses.fields(message)].index("entries")
    wire = _wire(message)
    wire[3][entries_at][0][1] += 1  # the first entry's index: a gap after the previous point
    with pytest.raises(DecodeError):
        codec.decode(msgpack.packb(wire))


@pytest.mark.parametrize("bad", [-1.0, float("inf"), float("nan")])
def test_bad_durations_are_refused(bad: float) -> None:
    for message in (
        dataclasses.replace(_example(StatusProbe), rtt=bad),
        dataclasses.replace(_example(PullResponse), primary_contact_age=bad),
    ):
        with pytest.raises(DecodeError):
            codec.decode(codec.encode(Envelope("n1", "n2", message)))


def test_a_continued_stream_request_keeps_every_other_field() -> None:
    """`PullRequest.continued` is built field by field: a field it forgot would be reset."""
    values: dict[str, Any] = {}
    for number, field in enumerate(dataclasses.fields(PullRequest), start=10):
        default = field.default
        values[field.name] = (not default) if isinstance(default, bool) else number
    request = PullRequest(**values)
    following = request.continued(request.after_index + 5, request.after_term + 1)
    expected = dataclasses.replace(
        request,
        after_index=request.after_index + 5,
        after_term=request.after_term + 1,
        last_index=max(request.after_index + 5, request.last_index),
        last_term=max(request.after_term + 1, request.last_term),
    )
    assert following == expected
