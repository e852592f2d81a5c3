"""The `spread` sync-source policy, one rule at a time (protocols/sync_source.py, "spread").

First the chooser (`SyncSourceSelector` on hand-made views), then the source (`PullEngine`
admitting, refusing and expiring pullers, driven through the `Harness`).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.sim.harness import Harness
from protocols.config import SyncSettings
from protocols.errors import CallerError
from protocols.messages import (
    Envelope,
    MemberPosition,
    PullCancel,
    PullRequest,
    PullResponse,
    PullStatus,
    UpdatePosition,
)
from protocols.pull import PullEngine
from protocols.sync_source import ChangeReason, MemberView, SyncSourceSelector, SyncView
from protocols.types import Position

T0 = 1000.0


def m(
    node: str,
    index: int,
    *,
    rtt: float = 0.010,
    source: str | None = None,
    pullers: int = 0,
    overflow: bool = False,
) -> MemberView:
    return MemberView(
        node,
        Position(1, index),
        T0,
        rtt=rtt,
        sync_source=source,
        pullers=pullers,
        overflow=overflow,
    )


def view(*members: MemberView, me: str = "me", at: int = 5, now: float = T0) -> SyncView:
    """Every member just heard from at `now`."""
    fresh = tuple(replace(member, last_heard=now) for member in members)
    return SyncView(me, Position(1, at), "p", fresh, now)


def spread(max_pullers: int = 2, **knobs: Any) -> SyncSourceSelector:
    settings_ = SyncSettings(policy="spread", max_pullers=max_pullers, **knobs)
    return SyncSourceSelector(settings_, random.Random(1), election_timeout=1.0)


# ---- the chooser ---------------------------------------------------------------------------


def test_the_nearest_source_with_a_free_slot_is_chosen() -> None:
    v = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.002, pullers=2), m("b", 8, rtt=0.004))
    sel = spread()
    assert sel.choose(v) == "b"
    assert not sel.overflow


def test_the_primary_is_preferred_within_the_threshold_when_it_has_a_slot() -> None:
    v = view(m("p", 10, rtt=0.004, pullers=1), m("a", 8, rtt=0.002))
    assert spread().choose(v) == "p"
    full = view(m("p", 10, rtt=0.004, pullers=2), m("a", 8, rtt=0.002))
    assert spread().choose(full) == "a"


def test_with_every_slot_taken_the_primary_is_an_overflow_choice() -> None:
    v = view(m("p", 10, rtt=0.050, pullers=2), m("a", 8, rtt=0.002, pullers=2))
    sel = spread()
    assert sel.choose(v) == "p"
    assert sel.overflow
    assert sel.status(T0)["overflow"] is True
    sel.drop(T0)
    assert not sel.overflow


def test_without_a_usable_primary_the_overflow_goes_to_the_nearest_candidate() -> None:
    v = view(
        m("p", 4, rtt=0.050, pullers=2),
        m("a", 8, rtt=0.009, pullers=2),
        m("b", 9, rtt=0.002, pullers=3),
    )
    sel = spread()
    assert sel.choose(v) == "b"  # the primary is behind us: not usable
    assert sel.overflow


def test_members_one_hop_from_the_primary_count_whatever_their_id_when_slots_run_out() -> None:
    """`z` syncs from the primary and is level with us: normally only a smaller id may chain
    to it level; with no other free slot, spread takes it (a normal slot holder, not overflow)."""
    v = view(m("p", 5, rtt=0.002, pullers=2), m("z", 5, rtt=0.002, source="p"))
    sel = spread()
    assert sel.choose(v) == "z"
    assert not sel.overflow
    overflowing = view(m("p", 5, rtt=0.002, pullers=2), m("z", 5, source="p", overflow=True))
    assert spread().choose(overflowing) == "p"  # `z` may be choosing us too: not it


def test_an_overflow_member_moves_as_soon_as_a_slot_is_free_elsewhere() -> None:
    sel = spread()
    full = view(m("p", 10, pullers=2), m("a", 8, pullers=2))
    assert sel.choose(full) == "p" and sel.overflow
    assert sel.should_change(view(m("p", 10, pullers=3), m("a", 8, pullers=2), now=T0 + 1)) is None
    freed = view(m("p", 10, pullers=3), m("a", 8, pullers=1), now=T0 + 2)
    assert sel.should_change(freed) is ChangeReason.POLICY
    decision = sel.update(freed)
    assert (decision.source, decision.previous, sel.overflow) == ("a", "p", False)


def test_a_member_holding_a_normal_slot_stays_however_full_its_source_is() -> None:
    sel = spread()
    assert sel.choose(view(m("p", 10, pullers=1), m("a", 8, pullers=0))) == "p"
    assert sel.should_change(view(m("p", 10, pullers=5), m("a", 8), now=T0 + 1)) is None


def test_closer_member_changes_only_towards_a_free_slot() -> None:
    sel = spread(change_threshold=0.005)
    assert sel.choose(view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.001, pullers=2))) == "p"
    full = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.001, pullers=2), now=T0 + 1)
    assert sel.should_change(full) is None
    free = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.001, pullers=1), now=T0 + 2)
    assert sel.should_change(free) is ChangeReason.CLOSER


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2"])
def test_max_pullers_must_be_a_positive_integer(value: object) -> None:
    with pytest.raises(CallerError, match=r"^sync\.max_pullers:"):
        SyncSettings(policy="spread", max_pullers=value).validate()  # type: ignore[arg-type]


NAMES = ("a", "b", "c", "d", "e")


@st.composite
def views(draw: st.DrawFn) -> SyncView:
    names = NAMES[: draw(st.integers(1, len(NAMES)))]
    members = tuple(
        MemberView(
            name,
            Position(draw(st.integers(1, 2)), draw(st.integers(0, 12))),
            T0 - draw(st.sampled_from([0.0, 2.0])),
            up=draw(st.booleans()),
            rtt=draw(st.one_of(st.none(), st.floats(0.0, 0.1))),
            sync_source=draw(st.one_of(st.none(), st.sampled_from((*names, "me")))),
            pullers=draw(st.integers(0, 4)),
            overflow=draw(st.booleans()),
        )
        for name in names
    )
    primary = draw(st.one_of(st.none(), st.sampled_from((*names, "me"))))
    position = Position(draw(st.integers(1, 2)), draw(st.integers(0, 12)))
    return SyncView("me", position, primary, members, T0)


@settings(max_examples=400, deadline=None)
@given(v=views(), cap=st.integers(1, 3))
def test_the_cap_never_strands_a_chooser(v: SyncView, cap: int) -> None:
    """Whenever `nearest` finds a source on a view, `spread` finds one too; a choice within
    the cap goes to a member with a free slot, and only a choice beyond it is overflow."""
    nearest = SyncSourceSelector(SyncSettings(), random.Random(1), election_timeout=1.0)
    sel = spread(cap)
    chosen = sel.choose(v)
    if nearest.choose(v) is not None:
        assert chosen is not None
    if chosen is None or v.primary == "me":
        return  # a catching-up primary takes whoever is ahead (and is always admitted)
    member = v.member(chosen)
    assert member is not None and member.up and member.sync_source != "me"
    if not sel.overflow:
        assert member.pullers < cap
    elif v.primary is not None and v.primary in sel.eligible(v, strict=False):
        assert chosen == v.primary  # overflow goes to the primary whenever it is usable


# ---- the source ----------------------------------------------------------------------------


def capped_primary(policy: str = "spread") -> tuple[Harness, PullEngine]:
    """n1 leads a 4-node cluster whose secondaries are down: the test plays them by hand.

    Check-quorum is off so that the lone primary keeps leading while slots expire.
    """
    sync = SyncSettings(policy=policy, max_pullers=1)
    h = Harness.create("pull", nodes=4, sync=sync, check_quorum=False)
    h.elect("n1")
    h.settle(0.5)
    for node in ("n2", "n3", "n4"):
        h.crash(node)
    primary = h["n1"]
    assert isinstance(primary, PullEngine)
    h.advance_time(primary.selector.silence_limit + 0.01, ["n1"])  # the real pullers' slots go
    h.inflight.clear()
    assert primary.pullers() == () and primary.role.value == "leader"
    return h, primary


def pull(h: Harness, src: str, request_id: int, *, overflow: bool = False) -> None:
    last = h["n1"].log.last_position
    request = PullRequest(
        h["n1"].term,
        last.index,
        last.term,
        request_id,
        last_index=last.index,
        last_term=last.term,
        stream=True,
        overflow=overflow,
    )
    h.do("n1", lambda e: e.receive(Envelope(src, "n1", request), h.now))


def answers(h: Harness, dst: str) -> list[PullStatus]:
    return [s.message.status for s in h.messages(PullResponse, src="n1") if s.dst == dst]


def test_a_full_source_refuses_the_way_it_refuses_a_cycle() -> None:
    h, primary = capped_primary()
    refused = primary.stats.pullers_refused
    pull(h, "n2", 1)
    assert primary.pullers() == ("n2",) and "n2" in primary._held
    pull(h, "n3", 1)
    assert answers(h, "n3") == [PullStatus.NOT_SYNCING]
    assert primary.pullers() == ("n2",)
    assert primary.stats.pullers_refused == refused + 1


def test_a_puller_with_nowhere_else_to_go_is_admitted_beyond_the_cap() -> None:
    h, primary = capped_primary()
    pull(h, "n2", 1)
    pull(h, "n3", 1, overflow=True)
    assert answers(h, "n3") == []  # held as a long poll, like any admitted puller
    assert primary.pullers() == ("n2", "n3")


def test_position_reports_keep_a_slot_and_silence_frees_it() -> None:
    h, primary = capped_primary()
    pull(h, "n2", 1)
    expiry = primary.selector.silence_limit
    report = UpdatePosition(primary.term, (MemberPosition("n2", primary.term, 1),))
    for _ in range(4):  # reports every half expiry: the slot stays
        h.advance_time(expiry / 2, ["n1"])
        h.do("n1", lambda e: e.receive(Envelope("n2", "n1", report), h.now))
    pull(h, "n3", 1)
    assert answers(h, "n3") == [PullStatus.NOT_SYNCING]
    h.inflight.clear()
    # n2 goes quiet: once its slot expires its stream is ended and n3 gets in.
    h.advance_time(expiry + 0.01, ["n1"])
    assert answers(h, "n2") == [PullStatus.NOT_SYNCING]
    pull(h, "n3", 2)
    assert answers(h, "n3") == []
    assert primary.pullers() == ("n3",)


def test_closing_the_stream_frees_the_slot_at_once() -> None:
    h, primary = capped_primary()
    pull(h, "n2", 7)
    h.do("n1", lambda e: e.receive(Envelope("n2", "n1", PullCancel(e.term, 6)), h.now))
    assert primary.pullers() == ("n2",)  # not the request it holds: ignored
    h.do("n1", lambda e: e.receive(Envelope("n2", "n1", PullCancel(e.term, 7)), h.now))
    assert primary.pullers() == ()
    pull(h, "n3", 1)
    assert primary.pullers() == ("n3",)


def test_other_policies_admit_everyone() -> None:
    h, primary = capped_primary("nearest")
    for node in ("n2", "n3", "n4"):
        pull(h, node, 1)
    assert answers(h, "n4") == []
    assert primary.pullers() == ("n2", "n3", "n4")


def test_status_shows_the_tree_depth_and_pullers() -> None:
    h = Harness.create("pull", nodes=5, sync=SyncSettings(policy="spread", max_pullers=2))
    h.elect("n1")
    h.settle(2.0)
    status = {n: h[n].status() for n in ("n1", "n2", "n3", "n4", "n5")}
    assert status["n1"].sync_depth == 0
    for node, st_ in status.items():
        assert len(st_.pullers) <= 2
        if node != "n1":
            assert st_.sync_source is not None
            parent = status[st_.sync_source]
            assert st_.sync_depth == (parent.sync_depth or 0) + 1
            assert node in parent.pullers
    assert sorted(st_.sync_depth or 0 for st_ in status.values()) == [0, 1, 1, 2, 2]
