"""A pull cluster at rest: what it no longer sends, and that failure detection did not slow.

The primary sends no heartbeat to a member whose pull stream it answers (the answer is leader
contact), a chained member's source relays the contact (`primary_contact_age`), heartbeat
answers come only when the primary lacks a member's position, and each pair of members
exchanges one probe per period. These tests hold the guarantees that must survive that: every
member's leader contact stays as fresh as a heartbeat's, the primary's check-quorum still sees
its members, and after a crash every election runs from the primary's real last contact.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from cluster.sim.harness import Harness
from protocols.codec import decode, encode
from protocols.config import SyncSettings
from protocols.errors import DecodeError
from protocols.events import EventKind
from protocols.messages import (
    Envelope,
    Heartbeat,
    HeartbeatResponse,
    PullRequest,
    PullResponse,
    PullStatus,
    StatusProbe,
    UpdatePosition,
)
from protocols.types import Role

STEP = 0.01


def cluster(nodes: int, policy: str, seed: int = 0, **config: Any) -> Harness:
    """A pull cluster led by n1; `spread` (one puller per source) and `fixed` form chains."""
    ids = [f"n{i + 1}" for i in range(nodes)]
    tree = tuple((ids[i], ids[i - 1] if i % 2 == 0 else ids[0]) for i in range(1, nodes))
    sync = SyncSettings(policy=policy, max_pullers=1, fixed_tree=tree)
    h = Harness.create("pull", nodes, seed=seed, sync=sync, **config)
    h.elect("n1")
    h.settle(1.0, step=STEP)
    return h


def step(h: Harness, drop: Callable[[Envelope], bool] | None = None) -> list[Envelope]:
    """One step of `settle`, dropping what `drop` matches first; returns what was delivered."""
    h.advance_time(STEP)
    if drop is not None:
        h.drop(drop)
    return h.deliver()


@pytest.mark.parametrize(
    ("nodes", "policy"), [(3, "primary"), (3, "spread"), (5, "spread"), (5, "fixed")]
)
def test_every_member_hears_from_the_primary_every_heartbeat_interval(
    nodes: int, policy: str
) -> None:
    """Directly (pull answers): never older than a heartbeat period. Relayed by its source:
    one long poll more per hop, since each source passes on the contact it has."""
    h = cluster(nodes, policy)
    interval = h.configs["n1"].heartbeat_interval
    depths = {n: h[n].status().sync_depth for n in h.engines if n != "n1"}
    assert all(depth is not None for depth in depths.values())
    if policy != "primary":
        assert max(d for d in depths.values() if d is not None) >= 2  # a chain to relay along
    sent: list[Envelope] = []
    long_poll = h.configs["n1"].long_poll_timeout
    for _ in range(300):
        sent += step(h)
        for node, depth in depths.items():
            assert depth is not None
            bound = interval + (depth - 1) * long_poll + depth * STEP
            assert h.now - h[node].last_leader_contact <= bound + 1e-9, node
    assert h.role("n1") is Role.LEADER
    # What it saves: no heartbeat to a member the primary serves, no answer to a periodic one.
    direct = {n for n, depth in depths.items() if depth == 1}
    beaten = {m.dst for m in sent if isinstance(m.message, Heartbeat)}
    assert not beaten & direct
    assert not Harness.only(HeartbeatResponse, sent)


def test_when_positions_stop_coming_heartbeats_and_their_answers_come_back() -> None:
    """The members' pulls and position reports stop reaching the primary (their streams, once
    open, still flow down): it heartbeats them every interval and asks for answers, so its
    check-quorum keeps seeing them."""
    h = cluster(3, "primary", check_quorum=True)
    interval = h.configs["n1"].heartbeat_interval
    term = h["n1"].term

    def upstream(m: Envelope) -> bool:
        return isinstance(m.message, (PullRequest, UpdatePosition))

    for _ in range(50):  # their positions go quiet
        step(h, drop=upstream)
    sent: list[Envelope] = []
    for _ in range(300):  # 3 s: three election timeouts
        sent += step(h, drop=upstream)
        for node in ("n2", "n3"):
            assert h.now - h[node].last_leader_contact <= interval + STEP + 1e-9
    assert h.role("n1") is Role.LEADER and h["n1"].term == term
    assert {m.dst for m in sent if isinstance(m.message, Heartbeat)} == {"n2", "n3"}
    assert {m.src for m in Harness.only(HeartbeatResponse, sent)} == {"n2", "n3"}


@pytest.mark.parametrize("seed", range(12))
def test_after_a_primary_crash_elections_run_from_its_real_last_contact(seed: int) -> None:
    """Relayed contact never post-dates the primary's last message: every election timer runs
    from when the primary was last really heard (at most a long poll per hop before the
    crash), never later, so a crash is not noticed later than with heartbeats."""
    h = cluster(5, "spread", seed=seed)
    interval = h.configs["n1"].heartbeat_interval
    depth = max(h[n].status().sync_depth or 0 for n in h.engines)
    oldest = interval + (depth - 1) * h.configs["n1"].long_poll_timeout + depth * STEP
    old_term = h["n1"].term
    h.events.clear()
    crashed_at = h.now
    h.crash("n1")
    for _ in range(600):
        step(h)
        if any(e.role is Role.LEADER for e in h.engines.values()):
            break
    assert any(e.role is Role.LEADER for e in h.engines.values())
    starts = [e for _, e in h.events if e.kind is EventKind.PRE_VOTE and e.term == old_term + 1]
    assert starts
    for event in starts:
        assert event.last_contact is not None and math.isfinite(event.last_contact)
        assert crashed_at - oldest - 1e-9 <= event.last_contact <= crashed_at + 1e-9


def test_one_probe_exchange_per_pair_and_the_other_side_resumes() -> None:
    """n2 and n3 both pull from n1: n2 probes n3 (lower id), n3 learns the RTT from the probes
    and probes n2 itself only once n2 goes quiet."""
    h = cluster(3, "primary")
    sent: list[Envelope] = []
    for _ in range(200):
        sent += step(h)
    probes = Harness.only(StatusProbe, sent)
    assert any(p.src == "n2" and p.dst == "n3" for p in probes)
    assert not any(p.src == "n3" and p.dst == "n2" for p in probes)
    assert all(p.message.rtt is not None for p in probes if p.src == "n2" and p.dst == "n3")
    assert h["n3"].status().peers_seen == ("n1", "n2")
    h.crash("n2")
    probe_interval = h.configs["n1"].election_timeout / 5
    sent = []
    for _ in range(round(3 * probe_interval / STEP)):
        sent += step(h)
    assert any(p.src == "n3" and p.dst == "n2" for p in Harness.only(StatusProbe, sent))


def test_the_new_fields_travel_and_bad_values_are_refused() -> None:
    for message in (
        Heartbeat(3, 10, 2, 0, 12, 3, want_reply=False),
        StatusProbe(3, 1.5, 12, 3, 10, 2, False, "n1", 1, False, rtt=0.004),
        PullResponse(3, 7, PullStatus.OK, (), 10, 2, 0, 12, 3, "n1", primary_contact_age=0.05),
    ):
        envelope = Envelope("n2", "n3", message)
        assert decode(encode(envelope)) == envelope
    for bad in (-1.0, math.inf, math.nan):  # refused where peer bytes come in: the codec
        for message in (
            StatusProbe(3, 1.5, 12, 3, 10, 2, False, rtt=bad),
            PullResponse(3, 7, PullStatus.OK, (), 10, 2, 0, 12, 3, primary_contact_age=bad),
        ):
            with pytest.raises(DecodeError):
                decode(encode(Envelope("n2", "n3", message)))
