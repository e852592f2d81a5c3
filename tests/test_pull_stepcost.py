"""The pull engine's per-step shortcuts change nothing: the commit computation it skips would
have given the same answer, `_syncing` always follows the role, and `next_deadline` is the
earliest of the timers it stands for (the simulator asks after every step)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from cluster.sim.simulator import SimConfig
from protocols.pull import PullEngine
from protocols.types import NodeId, Position, Role
from raftbench.commands.sim import sync_settings
from workloads.sim_runner import SeedResult, run_seed


class RecomputingPull(PullEngine):
    """Runs the commit computation on every position report and every persist, unskipped."""

    def _record_position(self, node: NodeId, position: Position) -> None:
        self._positions[node] = position
        self._advance_commit()

    def _on_persisted(self) -> None:
        if self._role is Role.LEADER:
            self._advance_commit()
        else:
            super()._on_persisted()


def _timers_due(engine: PullEngine) -> float:
    """The earliest timer, as a list of every timer the engine may wait for."""
    now = engine._now
    timers = [engine._next_probe]
    if engine._held:
        timers.append(engine._recheck_at)
        timers.extend(held.deadline for held in engine._held.values())
    failure_after = engine.config.long_poll_timeout + 2 * engine.config.heartbeat_interval
    fetch, pull = engine._fetch, engine._pull
    if fetch is not None and fetch.source is not None:
        pulling = fetch.sent_at + failure_after
    elif pull is None:
        pulling = engine._pull_retry_at if engine._pull_retry_at > now else math.inf
    else:
        pulling = pull.sent_at + failure_after
    role = engine.role
    if role is Role.LEADER:
        timers += [engine._next_heartbeat, engine._next_liveness_check]
        if engine._catchup is not None:
            timers += [engine._catchup.deadline, pulling]
    elif role in (Role.FOLLOWER, Role.PRE_CANDIDATE):
        timers += [engine._election_deadline, pulling]
        if engine.selector.source is not None:
            keepalive = engine._next_keepalive
            if pull is not None and engine.config.pull_streaming:
                keepalive += engine.config.long_poll_timeout
            if keepalive > now:
                timers.append(keepalive)
        takeover = engine._takeover_at
        if takeover is not None and takeover > now:
            timers.append(takeover)
    else:
        timers.append(engine._election_deadline)
    return min(timers)


class CheckedPull(PullEngine):
    """Records, at every `next_deadline()`, whether `_syncing` and the deadline are right."""

    wrong: list[str] = []  # (shared by the engines of one run, reset per test)
    roles_seen: set[Role] = set()

    def next_deadline(self) -> float:
        deadline = super().next_deadline()
        role = self.role
        CheckedPull.roles_seen.add(role)
        if self._syncing != (role in (Role.FOLLOWER, Role.PRE_CANDIDATE)):
            CheckedPull.wrong.append(f"{self.node_id} {role}: _syncing={self._syncing}")
        if deadline != _timers_due(self):
            CheckedPull.wrong.append(f"{self.node_id} {role}: deadline {deadline}")
        return deadline


def _config(seed: int, policy: str, faults: str = "all", disk: float = 0.0003) -> SimConfig:
    return SimConfig(
        protocol="pull",
        seed=seed,
        faults=faults,
        duration=6.0,
        count_bytes=False,
        disk_latency=disk,
        config_overrides={"sync": sync_settings(policy, 5)},
    )


def _same_run(a: SeedResult, b: SeedResult) -> None:
    assert (a.events, a.messages, a.elections, a.crashes) == (
        b.events,
        b.messages,
        b.elections,
        b.crashes,
    )
    assert a.digest == b.digest
    assert a.violations == b.violations == []


# Disks slower than the network (10 ms): the primary's own persist is then often the last of
# a majority, so the commit computation after a persist decides (with the default disks,
# never doing it after a persist gives the same runs).
@pytest.mark.parametrize(
    ("policy", "faults", "disk"),
    [("nearest", "all", 0.0003), ("spread", "membership", 0.0003), ("nearest", "all", 0.01)],
)
def test_skipped_commit_computations_give_the_same_run(
    policy: str, faults: str, disk: float
) -> None:
    for seed in range(3):
        config = _config(seed, policy, faults, disk)
        reference = run_seed(dataclasses.replace(config, engine=RecomputingPull))
        _same_run(run_seed(config), reference)
        assert reference.verdict == "linearizable"


def test_syncing_and_next_deadline_follow_role_and_timers() -> None:
    CheckedPull.wrong, CheckedPull.roles_seen = [], set()
    elections = 0
    for seed in range(3):
        result = run_seed(dataclasses.replace(_config(seed, "nearest"), engine=CheckedPull))
        assert result.violations == []
        elections += result.elections
    assert CheckedPull.wrong == []
    assert elections >= 3  # leaders came and went: the role changes were exercised
    assert {Role.LEADER, Role.FOLLOWER, Role.CANDIDATE} <= CheckedPull.roles_seen
