"""Sync-source selection for the pull engine: whom a secondary pulls its entries from.

Theory of operation
-------------------
The pull engine holds one `SyncSourceSelector` and, whenever it learns something about the
other members (heartbeats, pull answers) or on a tick, builds a `SyncView` — what it believes
about every member *now* — and asks the selector a question:

* `update(view)` — the usual per-tick call: drop the current source if it should change, choose
  a new one if there is none, and say what happened (`Decision`);
* `choose(view)` / `should_change(view)` / `drop(now, ...)` — the same steps one by one;
* `deny(node, now, seconds)` — the engine saw a source fail (an error answer, TOO_STALE, bytes
  that do not decode): avoid it for a while;
* `explain(view)` — which rule excludes which member, for tests, logs and `/status`.

Everything is a function of the view, the settings, `now` (taken from the view) and the small
state kept here: the current source, the deny-list, the times of recent choices (rate limit)
and a short history of the primary's progress (lag in seconds). Randomness comes only from the
injected `random.Random`. Same inputs, same answers.

Eligibility (a member may be chosen only if all hold; checked in this order)
---------------------------------------------------------------------------
``self``            it is not the chooser;
``down``            it is up;
``silent``          it was heard from within `unreachable_after` (default: election timeout);
``denied``          it is not on the deny-list;
``cycle``           it is not itself syncing from the chooser (its last reported `sync_source`);
``not-ahead``       its position is strictly ahead of the chooser's. The primary may also be
                    level with the chooser: new entries are born there and it pulls from nobody,
                    so it cannot close a cycle (MongoDB allows this only for chaining-disabled
                    sets; here it keeps a caught-up secondary long-polling someone). Under the
                    `fixed` policy the configured source may be level too (the tree is acyclic).
                    Under the chaining policies a member that syncs straight from the primary
                    may be chosen even when level or a little behind in our view, if its id
                    sorts before the chooser's (`_primary_neighbour`): it stays within a round
                    trip of the primary, the lag rule still bounds it, and the id order keeps
                    two of them from choosing each other at once; the member re-checks with
                    its own state when asked to serve. (MongoDB
                    gets chaining from members being a little ahead of each other by chance;
                    members that pull from the same source stay level, so without this rule
                    two members of a remote region would both keep pulling across regions.);
``too-far-behind``  it is not more than the lag limit behind the primary (skipped when no
                    primary is known, or when the chooser is the primary).

Like MongoDB, choosing makes two passes: if no member passes every rule, ``too-far-behind`` is
dropped and the choice is made among the rest (a lagging source beats none).

Policies (`SyncSettings.policy`)
--------------------------------
``nearest``   lowest measured round-trip time; the primary wins if its RTT is within
              `change_threshold` of the lowest (MongoDB's "same data centre, prefer the
              primary"). Unknown RTTs rank last; ties go to the smaller node id. MongoDB
              compares candidates pairwise in member order; here the rule is order-free.
``primary``   the primary or nothing (chaining disabled).
``freshest``  the most advanced position; ties: the primary, then lower RTT, then node id.
``random``    uniformly among the candidates, drawn from the injected `random.Random`.
``fixed``     the source named by `fixed_tree` for this node; when that member is not usable
              (or this node is the root or is not in the tree) the primary, if usable.
``spread``    like ``nearest``, but only among candidates with a free slot: each source admits
              at most `max_pullers` members (as they last reported their count; the source's
              own table, `protocols/pullers.py`, is the authority and refuses the rest the way
              it refuses a would-be cycle: NOT_SYNCING, and the puller deny-lists it briefly).
              When no usual candidate has a free slot, members one hop from the primary count
              whatever their id (see `_primary_neighbour`). When none has one at all, the
              choice is an *overflow*: the primary if usable, else the nearest candidate; the
              pull request says so and the source admits it beyond its cap. So the cap never
              strands a member: whatever ``nearest`` could pull from, ``spread`` can. An
              overflow member moves on (``policy``) as soon as a slot is free elsewhere.
A primary that is still catching up (the view says the chooser is the primary) always uses the
``nearest`` rules: it needs whoever is ahead of it, whatever the configured policy.

Re-selection (`should_change`, first reason wins)
-------------------------------------------------
``not-a-member``     the source left the membership;
``source-down``      it is down;
``source-silent``    nothing heard from it for `unreachable_after`;
``source-denied``    the engine deny-listed it;
``cycle``            it now syncs from us;
``policy``           `primary`: the primary is usable and is not our source; `fixed`: the
                     configured source (or its fallback) is usable and is not our source;
                     `spread`: we pull beyond our source's cap (overflow) and another
                     candidate has a free slot (checked after the lag rule, see below);
``source-not-ahead`` it is behind us, or level with us while neither the primary nor syncing
                     from anyone (so it will never have more for us) — MongoDB's rule;
``source-lagging``   (chaining policies) another candidate is ahead of it by more than the lag
                     limit;
``closer-member``    (`nearest`; `spread`: only towards a free slot) a candidate's RTT is lower
                     than the source's by more than `change_threshold`, unless
                     `max_changes_per_hour` choices were already made in the last hour (every
                     successful `choose` counts, as in MongoDB).
`update` deny-lists a source it dropped as ``source-silent`` or ``source-lagging`` for
`deny_seconds`, so that the next choice does not land on it again at once.

Lag
---
Entries carry no wall-clock time, so lag is measured with the chooser's own clock:
`PrimaryProgress` records when this node first saw the primary's position pass each point.
The lag of a member at position p is ``now - (first time the primary was seen beyond p)``, 0 if
the primary has not been seen beyond p — "for how long has this member been missing an entry
the primary had". It is exact up to the heartbeat period (positions are only known when
reported) and starts counting when this node starts observing. The lag *between* a source and
a candidate ahead of it is the difference of their lags. `max_lag_entries` (off by default)
adds the plain index distance as a second limit. When the primary changes to one with a
shorter log, history beyond its position is forgotten.

Cycles, and what this cannot promise
------------------------------------
On a consistent snapshot no cycle can form: every edge goes to a strictly more advanced member
or to the primary, and the primary's own edge (catch-up only) goes strictly up. Views are not
consistent snapshots — positions and `sync_source` fields arrive by heartbeat and may be stale,
and a member that rolls back moves backwards — so a cycle of three or more can still be closed
with stale information. Only a two-member cycle is visible to the chooser (the ``cycle`` rule);
longer ones are broken by ``source-not-ahead`` when a member of the cycle has no source of its
own, and otherwise by ``source-lagging`` once the primary has moved on by the lag limit (the
same bound MongoDB lives with). The engine must fill `MemberView.position` with the freshest
value it knows (the newer of the heartbeat and the last pull answer), or a source that just sent
us entries looks behind us.

MongoDB sources read (rules learned, nothing copied): src/mongo/db/repl/topology_coordinator.cpp
(`chooseNewSyncSource`, `_chooseNearbySyncSource`, `_isEligibleSyncSource`,
`_choosePrimaryAsSyncSource`, `shouldChangeSyncSource*`, `RecentSyncSourceChanges`),
repl_server_parameters.idl, sync_source_resolver.cpp and bgsync.cpp (deny-list durations).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

from protocols.config import SyncSettings
from protocols.errors import CallerError
from protocols.quickinit import quick_init
from protocols.types import NodeId, Position

POLICIES: tuple[str, ...] = SyncSettings.POLICIES

CHAINING_POLICIES = frozenset({"nearest", "freshest", "random", "spread"})
RATE_WINDOW = 3600.0  # seconds over which `max_changes_per_hour` counts choices
LAG_HISTORY = 3.0  # keep the primary's progress for this many times max_lag_seconds (see trim)


class Exclusion(StrEnum):
    """Why a member cannot be a sync source right now (the first failing rule)."""

    SELF = "self"
    DOWN = "down"
    SILENT = "silent"
    DENIED = "denied"
    CYCLE = "cycle"
    NOT_AHEAD = "not-ahead"
    TOO_FAR_BEHIND = "too-far-behind"


class ChangeReason(StrEnum):
    """Why the current sync source should be dropped."""

    NOT_A_MEMBER = "not-a-member"
    SOURCE_DOWN = "source-down"
    SOURCE_SILENT = "source-silent"
    SOURCE_DENIED = "source-denied"
    CYCLE = "cycle"
    POLICY = "policy"
    NOT_AHEAD = "source-not-ahead"
    LAGGING = "source-lagging"
    CLOSER = "closer-member"


# The shared rules, worded as a reason to drop the current source.
_DROP_REASON = {
    Exclusion.DOWN: ChangeReason.SOURCE_DOWN,
    Exclusion.SILENT: ChangeReason.SOURCE_SILENT,
    Exclusion.DENIED: ChangeReason.SOURCE_DENIED,
    Exclusion.CYCLE: ChangeReason.CYCLE,
}

# Reasons after which `update` deny-lists the dropped source for `deny_seconds`.
DENY_ON_DROP = frozenset({ChangeReason.SOURCE_SILENT, ChangeReason.LAGGING})


@quick_init
@dataclass(frozen=True, slots=True)
class MemberView:
    """What the chooser believes about one member.

    `position` is the member's last entry as freshly as known; `last_heard` the chooser's time of
    the last message from it (-inf: never); `rtt` the measured round trip in seconds (None: not
    measured yet); `sync_source` the member's own source as it last reported it; `pullers`
    how many members hold a slot at it and `overflow` whether it pulls beyond its own
    source's cap, as it last reported them (`spread`).
    """

    node: NodeId
    position: Position
    last_heard: float
    up: bool = True
    rtt: float | None = None
    sync_source: NodeId | None = None
    pullers: int = 0
    overflow: bool = False

    def __post_init__(self) -> None:
        if not self.node:
            raise CallerError("MemberView.node: must be non-empty")
        if self.position.term < 0 or self.position.index < 0:
            raise CallerError(f"MemberView.position: negative in {self.position}")
        if math.isnan(self.last_heard) or self.last_heard == math.inf:
            raise CallerError(
                f"MemberView.last_heard: must be a time or -inf, got {self.last_heard}"
            )
        if self.rtt is not None and not (math.isfinite(self.rtt) and self.rtt >= 0):
            raise CallerError(f"MemberView.rtt: must be a finite number >= 0, got {self.rtt}")
        if self.pullers < 0:
            raise CallerError(f"MemberView.pullers: must be >= 0, got {self.pullers}")


@quick_init
@dataclass(frozen=True, slots=True)
class SyncView:
    """The chooser's view of the set at time `now`: its input to every question.

    `self_position` is the chooser's last log entry (what it would pull after); `primary` who it
    believes is primary (itself while catching up as a new primary). `members` may include the
    chooser; it is never chosen.
    """

    self_id: NodeId
    self_position: Position
    primary: NodeId | None
    members: tuple[MemberView, ...]
    now: float

    def __post_init__(self) -> None:
        if not self.self_id:
            raise CallerError("SyncView.self_id: must be non-empty")
        if not math.isfinite(self.now):
            raise CallerError(f"SyncView.now: must be finite, got {self.now}")
        names = [member.node for member in self.members]
        if len(set(names)) != len(names):
            raise CallerError(f"SyncView.members: duplicate ids in {names}")

    def member(self, node: NodeId | None) -> MemberView | None:
        for member in self.members:
            if member.node == node:
                return member
        return None


@quick_init
@dataclass(frozen=True, slots=True)
class Decision:
    """What `update` did: the source to pull from now, the one before, and why it went."""

    source: NodeId | None
    previous: NodeId | None
    reason: ChangeReason | None  # None: the previous source was kept (or there was none)

    @property
    def changed(self) -> bool:
        return self.source != self.previous


class PrimaryProgress:
    """When this node first saw the primary beyond each position: positions to seconds of lag.

    Samples are (position, time) with both strictly increasing. Only samples within `horizon`
    seconds (plus the newest one before it) are kept, so a lag longer than `horizon` is reported
    as at least `horizon`: enough to compare against a limit a third of it (see `LAG_HISTORY`:
    a candidate within the limit L and a source more than L behind it still differ by > L).
    """

    def __init__(self, horizon: float) -> None:
        self._horizon = horizon
        self._samples: list[tuple[Position, float]] = []

    def record(self, position: Position, now: float) -> None:
        # A primary with a shorter log (a new one, or a stale report) no longer vouches for
        # what lies beyond it: forget those samples rather than count lag against them.
        while self._samples and self._samples[-1][0] > position:
            self._samples.pop()
        if not self._samples or position > self._samples[-1][0]:
            self._samples.append((position, now))
        self._trim(now)

    def lag(self, position: Position, now: float) -> float:
        first_beyond = bisect_right(self._samples, position, key=lambda sample: sample[0])
        if first_beyond == len(self._samples):
            return 0.0
        return max(0.0, now - self._samples[first_beyond][1])

    def _trim(self, now: float) -> None:
        if self._horizon <= 0:
            del self._samples[:-1]
            return
        # Keep the newest sample at or before the horizon: it bounds every older lag from below.
        older = bisect_right(self._samples, now - self._horizon, key=lambda sample: sample[1])
        if older > 1:
            del self._samples[: older - 1]

    def __len__(self) -> int:
        return len(self._samples)


class SyncSourceSelector:
    """The sync-source state of one node: current source, deny-list, recent choices, lag clock.

    `election_timeout` is the engine's; it stands in for `unreachable_after` when that is 0.
    """

    def __init__(
        self, settings: SyncSettings, rng: random.Random, *, election_timeout: float
    ) -> None:
        self._settings = settings.validate()
        if not (math.isfinite(election_timeout) and election_timeout > 0):
            raise CallerError(f"election_timeout: must be > 0, got {election_timeout}")
        self._rng = rng
        self._silence = settings.unreachable_after or election_timeout
        self._tree = dict(settings.fixed_tree)
        self._source: NodeId | None = None
        self._overflow = False  # `spread`: the source was chosen beyond every cap
        self._denied: dict[NodeId, tuple[float, str]] = {}  # node -> (until, reason)
        self._choices: deque[float] = deque(maxlen=settings.max_changes_per_hour)
        self._progress = PrimaryProgress(horizon=LAG_HISTORY * settings.max_lag_seconds)
        self._last_now = -math.inf

    @property
    def source(self) -> NodeId | None:
        """The member this node pulls from, or None."""
        return self._source

    @property
    def overflow(self) -> bool:
        """`spread`: was the source chosen beyond every cap (no candidate had a free slot)?"""
        return self._overflow

    @property
    def settings(self) -> SyncSettings:
        return self._settings

    @property
    def silence_limit(self) -> float:
        """Seconds without a word after which a member counts as not answering."""
        return self._silence

    # ---- deny-list ------------------------------------------------------------------------

    def deny(
        self, node: NodeId, now: float, seconds: float | None = None, reason: str = ""
    ) -> float:
        """Avoid `node` until now + seconds (default `deny_seconds`); return that time.

        A shorter deny never cuts a longer one short.
        """
        span = self._settings.deny_seconds if seconds is None else seconds
        if not (math.isfinite(span) and span > 0):
            raise CallerError(f"deny: seconds must be a finite number > 0, got {seconds}")
        until = now + span
        current = self._denied.get(node)
        if current is None or current[0] < until:
            self._denied[node] = (until, reason)
        return self._denied[node][0]

    def is_denied(self, node: NodeId, now: float) -> bool:
        entry = self._denied.get(node)
        if entry is None:
            return False
        if now >= entry[0]:
            del self._denied[node]  # expired
            return False
        return True

    def denied(self, now: float) -> dict[NodeId, float]:
        """The members still avoided at `now`, with the time each becomes usable again."""
        return {node: until for node, (until, _) in self._denied.items() if until > now}

    # ---- questions -------------------------------------------------------------------------

    def explain(self, view: SyncView) -> dict[NodeId, str]:
        """For every member in the view: "eligible", or the first rule that excludes it."""
        self._observe(view)
        policy = self._policy(view)
        out: dict[NodeId, str] = {}
        for member in view.members:
            rule = self._exclusion(view, member, policy, check_lag=True)
            out[member.node] = "eligible" if rule is None else rule.value
        return out

    def eligible(self, view: SyncView, *, strict: bool = True) -> tuple[NodeId, ...]:
        """Members that pass every rule (`strict`) or every rule but the lag limit."""
        self._observe(view)
        return tuple(member.node for member in self._candidates(view, strict=strict))

    def lag_seconds(self, view: SyncView, node: NodeId) -> float:
        """How long `node` has been missing an entry the primary had (0: none, or unknown).

        Always 0 with `max_lag_seconds` = 0: no history of the primary is kept then.
        """
        self._observe(view)
        member = view.member(node)
        return 0.0 if member is None else self._progress.lag(member.position, view.now)

    def changed_too_often(self, now: float) -> bool:
        """Were the last `max_changes_per_hour` choices all made within the last hour?"""
        window = self._settings.rate_window
        return len(self._choices) == self._choices.maxlen and self._choices[0] > now - window

    def choose(self, view: SyncView, *, record: bool = True) -> NodeId | None:
        """Pick a new source (None: nobody is usable) and make it the current one.

        Every successful choice counts towards the hourly rate limit, as in MongoDB. With
        `record=False` the caller counts it later with `record_change` — MongoDB counts a
        source only once its SyncSourceResolver validated it, so a candidate that refuses to
        serve does not use up the budget.
        """
        self._observe(view)
        policy = self._policy(view)
        pick: NodeId | None
        self._overflow = False
        if policy == "primary":
            pick = self._usable_primary(view)
        elif policy == "spread":
            pick, self._overflow = self._spread_choice(view)
        elif policy == "fixed":
            pick = self._fixed_choice(view)
        else:
            candidates = self._candidates(view, strict=True) or self._candidates(view, strict=False)
            pick = self._pick(policy, candidates, view) if candidates else None
        self._source = pick
        if pick is not None and record:
            self._choices.append(view.now)
        return pick

    def record_change(self, now: float) -> None:
        """Count a change of source towards the rate limit (see `choose(record=False)`)."""
        self._choices.append(now)

    def should_change(self, view: SyncView) -> ChangeReason | None:
        """Why the current source should be dropped now, or None to keep it (or if none)."""
        self._observe(view)
        if self._source is None:
            return None
        source = view.member(self._source)
        if source is None:
            return ChangeReason.NOT_A_MEMBER
        unusable = self._unreachable(view, source)
        if unusable is not None:
            return _DROP_REASON[unusable]
        policy = self._policy(view)
        if policy in ("primary", "fixed"):
            wanted = self._usable_primary(view) if policy == "primary" else self._fixed_choice(view)
            if wanted is not None and wanted != source.node:
                return ChangeReason.POLICY
        if source.position < view.self_position or (
            source.position == view.self_position
            and not self._may_be_level(view, source, policy)
            and source.sync_source is None
        ):
            return ChangeReason.NOT_AHEAD
        # The candidates under every rule, worked out once for the two checks that need them
        # (pure functions of the view: `update` runs for each secondary every heartbeat).
        strict: list[MemberView] = []
        if policy not in ("primary", "fixed"):
            strict = self._candidates(view, strict=True)
            if self._lagging(view, source, strict):
                return ChangeReason.LAGGING
        if (
            policy == "spread"
            and self._overflow
            and any(member.node != source.node for member in self._free_candidates(view))
        ):
            return ChangeReason.POLICY  # a slot freed up elsewhere: leave the overflow
        if policy in ("nearest", "spread") and self._closer_exists(view, source, strict):
            return ChangeReason.CLOSER
        return None

    def drop(self, now: float, *, deny_seconds: float = 0.0, reason: str = "") -> NodeId | None:
        """Stop using the current source (deny-listing it if `deny_seconds` > 0); return it."""
        dropped = self._source
        self._source = None
        self._overflow = False
        if dropped is not None and deny_seconds > 0:
            self.deny(dropped, now, deny_seconds, reason)
        return dropped

    def update(self, view: SyncView, *, record: bool = True) -> Decision:
        """One call per tick: drop the source if it should change, choose one if there is none."""
        previous = self._source
        reason = self.should_change(view)
        if reason is not None:
            deny = self._settings.deny_seconds if reason in DENY_ON_DROP else 0.0
            self.drop(view.now, deny_seconds=deny, reason=reason.value)
        if self._source is None:
            self.choose(view, record=record)
        return Decision(self._source, previous, reason)

    def status(self, now: float) -> dict[str, object]:
        """A JSON-friendly summary for `/status` and logs."""
        return {
            "policy": self._settings.policy,
            "source": self._source,
            "overflow": self._overflow,
            "denied": {
                node: {"until": until, "reason": why}
                for node, (until, why) in sorted(self._denied.items())
                if until > now
            },
            "recent_choices": list(self._choices),
            "rate_limited": self.changed_too_often(now),
        }

    # ---- rules -----------------------------------------------------------------------------

    def _observe(self, view: SyncView) -> None:
        if view.now < self._last_now:
            raise CallerError(f"SyncView.now: went backwards ({view.now} < {self._last_now})")
        self._last_now = view.now
        primary = self._reference(view)
        if primary is not None and self._settings.max_lag_seconds > 0:
            self._progress.record(primary.position, view.now)

    def _policy(self, view: SyncView) -> str:
        # A new primary catching up needs whoever is ahead of it, whatever the policy says.
        return "nearest" if view.primary == view.self_id else self._settings.policy

    def _reference(self, view: SyncView) -> MemberView | None:
        """The primary's view, against which lag is measured (None: unknown, or it is us)."""
        if view.primary is None or view.primary == view.self_id:
            return None
        return view.member(view.primary)

    def _may_be_level(self, view: SyncView, member: MemberView, policy: str) -> bool:
        if member.node == view.primary and view.primary != view.self_id:
            return True
        return policy == "fixed" and self._tree.get(view.self_id) == member.node

    @staticmethod
    def _primary_neighbour(
        view: SyncView, member: MemberView, policy: str, relaxed: bool = False
    ) -> bool:
        """A member that syncs straight from the primary, with an id before ours.

        It keeps within a round trip of the primary, so chaining to it costs little freshness
        even when our (periodic, hence stale) view shows it level or a little behind; its lag
        behind the primary is still bounded by the lag rule. The id order keeps two of them
        from choosing each other at once. `relaxed` (`spread`, when no such candidate has a
        free slot) drops the id order for a member holding a normal slot at the primary: it
        has no reason to leave that slot, so it is not choosing us meanwhile. The member
        itself decides, with its own current state, whether it will serve us
        (PullEngine._accepts), which keeps chains acyclic.
        """
        return (
            policy in CHAINING_POLICIES
            and view.primary is not None
            and view.primary != view.self_id
            and member.sync_source == view.primary
            and (member.node < view.self_id or (relaxed and not member.overflow))
        )

    def _exclusion(
        self,
        view: SyncView,
        member: MemberView,
        policy: str,
        *,
        check_lag: bool,
        relaxed: bool = False,
    ) -> Exclusion | None:
        if member.node == view.self_id:
            return Exclusion.SELF
        unusable = self._unreachable(view, member)
        if unusable is not None:
            return unusable
        behind = member.position < view.self_position or (
            member.position == view.self_position and not self._may_be_level(view, member, policy)
        )
        if behind and not self._primary_neighbour(view, member, policy, relaxed):
            return Exclusion.NOT_AHEAD
        if check_lag and self._too_far_behind(view, member):
            return Exclusion.TOO_FAR_BEHIND
        return None

    def _unreachable(self, view: SyncView, member: MemberView) -> Exclusion | None:
        """The rules a current source and a candidate share: up, heard, not denied, no cycle."""
        if not member.up:
            return Exclusion.DOWN
        if view.now - member.last_heard > self._silence:
            return Exclusion.SILENT
        if self.is_denied(member.node, view.now):
            return Exclusion.DENIED
        if member.sync_source == view.self_id:
            return Exclusion.CYCLE
        return None

    def _too_far_behind(self, view: SyncView, member: MemberView) -> bool:
        primary = self._reference(view)
        if primary is None or member.node == primary.node:
            return False
        settings = self._settings
        if (
            settings.max_lag_seconds > 0
            and self._progress.lag(member.position, view.now) > settings.max_lag_seconds
        ):
            return True
        return (
            settings.max_lag_entries > 0
            and primary.position.index - member.position.index > settings.max_lag_entries
        )

    def _candidates(
        self, view: SyncView, *, strict: bool, relaxed: bool = False
    ) -> list[MemberView]:
        policy = self._policy(view)
        return [
            member
            for member in view.members
            if self._exclusion(view, member, policy, check_lag=strict, relaxed=relaxed) is None
        ]

    def _free_candidates(self, view: SyncView) -> list[MemberView]:
        """`spread`: the candidates with a free slot, in the first tier that has any.

        Tier one is the usual candidates (every rule, then without the lag limit); tier two
        adds members one hop from the primary whatever their id (`_primary_neighbour`).
        """
        cap = self._settings.max_pullers
        for relaxed in (False, True):
            candidates = self._candidates(view, strict=True, relaxed=relaxed) or self._candidates(
                view, strict=False, relaxed=relaxed
            )
            free = [member for member in candidates if member.pullers < cap]
            if free:
                return free
        return []

    def _spread_choice(self, view: SyncView) -> tuple[NodeId | None, bool]:
        """`spread`: the nearest candidate with a free slot; else an overflow choice.

        Overflow (True): no candidate has a free slot, so the choice is the primary if it is
        usable, else the nearest candidate at all; the pull request then says so and the
        source admits it beyond its cap. Whatever `nearest` could pull from, `spread` can.
        """
        free = self._free_candidates(view)
        threshold = self._settings.change_threshold
        if free:
            return _nearest(free, view.primary, threshold), False
        primary = self._usable_primary(view)
        if primary is not None:
            return primary, True
        candidates = self._candidates(view, strict=True, relaxed=True) or self._candidates(
            view, strict=False, relaxed=True
        )
        if candidates:
            return _nearest(candidates, view.primary, threshold), True
        return None, False

    def _usable(self, view: SyncView, node: NodeId | None) -> bool:
        member = view.member(node)
        return (
            member is not None
            and self._exclusion(view, member, self._policy(view), check_lag=False) is None
        )

    def _usable_primary(self, view: SyncView) -> NodeId | None:
        return view.primary if self._usable(view, view.primary) else None

    def _fixed_choice(self, view: SyncView) -> NodeId | None:
        target = self._tree.get(view.self_id)
        if target is not None and self._usable(view, target):
            return target
        return self._usable_primary(view)

    def _pick(self, policy: str, candidates: list[MemberView], view: SyncView) -> NodeId:
        if policy == "nearest":
            return _nearest(candidates, view.primary, self._settings.change_threshold)
        if policy == "freshest":
            return _freshest(candidates, view.primary)
        if policy == "random":
            return self._rng.choice(sorted(member.node for member in candidates))
        raise CallerError(f"sync.policy: {policy!r} does not pick among candidates")

    def _lagging(self, view: SyncView, source: MemberView, candidates: list[MemberView]) -> bool:
        """Is another of the `candidates` (every rule) ahead of `source` by more than the lag
        limit?"""
        settings = self._settings
        source_lag = self._progress.lag(source.position, view.now)
        for candidate in candidates:
            if candidate.node == source.node or candidate.position <= source.position:
                continue
            if settings.max_lag_seconds > 0:
                gap = source_lag - self._progress.lag(candidate.position, view.now)
                if gap > settings.max_lag_seconds:
                    return True
            gap_entries = candidate.position.index - source.position.index
            if settings.max_lag_entries > 0 and gap_entries > settings.max_lag_entries:
                return True
        return False

    def _closer_exists(
        self, view: SyncView, source: MemberView, candidates: list[MemberView]
    ) -> bool:
        """Is one of the `candidates` (every rule) closer than `source` by more than the
        threshold (rate limit allowing)?"""
        threshold = self._settings.change_threshold
        if threshold == 0 or source.rtt is None or self.changed_too_often(view.now):
            return False
        if self._policy(view) == "spread":  # only towards a free slot
            candidates = [c for c in candidates if c.pullers < self._settings.max_pullers]
        return any(
            candidate.rtt is not None and source.rtt - candidate.rtt > threshold
            for candidate in candidates
            if candidate.node != source.node
        )


def _rtt_rank(member: MemberView) -> float:
    return math.inf if member.rtt is None else member.rtt


def _nearest(candidates: list[MemberView], primary: NodeId | None, threshold: float) -> NodeId:
    """Lowest RTT (then node id); the primary wins when within `threshold` of the lowest."""
    best = min(candidates, key=lambda member: (_rtt_rank(member), member.node))
    preferred = next((member for member in candidates if member.node == primary), None)
    if preferred is not None and preferred is not best:
        if best.rtt is None:  # nobody measured yet: the primary is the safe default
            return preferred.node
        if preferred.rtt is not None and preferred.rtt - best.rtt <= threshold:
            return preferred.node
    return best.node


def _freshest(candidates: list[MemberView], primary: NodeId | None) -> NodeId:
    """Most advanced position; ties go to the primary, then lower RTT, then node id."""
    best = min(
        candidates,
        key=lambda member: (
            -member.position.term,
            -member.position.index,
            member.node != primary,
            _rtt_rank(member),
            member.node,
        ),
    )
    return best.node
