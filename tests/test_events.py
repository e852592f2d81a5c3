"""Protocol events: both engines record failover milestones with the caller's `now`."""

from __future__ import annotations

import math

import pytest

from cluster.sim.harness import Harness
from protocols.errors import CallerError
from protocols.events import EventKind, EventLog, ProtocolEvent


def kinds(h: Harness, node: str) -> list[EventKind]:
    return [event.kind for who, event in h.events if who == node]


def test_push_records_its_election_and_first_commit() -> None:
    h = Harness.create("push")
    h.elect("n1")
    assert kinds(h, "n1") == [
        EventKind.PRE_VOTE,
        EventKind.CANDIDATE,
        EventKind.ELECTED,
        EventKind.TERM_COMMITTED,
    ]
    assert kinds(h, "n2") == [EventKind.LEADER_LEARNED]
    assert {event.term for who, event in h.events if who == "n1"} == {1}
    assert all(event.t == h.now for _, event in h.events)  # no time passed in the harness


def test_pull_records_catch_up_between_election_and_first_commit() -> None:
    h = Harness.create("pull")
    h.elect("n1")
    assert kinds(h, "n1") == [
        EventKind.PRE_VOTE,
        EventKind.CANDIDATE,
        EventKind.ELECTED,
        EventKind.CATCHUP_START,
        EventKind.CATCHUP_TARGET,
        EventKind.CATCHUP_END,
        EventKind.TERM_COMMITTED,
    ]
    end = next(event for who, event in h.events if event.kind is EventKind.CATCHUP_END)
    assert end.detail == "reached"
    assert EventKind.SOURCE_CHANGED in kinds(h, "n2")


def test_an_election_start_carries_the_last_contact_with_a_leader() -> None:
    h = Harness.create("push")
    h.elect("n1")
    h.settle(0.3)
    contact = h.now
    h.crash("n1")
    h.elapse_election_timeout("n2")
    start = next(event for who, event in h.events if who == "n2" and event.term == 2)
    assert start.kind is EventKind.PRE_VOTE
    assert start.last_contact == pytest.approx(contact, abs=0.05)
    assert start.last_contact is not None and start.t > start.last_contact  # timer ran from it
    assert start.as_dict()["kind"] == "pre-vote"


def test_a_first_election_has_no_last_contact_in_json() -> None:
    event = ProtocolEvent(1.0, EventKind.PRE_VOTE, 1, last_contact=-math.inf)
    assert event.as_dict()["last_contact"] is None


def test_the_buffer_keeps_the_newest_events_and_counts_what_it_dropped() -> None:
    log = EventLog(capacity=2)
    for t in range(3):
        log.record(ProtocolEvent(float(t), EventKind.ELECTED, 1))
    assert log.dropped == 1
    assert [event.t for event in log.drain()] == [1.0, 2.0]
    assert not log


@pytest.mark.parametrize(
    ("t", "kind", "term"),
    [(math.nan, EventKind.ELECTED, 1), (0.0, "elected", 1), (0.0, EventKind.ELECTED, -1)],
)
def test_malformed_events_are_refused(t: float, kind: EventKind, term: int) -> None:
    with pytest.raises(CallerError):
        ProtocolEvent(t, kind, term)
