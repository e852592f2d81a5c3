"""PullerSlots: the slots a `spread` source hands out, kept by activity, freed by silence."""

from __future__ import annotations

import pytest

from protocols.errors import CallerError
from protocols.pullers import PullerSlots

EXPIRY = 1.0


def test_admits_up_to_the_limit_then_refuses() -> None:
    slots = PullerSlots(2, EXPIRY)
    assert slots.admit("a", 0.0) and slots.admit("b", 0.0)
    assert not slots.admit("c", 0.0)
    assert slots.pullers(0.0) == ("a", "b")
    assert slots.admit("a", 0.1)  # a holder is admitted again (its request is renewed)


def test_an_overflow_request_is_admitted_beyond_the_limit() -> None:
    slots = PullerSlots(1, EXPIRY)
    assert slots.admit("a", 0.0)
    assert slots.admit("b", 0.0, overflow=True)
    assert slots.count(0.0) == 2
    assert not slots.admit("c", 0.0)


def test_a_silent_puller_loses_its_slot_after_the_expiry() -> None:
    slots = PullerSlots(1, EXPIRY)
    slots.admit("a", 0.0)
    assert slots.holds("a", EXPIRY)  # exactly at the limit it still holds it
    assert not slots.admit("b", EXPIRY)
    assert slots.admit("b", EXPIRY + 0.01)
    assert not slots.holds("a", EXPIRY + 0.01)


def test_refresh_keeps_a_slot_but_never_grants_one() -> None:
    slots = PullerSlots(1, EXPIRY)
    slots.admit("a", 0.0)
    for t in (0.8, 1.6, 2.4):
        slots.refresh("a", t)
        slots.refresh("b", t)
    assert slots.pullers(3.0) == ("a",)
    assert not slots.admit("b", 3.0)


def test_release_frees_the_slot_at_once() -> None:
    slots = PullerSlots(1, EXPIRY)
    slots.admit("a", 0.0)
    slots.release("a")
    slots.release("zz")  # unknown: nothing happens
    assert slots.admit("b", 0.0)


def test_without_a_limit_everyone_is_admitted() -> None:
    slots = PullerSlots(None, EXPIRY)
    assert all(slots.admit(name, 0.0) for name in "abcdefg")
    assert slots.count(0.5) == 7


@pytest.mark.parametrize(("limit", "expiry"), [(0, 1.0), (1, 0.0), (1, float("inf"))])
def test_bad_settings_are_caller_errors(limit: int, expiry: float) -> None:
    with pytest.raises(CallerError):
        PullerSlots(limit, expiry)
