"""Sync-source selection: one test per rule, then properties over random views.

Rules are those of protocols/sync_source.py's docstring, learned from MongoDB's
topology_coordinator.cpp (`_isEligibleSyncSource`, `_chooseNearbySyncSource`,
`shouldChangeSyncSource*`) with the deviations documented there.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.config import Config, SyncSettings
from protocols.errors import CallerError
from protocols.sync_source import (
    DENY_ON_DROP,
    POLICIES,
    RATE_WINDOW,
    ChangeReason,
    Exclusion,
    MemberView,
    PrimaryProgress,
    SyncSourceSelector,
    SyncView,
)
from protocols.types import Position

T0 = 1000.0
ELECTION_TIMEOUT = 1.0


def m(
    node: str,
    index: int,
    *,
    term: int = 1,
    up: bool = True,
    rtt: float | None = 0.010,
    source: str | None = None,
    heard: float = T0,
) -> MemberView:
    return MemberView(
        node=node,
        position=Position(term, index),
        last_heard=heard,
        up=up,
        rtt=rtt,
        sync_source=source,
    )


def view(
    *members: MemberView,
    me: str = "me",
    at: int = 5,
    term: int = 1,
    primary: str | None = "p",
    now: float = T0,
) -> SyncView:
    return SyncView(
        self_id=me, self_position=Position(term, at), primary=primary, members=members, now=now
    )


def selector(policy: str = "nearest", seed: int = 7, **knobs: object) -> SyncSourceSelector:
    settings_ = SyncSettings(policy=policy, **knobs)  # type: ignore[arg-type]
    return SyncSourceSelector(settings_, random.Random(seed), election_timeout=ELECTION_TIMEOUT)


def later(v: SyncView, seconds: float, members: tuple[MemberView, ...] | None = None) -> SyncView:
    """The view `seconds` later (with other `members` if given), every member just heard from."""
    now = v.now + seconds
    fresh = tuple(replace(member, last_heard=now) for member in (members or v.members))
    return replace(v, now=now, members=fresh)


# ---- eligibility, one rule at a time ---------------------------------------------------------
# Each view has the primary `p` (far, 50 ms) and one near candidate `a` (5 ms) that breaks the
# rule under test: with the rule, `a` is excluded and the primary is chosen instead.


def test_baseline_near_candidate_is_chosen() -> None:
    v = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005))
    sel = selector()
    assert sel.explain(v) == {"p": "eligible", "a": "eligible"}
    assert sel.choose(v) == "a"


def test_self_is_never_a_candidate() -> None:
    v = view(m("p", 10, rtt=0.050), m("me", 9, rtt=0.0))
    sel = selector()
    assert sel.explain(v)["me"] == Exclusion.SELF
    assert sel.choose(v) == "p"


def test_down_member_is_excluded() -> None:
    v = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005, up=False))
    sel = selector()
    assert sel.explain(v)["a"] == Exclusion.DOWN
    assert sel.choose(v) == "p"


def test_member_silent_longer_than_unreachable_after_is_excluded() -> None:
    sel = selector(unreachable_after=2.0)
    v = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005, heard=T0 - 2.5))
    assert sel.explain(v)["a"] == Exclusion.SILENT
    assert sel.choose(v) == "p"
    # Exactly at the limit it still counts as answering.
    at_limit = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005, heard=T0 - 2.0))
    assert selector(unreachable_after=2.0).choose(at_limit) == "a"


def test_silence_limit_defaults_to_the_election_timeout() -> None:
    sel = selector()
    assert sel.silence_limit == ELECTION_TIMEOUT
    v = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005, heard=T0 - 1.5))
    assert sel.explain(v)["a"] == Exclusion.SILENT


def test_denied_member_is_excluded() -> None:
    sel = selector()
    sel.deny("a", T0 - 1.0)
    v = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005))
    assert sel.explain(v)["a"] == Exclusion.DENIED
    assert sel.choose(v) == "p"


def test_member_syncing_from_the_chooser_is_excluded() -> None:
    v = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005, source="me"))
    sel = selector()
    assert sel.explain(v)["a"] == Exclusion.CYCLE
    assert sel.choose(v) == "p"


@pytest.mark.parametrize(("index", "term"), [(4, 1), (5, 1), (9, 0)])
def test_member_not_strictly_ahead_is_excluded(index: int, term: int) -> None:
    # behind, level, and a higher index in an older term (positions order by term first)
    v = view(m("p", 10, rtt=0.050), m("a", index, term=term, rtt=0.005))
    sel = selector()
    assert sel.explain(v)["a"] == Exclusion.NOT_AHEAD
    assert sel.choose(v) == "p"


def test_primary_level_with_the_chooser_is_eligible() -> None:
    v = view(m("p", 5), m("a", 5))
    sel = selector()
    assert sel.explain(v) == {"p": "eligible", "a": "not-ahead"}
    assert sel.choose(v) == "p"


def test_primary_behind_the_chooser_is_excluded() -> None:
    sel = selector("primary")
    v = view(m("p", 4))
    assert sel.explain(v)["p"] == Exclusion.NOT_AHEAD
    assert sel.choose(v) is None


def test_member_too_far_behind_the_primary_in_seconds_is_excluded() -> None:
    sel = selector(max_lag_seconds=30.0)
    start = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005), m("b", 9, rtt=0.020))
    assert sel.choose(start) == "a"  # the primary is first seen beyond 8 now
    v = later(start, 30.0)
    assert sel.lag_seconds(v, "a") == pytest.approx(30.0)
    assert sel.explain(v)["a"] == "eligible"  # exactly at the limit: still a candidate
    v = later(start, 31.0)
    assert sel.explain(v) == {"p": "eligible", "a": "too-far-behind", "b": "too-far-behind"}
    assert sel.eligible(v) == ("p",)
    assert sel.choose(v) == "p"


def test_member_too_far_behind_the_primary_in_entries_is_excluded() -> None:
    sel = selector(max_lag_seconds=0.0, max_lag_entries=100)
    v = view(m("p", 300, rtt=0.050), m("a", 199, rtt=0.005), m("b", 200, rtt=0.008))
    assert sel.explain(v) == {"p": "eligible", "a": "too-far-behind", "b": "eligible"}
    assert sel.choose(v) == "b"


def test_without_a_known_primary_nobody_is_too_far_behind() -> None:
    sel = selector(max_lag_entries=10)
    v = view(m("x", 300, rtt=0.050), m("a", 8, rtt=0.005), primary=None)
    assert sel.explain(v) == {"x": "eligible", "a": "eligible"}
    assert sel.choose(v) == "a"


def test_second_pass_ignores_the_lag_limit_when_nothing_else_is_left() -> None:
    # The primary is down; both secondaries are far behind it: a lagging source beats none.
    sel = selector(max_lag_entries=10)
    v = view(m("p", 300, up=False), m("a", 8, rtt=0.005), m("b", 9, rtt=0.003))
    assert sel.explain(v) == {"p": "down", "a": "too-far-behind", "b": "too-far-behind"}
    assert sel.eligible(v) == ()
    assert sel.eligible(v, strict=False) == ("a", "b")
    assert sel.choose(v) == "b"


def test_no_candidate_gives_none() -> None:
    sel = selector()
    v = view(m("p", 4), m("a", 5), m("b", 8, up=False))
    assert sel.choose(v) is None
    assert sel.source is None


# ---- nearest -----------------------------------------------------------------------------


def test_nearest_picks_the_lowest_rtt() -> None:
    v = view(m("p", 10, rtt=0.080), m("a", 8, rtt=0.030), m("b", 7, rtt=0.020))
    assert selector().choose(v) == "b"


def test_nearest_breaks_an_exact_tie_by_node_id() -> None:
    v = view(m("p", 10, rtt=0.080), m("b", 8, rtt=0.020), m("a", 7, rtt=0.020))
    assert selector().choose(v) == "a"


def test_nearest_prefers_the_primary_within_the_threshold() -> None:
    v = view(m("p", 10, rtt=0.024), m("a", 8, rtt=0.020))
    assert selector(change_threshold=0.005).choose(v) == "p"
    assert selector(change_threshold=0.003).choose(v) == "a"  # 4 ms apart: beyond 3 ms


def test_nearest_primary_preference_is_measured_from_the_lowest_rtt() -> None:
    # b is within 5 ms of the primary, but a is 9 ms below it: a wins whatever the order.
    v = view(m("b", 8, rtt=0.021), m("p", 10, rtt=0.025), m("a", 7, rtt=0.016))
    assert selector(change_threshold=0.005).choose(v) == "a"


def test_nearest_ranks_unmeasured_members_last() -> None:
    v = view(m("p", 10, rtt=None), m("a", 8, rtt=None), m("b", 7, rtt=0.200))
    assert selector().choose(v) == "b"


def test_nearest_with_no_rtt_measured_prefers_the_primary() -> None:
    v = view(m("a", 8, rtt=None), m("p", 10, rtt=None))
    assert selector().choose(v) == "p"


# ---- freshest, random, primary ---------------------------------------------------------------


def test_freshest_picks_the_most_advanced_member() -> None:
    v = view(m("p", 9, rtt=0.001), m("a", 12, term=1, rtt=0.050), m("b", 3, term=2, rtt=0.09))
    # (2, 3) is after (1, 12): terms order first
    assert selector("freshest").choose(v) == "b"


def test_freshest_breaks_ties_by_primary_then_rtt_then_id() -> None:
    assert selector("freshest").choose(view(m("a", 9, rtt=0.001), m("p", 9, rtt=0.05))) == "p"
    tie = view(m("c", 9, rtt=0.010), m("b", 9, rtt=0.005), m("a", 9, rtt=0.010), primary=None)
    assert selector("freshest").choose(tie) == "b"
    same = view(m("c", 9, rtt=0.010), m("a", 9, rtt=0.010), primary=None)
    assert selector("freshest").choose(same) == "a"


def test_random_is_seeded_and_only_picks_candidates() -> None:
    members = (m("p", 10), m("a", 8), m("b", 9), m("c", 7), m("d", 3), m("e", 9, up=False))
    v = view(*members)
    picks = [selector("random", seed=s).choose(v) for s in range(60)]
    again = [selector("random", seed=s).choose(v) for s in range(60)]
    assert picks == again
    assert set(picks) == {"p", "a", "b", "c"}  # d is behind, e is down: never picked


def test_primary_policy_never_chains() -> None:
    sel = selector("primary")
    v = view(m("p", 10, rtt=0.200), m("a", 8, rtt=0.001))
    assert sel.choose(v) == "p"
    assert sel.choose(replace(v, primary=None)) is None
    assert sel.choose(view(m("p", 10, up=False), m("a", 8))) is None


def test_primary_catching_up_chooses_among_those_ahead_of_it() -> None:
    # The chooser was just elected: whatever the policy, it pulls from the nearest member ahead.
    sel = selector("primary", max_lag_entries=1)
    v = view(m("a", 8, rtt=0.005), m("b", 9, rtt=0.010), m("c", 5, rtt=0.001), primary="me")
    assert sel.explain(v) == {"a": "eligible", "b": "eligible", "c": "not-ahead"}
    assert sel.choose(v) == "a"


# ---- fixed tree ------------------------------------------------------------------------------

TREE = (("me", "a"), ("a", "p"), ("b", "a"))


def test_fixed_uses_the_configured_source_even_when_it_is_not_the_nearest() -> None:
    sel = selector("fixed", fixed_tree=TREE)
    v = view(m("p", 10, rtt=0.001), m("a", 8, rtt=0.090), m("b", 9, rtt=0.001))
    assert sel.choose(v) == "a"


def test_fixed_source_may_be_level_but_not_behind() -> None:
    sel = selector("fixed", fixed_tree=TREE)
    assert sel.choose(view(m("p", 10), m("a", 5, source="p"))) == "a"
    assert sel.should_change(view(m("p", 10), m("a", 5))) is None  # level stays level-ok
    assert sel.choose(view(m("p", 10), m("a", 4))) == "p"


def test_fixed_falls_back_to_the_primary_and_returns_when_the_source_is_back() -> None:
    sel = selector("fixed", fixed_tree=TREE)
    down = view(m("p", 10), m("a", 8, up=False))
    assert sel.choose(down) == "p"
    assert sel.should_change(down) is None
    back = later(down, 1.0, (m("p", 10), m("a", 8)))
    assert sel.should_change(back) == ChangeReason.POLICY
    decision = sel.update(back)
    assert (decision.previous, decision.source, decision.changed) == ("p", "a", True)


def test_fixed_root_and_unlisted_members_sync_from_the_primary() -> None:
    sel = selector("fixed", fixed_tree=TREE)
    assert sel.choose(view(m("p", 10), m("me", 9), me="a")) == "p"  # a's source is p
    assert sel.choose(view(m("p", 10), m("a", 9), me="z")) == "p"  # z is not in the tree
    assert sel.choose(view(m("p", 10, up=False), m("a", 9), me="z")) is None


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        ((("a", "b"), ("b", "c"), ("c", "a")), "cycle"),
        ((("a", "a"),), "itself"),
        ((("a", "p"), ("a", "q")), "more than one source"),
        ((("a", "p"), ("b", "q")), "one root"),
        ((("a", "p"), ("b", "zz")), "not a member"),
        ((), "needs a tree"),
        ((("a",),), "pair"),
    ],
)
def test_fixed_tree_is_validated(tree: tuple[tuple[str, str], ...], message: str) -> None:
    settings_ = SyncSettings(policy="fixed", fixed_tree=tree)
    with pytest.raises(CallerError, match=message) as caught:
        settings_.validate(members=("a", "b", "c", "p", "q"))
    assert str(caught.value).startswith("sync.fixed_tree:")


# ---- deny-list -------------------------------------------------------------------------------


def test_deny_list_entries_expire() -> None:
    sel = selector(deny_seconds=10.0)
    until = sel.deny("a", T0, reason="fetch error")
    assert until == T0 + 10.0
    assert sel.is_denied("a", T0 + 9.999)
    assert sel.denied(T0 + 5.0) == {"a": T0 + 10.0}
    assert not sel.is_denied("a", T0 + 10.0)
    assert sel.denied(T0 + 10.0) == {}
    v = later(view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005)), 10.0)
    assert sel.choose(v) == "a"


def test_a_short_deny_does_not_cut_a_long_one_short() -> None:
    sel = selector()
    sel.deny("a", T0, seconds=60.0)
    assert sel.deny("a", T0 + 1.0, seconds=10.0) == T0 + 60.0
    assert sel.is_denied("a", T0 + 30.0)


def test_deny_rejects_a_non_positive_span() -> None:
    with pytest.raises(CallerError, match="deny"):
        selector().deny("a", T0, seconds=0.0)


def test_drop_with_deny_avoids_the_dropped_source() -> None:
    sel = selector()
    v = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005))
    assert sel.choose(v) == "a"
    assert sel.drop(T0, deny_seconds=5.0, reason="too stale") == "a"
    assert sel.source is None
    assert sel.choose(v) == "p"
    assert sel.status(T0)["denied"] == {"a": {"until": T0 + 5.0, "reason": "too stale"}}


# ---- re-selection ------------------------------------------------------------------------------


def chained() -> tuple[SyncSourceSelector, SyncView]:
    """A selector syncing from `a` (nearest) with the primary further away."""
    sel = selector()
    v = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005, source="p"))
    assert sel.choose(v) == "a"
    assert sel.should_change(v) is None
    return sel, v


def test_source_that_left_the_membership_is_dropped() -> None:
    sel, v = chained()
    assert sel.should_change(replace(v, members=(m("p", 10),))) == ChangeReason.NOT_A_MEMBER


def test_source_that_died_is_dropped() -> None:
    sel, v = chained()
    v = replace(v, members=(m("p", 10), m("a", 8, up=False)))
    assert sel.should_change(v) == ChangeReason.SOURCE_DOWN
    decision = sel.update(v)
    assert (decision.source, decision.reason) == ("p", ChangeReason.SOURCE_DOWN)
    assert not sel.is_denied("a", v.now)  # it is excluded while down anyway


def test_source_that_stops_answering_is_dropped_and_denied() -> None:
    sel, v = chained()
    quiet = later(v, 0.9)
    assert sel.should_change(quiet) is None
    silent = replace(
        quiet, now=T0 + 1.5, members=(m("p", 10, heard=T0 + 1.5), m("a", 8, heard=T0 + 0.4))
    )
    assert sel.should_change(silent) == ChangeReason.SOURCE_SILENT
    assert ChangeReason.SOURCE_SILENT in DENY_ON_DROP
    decision = sel.update(silent)
    assert (decision.previous, decision.source) == ("a", "p")
    assert sel.denied(silent.now) == {"a": silent.now + sel.settings.deny_seconds}


def test_denied_source_is_dropped() -> None:
    sel, v = chained()
    sel.deny("a", T0)
    assert sel.should_change(v) == ChangeReason.SOURCE_DENIED


def test_source_that_starts_syncing_from_us_is_dropped() -> None:
    sel, v = chained()
    v = replace(v, members=(m("p", 10), m("a", 8, source="me")))
    assert sel.should_change(v) == ChangeReason.CYCLE


def test_source_level_with_us_and_without_a_source_is_dropped() -> None:
    sel, _ = chained()
    level_chained = view(m("p", 10), m("a", 5, source="p"))
    assert sel.should_change(level_chained) is None  # it will get more from p
    level_alone = view(m("p", 10), m("a", 5, source=None))
    assert sel.should_change(level_alone) == ChangeReason.NOT_AHEAD
    behind = view(m("p", 10), m("a", 4, source="p"))
    assert sel.should_change(behind) == ChangeReason.NOT_AHEAD


def test_primary_level_with_us_is_kept() -> None:
    sel = selector("primary")
    v = view(m("p", 5))
    assert sel.choose(v) == "p"
    assert sel.should_change(v) is None


def test_source_lagging_a_candidate_by_more_than_the_limit_in_seconds_is_dropped() -> None:
    sel = selector(max_lag_seconds=30.0)
    start = view(m("p", 10, rtt=0.050), m("a", 6, rtt=0.005, source="p"), m("b", 9, rtt=0.03))
    assert sel.choose(start) == "a"
    # The primary moves on; b follows it, a stays stuck at 6 (first passed at T0).
    for step in range(1, 31):
        members = (
            m("p", 10 + step, rtt=0.050, heard=T0 + step),
            m("a", 6, rtt=0.005, source="p", heard=T0 + step),
            m("b", 9 + step, rtt=0.030, heard=T0 + step),
        )
        v = view(*members, now=T0 + step)
        assert sel.should_change(v) is None, step  # a is at most 30 s behind
    members = (
        m("p", 41, rtt=0.050, heard=T0 + 31),
        m("a", 6, rtt=0.005, source="p", heard=T0 + 31),
        m("b", 40, rtt=0.030, heard=T0 + 31),
    )
    v = view(*members, now=T0 + 31)
    assert sel.lag_seconds(v, "a") == pytest.approx(31.0)
    assert sel.lag_seconds(v, "b") == pytest.approx(0.0)
    assert sel.should_change(v) == ChangeReason.LAGGING
    decision = sel.update(v)
    assert (decision.source, decision.reason) == ("b", ChangeReason.LAGGING)
    assert sel.is_denied("a", v.now)


def test_source_lagging_in_entries_is_dropped() -> None:
    sel = selector(max_lag_seconds=0.0, max_lag_entries=100, change_threshold=0.0)
    assert sel.choose(view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005, source="p"))) == "a"
    near = view(m("p", 108), m("a", 8, rtt=0.005, source="p"), m("b", 108, rtt=0.03))
    assert sel.should_change(near) is None  # exactly 100 entries
    far = view(m("p", 109), m("a", 8, rtt=0.005, source="p"), m("b", 109, rtt=0.03))
    assert sel.should_change(far) == ChangeReason.LAGGING


def test_no_lag_reselection_without_an_eligible_better_candidate() -> None:
    sel = selector(max_lag_seconds=0.0, max_lag_entries=100)
    assert sel.choose(view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005, source="p"))) == "a"
    v = view(m("p", 500, up=False), m("a", 8, rtt=0.005, source="p"), m("b", 500, source="me"))
    assert sel.should_change(v) is None


def test_closer_member_beyond_the_threshold_triggers_a_change() -> None:
    sel = selector(change_threshold=0.005)
    assert sel.choose(view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.030, source="p"))) == "a"
    within = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.030, source="p"), m("b", 9, rtt=0.025))
    assert sel.should_change(within) is None
    beyond = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.030, source="p"), m("b", 9, rtt=0.024))
    assert sel.should_change(beyond) == ChangeReason.CLOSER
    decision = sel.update(beyond)
    assert (decision.source, decision.reason) == ("b", ChangeReason.CLOSER)
    assert not sel.is_denied("a", T0)  # nothing wrong with it: no deny


def test_closer_member_is_ignored_with_threshold_zero_or_other_policies() -> None:
    beyond = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.030, source="p"), m("b", 9, rtt=0.001))
    off = selector(change_threshold=0.0)
    assert off.choose(view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.030))) == "a"
    assert off.should_change(beyond) is None
    for policy in ("random", "freshest"):
        other = selector(policy)
        assert other.choose(view(m("p", 10, rtt=0.050, up=False), m("a", 8, rtt=0.030))) == "a"
        assert other.should_change(beyond) is None


def test_primary_chosen_on_a_near_tie_is_not_dropped_for_a_closer_member() -> None:
    # The primary won within the threshold; the same threshold must not make it flap away.
    sel = selector(change_threshold=0.005)
    v = view(m("p", 10, rtt=0.024), m("a", 8, rtt=0.020))
    assert sel.choose(v) == "p"
    assert sel.should_change(v) is None


def test_closer_member_changes_are_rate_limited_per_hour() -> None:
    sel = selector(change_threshold=0.005, max_changes_per_hour=3)
    rtts = [0.100, 0.080, 0.060, 0.040, 0.020]
    names = ["a", "b", "c", "d", "e"]

    def at(now: float, revealed: int) -> SyncView:
        # Members appear one by one, each closer than the last.
        members = [m("p", 10, rtt=0.5, heard=now)]
        members += [
            m(name, 10, rtt=rtt, source="p", heard=now)
            for name, rtt in zip(names[:revealed], rtts[:revealed], strict=True)
        ]
        return view(*members, now=now)

    assert sel.update(at(T0, 1)).source == "a"  # choice 1
    assert sel.update(at(T0 + 60, 2)).reason == ChangeReason.CLOSER  # choice 2
    assert sel.update(at(T0 + 120, 3)).reason == ChangeReason.CLOSER  # choice 3
    assert sel.source == "c"
    assert sel.changed_too_often(T0 + 180)
    held = sel.update(at(T0 + 180, 4))
    assert (held.source, held.reason) == ("c", None)
    assert sel.status(T0 + 180)["rate_limited"] is True
    # One hour after the first choice the oldest one no longer counts.
    assert sel.update(at(T0 + RATE_WINDOW - 1, 4)).reason is None
    moved = sel.update(at(T0 + RATE_WINDOW + 1, 4))
    assert (moved.source, moved.reason) == ("d", ChangeReason.CLOSER)


def test_rate_limit_does_not_hold_back_failure_driven_changes() -> None:
    sel = selector(max_changes_per_hour=1)
    v = view(m("p", 10, rtt=0.050), m("a", 8, rtt=0.005), m("b", 8, rtt=0.007))
    assert sel.choose(v) == "a"
    assert sel.changed_too_often(T0)
    dead = view(m("p", 10, rtt=0.050), m("a", 8, up=False), m("b", 8, rtt=0.007))
    assert sel.update(dead).source == "b"


def test_primary_policy_moves_to_a_new_primary() -> None:
    sel = selector("primary")
    assert sel.choose(view(m("p", 10), m("q", 10))) == "p"
    v = view(m("p", 10), m("q", 11), primary="q")
    assert sel.should_change(v) == ChangeReason.POLICY
    assert sel.update(v).source == "q"
    # While no primary is known, the old source is kept.
    assert sel.should_change(view(m("p", 10), m("q", 11), primary=None)) is None


def test_update_without_a_candidate_keeps_trying() -> None:
    sel = selector()
    v = view(m("p", 4), m("a", 3))
    first = sel.update(v)
    assert (first.source, first.changed) == (None, False)
    second = sel.update(later(v, 0.1, (m("p", 6),)))
    assert (second.source, second.reason, second.changed) == ("p", None, True)


# ---- lag clock --------------------------------------------------------------------------------


def test_progress_measures_time_since_the_primary_was_first_seen_beyond() -> None:
    progress = PrimaryProgress(horizon=90.0)
    progress.record(Position(1, 10), 100.0)
    progress.record(Position(1, 10), 105.0)  # no new sample for the same position
    progress.record(Position(1, 20), 110.0)
    assert len(progress) == 2
    assert progress.lag(Position(1, 9), 120.0) == 20.0  # primary was at 10 > 9 since 100
    assert progress.lag(Position(1, 10), 120.0) == 10.0  # beyond 10 since 110
    assert progress.lag(Position(1, 20), 120.0) == 0.0
    assert progress.lag(Position(2, 1), 120.0) == 0.0


def test_progress_forgets_what_a_shorter_primary_does_not_vouch_for() -> None:
    progress = PrimaryProgress(horizon=90.0)
    progress.record(Position(1, 10), 100.0)
    progress.record(Position(1, 20), 110.0)
    progress.record(Position(1, 15), 120.0)  # a new primary with a shorter log
    assert progress.lag(Position(1, 15), 125.0) == 0.0
    assert progress.lag(Position(1, 12), 125.0) == 5.0  # first seen beyond 12 at 120
    assert progress.lag(Position(1, 9), 125.0) == 25.0


def test_progress_keeps_a_bounded_history_with_lags_floored_at_the_horizon() -> None:
    progress = PrimaryProgress(horizon=90.0)
    for second in range(1000):
        progress.record(Position(1, second + 1), float(second))
    assert len(progress) <= 92
    assert progress.lag(Position(1, 0), 999.0) >= 90.0
    assert progress.lag(Position(1, 950), 999.0) == pytest.approx(49.0)


def test_time_going_backwards_is_a_caller_error() -> None:
    sel = selector()
    sel.choose(view(m("p", 10), now=T0))
    with pytest.raises(CallerError, match="backwards"):
        sel.choose(view(m("p", 10), now=T0 - 1))


# ---- settings and views ------------------------------------------------------------------------


def test_policies_are_named_once() -> None:
    assert POLICIES == ("primary", "nearest", "freshest", "random", "fixed", "spread")
    assert SyncSettings.POLICIES == POLICIES


def test_unknown_policy_is_rejected_naming_the_field() -> None:
    with pytest.raises(CallerError, match=r"^sync\.policy: unknown policy 'closest'"):
        SyncSettings(policy="closest").validate()
    with pytest.raises(CallerError, match=r"^sync\.policy:"):
        selector("closest")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_lag_seconds", -1.0),
        ("max_lag_seconds", float("nan")),
        ("change_threshold", float("inf")),
        ("unreachable_after", -0.5),
        ("deny_seconds", 0.0),
        ("stale_deny_seconds", -3.0),
        ("max_lag_entries", -1),
        ("max_changes_per_hour", 0),
        ("max_changes_per_hour", 2.5),
        ("max_lag_seconds", "30"),
        ("deny_seconds", True),
        ("fixed_tree", "a<-b"),
        ("fixed_tree", (("a", "b"), "cd")),
    ],
)
def test_bad_settings_are_rejected_naming_the_field(field: str, value: object) -> None:
    bad: dict[str, Any] = {field: value}
    with pytest.raises(CallerError, match=rf"^sync\.{field}:"):
        replace(SyncSettings(), **bad).validate()


def test_defaults_follow_mongodb_and_config_keeps_them() -> None:
    defaults = SyncSettings().validate()
    assert (defaults.policy, defaults.max_lag_seconds, defaults.change_threshold) == (
        "nearest",
        30.0,
        0.005,
    )
    assert (defaults.max_changes_per_hour, defaults.deny_seconds) == (3, 10.0)
    assert defaults.stale_deny_seconds == 60.0
    config = Config(node_id="n1", members=("n1", "n2", "n3")).validate()
    assert config.sync == defaults


def test_bad_views_are_rejected() -> None:
    with pytest.raises(CallerError, match="rtt"):
        m("a", 1, rtt=float("nan"))
    with pytest.raises(CallerError, match="rtt"):
        m("a", 1, rtt=-0.001)
    with pytest.raises(CallerError, match="last_heard"):
        m("a", 1, heard=float("nan"))
    with pytest.raises(CallerError, match="duplicate"):
        view(m("a", 1), m("a", 2))
    with pytest.raises(CallerError, match="now"):
        view(m("a", 1), now=float("inf"))
    never_heard = m("a", 9, heard=float("-inf"))
    assert selector().explain(view(never_heard))["a"] == Exclusion.SILENT


def test_election_timeout_must_be_positive() -> None:
    with pytest.raises(CallerError, match="election_timeout"):
        SyncSourceSelector(SyncSettings(), random.Random(1), election_timeout=0.0)


# ---- properties ------------------------------------------------------------------------------

NAMES = ("a", "b", "c", "d", "e", "f")
CHAINING = ("nearest", "freshest", "random", "spread")  # every name sorts before "me"


@st.composite
def views(draw: st.DrawFn) -> SyncView:
    count = draw(st.integers(min_value=1, max_value=len(NAMES)))
    names = NAMES[:count]
    members = []
    for name in names:
        members.append(
            MemberView(
                node=name,
                position=Position(draw(st.integers(1, 3)), draw(st.integers(0, 30))),
                last_heard=T0 - draw(st.sampled_from([0.0, 0.5, 2.0])),
                up=draw(st.booleans()),
                rtt=draw(st.one_of(st.none(), st.floats(0.0, 0.2))),
                sync_source=draw(st.one_of(st.none(), st.sampled_from((*names, "me")))),
            )
        )
    primary = draw(st.one_of(st.none(), st.sampled_from((*names, "me"))))
    position = Position(draw(st.integers(1, 3)), draw(st.integers(0, 30)))
    return SyncView("me", position, primary, tuple(members), T0)


@settings(max_examples=300, deadline=None)
@given(
    v=views(),
    policy=st.sampled_from(POLICIES),
    denied=st.sets(st.sampled_from(NAMES)),
    seed=st.integers(0, 2**16),
    lag_entries=st.sampled_from([0, 5]),
)
def test_chosen_source_is_always_eligible(
    v: SyncView, policy: str, denied: set[str], seed: int, lag_entries: int
) -> None:
    tree = (("me", "b"), ("b", "a"), ("c", "a")) if policy == "fixed" else ()
    sel = selector(policy, seed=seed, fixed_tree=tree, max_lag_entries=lag_entries)
    for name in denied:
        sel.deny(name, T0 - 1.0)
    reasons = sel.explain(v)
    relaxed = sel.eligible(v, strict=False)
    strict = sel.eligible(v)
    chosen = sel.choose(v)
    assert sel.source == chosen
    if chosen is None:
        if policy in CHAINING or v.primary == "me":
            assert relaxed == ()
        return
    assert chosen != "me"
    member = v.member(chosen)
    assert member is not None and member.up and chosen not in denied
    assert member.sync_source != "me"
    primary_neighbour = (
        policy in CHAINING and member.sync_source == v.primary != "me" and chosen < "me"
    )
    assert member.position >= v.self_position or primary_neighbour
    if v.primary == "me" or policy in CHAINING:
        assert chosen in relaxed
        if strict:
            assert chosen in strict
            assert reasons[chosen] == "eligible"
    elif policy == "primary":
        assert chosen == v.primary
    else:
        assert chosen in ("b", v.primary)
    if member.position == v.self_position:
        assert chosen == v.primary or (policy == "fixed" and chosen == "b") or primary_neighbour


@settings(max_examples=300, deadline=None)
@given(v=views())
def test_primary_policy_chooses_the_primary_whenever_it_is_usable(v: SyncView) -> None:
    sel = selector("primary")
    chosen = sel.choose(v)
    if v.primary == "me":
        return  # catching up: nearest rules (covered above)
    assert chosen in (None, v.primary)
    primary = v.member(v.primary)
    usable = (
        primary is not None
        and primary.up
        and primary.last_heard >= T0 - ELECTION_TIMEOUT
        and primary.sync_source != "me"
        and primary.position >= v.self_position
    )
    assert (chosen is not None) == usable


@settings(max_examples=300, deadline=None)
@given(
    positions=st.lists(
        st.tuples(st.integers(1, 2), st.integers(0, 8)), min_size=2, max_size=len(NAMES)
    ),
    primary_slot=st.integers(0, len(NAMES) - 1),
    policy=st.sampled_from(POLICIES),
    seed=st.integers(0, 10_000),
)
def test_choices_on_a_consistent_snapshot_never_form_a_cycle(
    positions: list[tuple[int, int]], primary_slot: int, policy: str, seed: int
) -> None:
    # Every member, the primary included (as if catching up), chooses in turn in a random order,
    # seeing the others' positions and the sources already chosen; with the sources' own
    # acceptance rule applied, the graph must be a forest.
    rng = random.Random(seed)
    names = NAMES[: len(positions)]
    primary = names[primary_slot % len(names)]
    at = {name: Position(*pos) for name, pos in zip(names, positions, strict=True)}
    rtt = {(a, b): rng.uniform(0.0, 0.1) for a in names for b in names}
    # A random tree for `fixed`: each member's source is one listed before it.
    tree = tuple((names[i], names[rng.randrange(i)]) for i in range(1, len(names)))
    source: dict[str, str | None] = {name: None for name in names}
    order = list(names)
    rng.shuffle(order)
    for chooser in order:
        members = tuple(
            MemberView(
                node=name,
                position=at[name],
                last_heard=T0,
                rtt=rtt[chooser, name],
                sync_source=source[name],
            )
            for name in names
            if name != chooser
        )
        v = SyncView(chooser, at[chooser], primary, members, T0)
        sel = selector(policy, seed=seed, fixed_tree=tree if policy == "fixed" else ())
        source[chooser] = sel.choose(v)

    # Each source then applies its own acceptance rule with its current state (PullEngine.
    # _accepts, and _recheck_held whenever its state changes): the primary serves anyone, a
    # member serves a puller it is strictly ahead of, or anyone while it syncs straight from
    # the primary, and never its own source. Edges it refuses are dropped, to a fixpoint.
    def accepts(src: str, puller: str) -> bool:
        if src == primary:
            return True
        if source[src] == puller:
            return False
        return at[src] > at[puller] or source[src] == primary

    # A catching-up primary pulls for a bounded time from a member ahead of it; it is not a
    # secondary and reports no sync source (the simulator's cycle check sees the same graph).
    source[primary] = None
    changed = True
    while changed:
        changed = False
        for puller, src in source.items():
            if src is not None and not accepts(src, puller):
                source[puller] = None
                changed = True
    for start in names:
        seen = {start}
        node = source[start]
        while node is not None:
            assert node not in seen, f"cycle through {node}: {source}"
            seen.add(node)
            node = source[node]


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(views(), min_size=1, max_size=8),
    policy=st.sampled_from(("nearest", "freshest", "random")),
    seed=st.integers(0, 2**16),
)
def test_same_inputs_give_the_same_decisions(steps: list[SyncView], policy: str, seed: int) -> None:
    timeline = [replace(v, now=T0 + 0.5 * i) for i, v in enumerate(steps)]
    first, second = selector(policy, seed=seed), selector(policy, seed=seed)
    assert [first.update(v) for v in timeline] == [second.update(v) for v in timeline]
    assert first.status(timeline[-1].now) == second.status(timeline[-1].now)


@pytest.mark.parametrize("index", [5, 4])
def test_primary_neighbour_is_eligible_when_level_or_behind_by_id_order(index: int) -> None:
    """Chaining to a member one hop from the primary, with a smaller id, even if our view
    shows it level or a little behind."""
    smaller = view(m("p", 10, rtt=0.050), m("a", index, rtt=0.001, source="p"))
    assert selector().explain(smaller)["a"] == "eligible"
    assert selector().choose(smaller) == "a"
    larger = view(m("p", 10, rtt=0.050), m("z", index, rtt=0.001, source="p"))
    assert selector().explain(larger)["z"] == Exclusion.NOT_AHEAD
    two_hops = view(m("p", 10, rtt=0.050), m("a", index, rtt=0.001, source="b"))
    assert selector().explain(two_hops)["a"] == Exclusion.NOT_AHEAD
    assert selector("primary").choose(smaller) == "p"


def test_unrecorded_choices_count_only_when_confirmed() -> None:
    """A candidate that never served (never confirmed) does not use the rate-limit budget."""
    sel = selector()
    for i in range(5):
        sel.drop(T0 + i)
        assert sel.choose(view(m("p", 10, heard=T0 + i), now=T0 + i), record=False) == "p"
    assert not sel.changed_too_often(T0 + 5)
    for i in range(3):
        sel.record_change(T0 + 5 + i)
    assert sel.changed_too_often(T0 + 8)
