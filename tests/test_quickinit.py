"""`quick_init` builds the same frozen instances as the dataclass's own `__init__`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest

from protocols.engine import ClientReply, ReplyStatus
from protocols.messages import AppendResponse, Envelope, PullRequest, TimeoutNow
from protocols.quickinit import quick_init
from protocols.types import Command, Op, Position


@dataclass(frozen=True, slots=True)
class _Plain:
    a: int
    b: str = "b"
    c: tuple[int, ...] = ()


@quick_init
@dataclass(frozen=True, slots=True)
class _Quick:
    a: int
    b: str = "b"
    c: tuple[int, ...] = ()


def test_same_fields_defaults_and_keywords_as_the_dataclass_init() -> None:
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        ((1,), {}),
        ((1, "x"), {}),
        ((), {"a": 2, "c": (3,)}),
        ((4,), {"b": ""}),
    ]
    for args, kwargs in calls:
        quick, plain = _Quick(*args, **kwargs), _Plain(*args, **kwargs)
        assert dataclasses.astuple(quick) == dataclasses.astuple(plain)
    quick_class: Any = _Quick  # (calls mypy would refuse)
    for bad_args, bad_kwargs in [((), {}), ((1,), {"d": 2}), ((1, "b", (), 4), {})]:
        with pytest.raises(TypeError):
            quick_class(*bad_args, **bad_kwargs)


def test_instances_stay_frozen_comparable_hashable_and_ordered() -> None:
    reply = AppendResponse(3, 7, hint_index=2)
    assert reply == AppendResponse(3, 7, False, 2, 0)
    assert hash(reply) == hash(AppendResponse(3, 7, False, 2, 0))
    assert reply != AppendResponse(3, 7)
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.term = 4  # type: ignore[misc]
    assert Position(1, 9) < Position(2, 0)
    assert repr(Envelope("a", "b", TimeoutNow(1))) == (
        "Envelope(src='a', dst='b', message=TimeoutNow(term=1))"
    )
    assert ClientReply(5, ReplyStatus.OK).index == 0
    assert PullRequest(1, 2, 3, 4).wait is True


def test_post_init_checks_still_run() -> None:
    with pytest.raises(ValueError, match="needs a value"):
        Command(Op.PUT, "k")


def test_only_frozen_slotted_plain_dataclasses_are_taken() -> None:
    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class Factory:
        a: list[int] = field(default_factory=list)

    for cls in (Mutable, NoSlots, Factory):
        with pytest.raises(TypeError):
            quick_init(cls)
