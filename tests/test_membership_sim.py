"""Membership changes in the simulator: random changes among crashes and partitions.

`--faults membership` (also part of `all`) starts with three of five nodes as voters; the
other two start joining, and random single-server changes (add a voter or a learner, promote,
remove, the leader included) are proposed at whoever leads. Every invariant holds across
configurations and histories stay linearizable; the CI sweep of `all` in test_sim.py runs the
same changes over 200 seeds per engine.
"""

from __future__ import annotations

from typing import Any

import pytest

from cluster.sim.nemesis import LEADER, Action, Fault
from cluster.sim.simulator import SimConfig, Simulator
from protocols.push import PushEngine
from protocols.quorum import committed_index
from protocols.types import Role
from raftbench.commands.sim import sync_settings
from workloads.sim_load import correctness_workload
from workloads.sim_runner import replay_command, run_seed

POLICIES = ["primary", "nearest", "freshest", "random", "fixed", "spread"]


def membership_config(protocol: str, seed: int, policy: str = "nearest", **extra: Any) -> SimConfig:
    overrides: dict[str, Any] = {"sync": sync_settings(policy, 5), **extra}
    return SimConfig(
        protocol=protocol, seed=seed, faults="membership", duration=6.0, config_overrides=overrides
    )


def sweep(configs: list[SimConfig]) -> int:
    """Run every config; fail with replay commands if any seed fails. Returns changes made."""
    failures, changes = [], 0
    for config in configs:
        result = run_seed(config)
        changes += result.config_changes
        if result.failed:
            failures.append((result.violations[:3], result.verdict, replay_command(config)))
    assert not failures, failures[:3]
    return changes


@pytest.mark.parametrize("protocol", ["push", "pull"])
def test_random_changes_with_crashes_and_partitions_are_safe(protocol: str) -> None:
    seeds = 12
    changes = sweep([membership_config(protocol, seed) for seed in range(seeds)])
    assert changes >= 2 * seeds  # the configuration really did change, again and again


@pytest.mark.parametrize("policy", POLICIES)
def test_every_sync_policy_follows_the_configuration(policy: str) -> None:
    changes = sweep([membership_config("pull", seed, policy) for seed in range(100, 106)])
    assert changes > 0


@pytest.mark.parametrize("protocol", ["push", "pull"])
def test_changes_with_compaction_keep_every_committed_entry(protocol: str) -> None:
    """Snapshots carry the configuration: new members catch up from them, checked against
    the committed entries (data, sessions and configuration)."""
    configs = [
        membership_config(protocol, seed, snapshot_entries=20, snapshot_chunk_bytes=128)
        for seed in range(200, 208)
    ]
    assert sweep(configs) > 0


def test_a_scripted_change_adds_the_joining_nodes() -> None:
    faults = (
        Fault(1.0, Action.CHANGE, ("n4",), change="add-learner"),
        Fault(2.0, Action.CHANGE, ("n4",), change="promote"),
        Fault(3.0, Action.CHANGE, ("n5",), change="add-voter"),
        Fault(4.0, Action.CHANGE, ("n1",), change="remove"),
    )
    config = SimConfig(
        protocol="pull",
        seed=3,
        faults="none",
        voters=3,
        duration=6.0,
        faults_scripted=faults,
        workload=correctness_workload(3),
    )
    simulator = Simulator(config)
    simulator.run()
    assert not simulator.violations
    final = [m.describe() for _, m in sorted(simulator.invariants.configs.items())]
    assert final[-1] == "voters n2,n3,n4,n5"
    engines = [simulator.nodes[node].engine for node in ("n2", "n3", "n4", "n5")]
    assert len({engine.commit_index for engine in engines if engine is not None}) == 1
    removed = simulator.nodes["n1"].engine
    assert removed is not None and removed.role is not Role.LEADER


class CountsLearners(PushEngine):
    """Deliberately broken: learners' acknowledgements count toward commit."""

    def _maybe_commit(self) -> None:
        acknowledged = [self.log.stable_index, *(pr.match for pr in self._progress.values())]
        candidate = committed_index(acknowledged, len(self.members))
        if candidate > self.commit_index and self.log.term_at(candidate) == self.term:
            self._set_commit(candidate)
            self._commit_moved = True


# Two learners join; then the leader and the learners are cut off from the other two voters.
LEARNERS_WITH_THE_LEADER = (
    Fault(1.0, Action.CHANGE, ("n4",), change="add-learner"),
    Fault(1.5, Action.CHANGE, ("n5",), change="add-learner"),
    Fault(2.5, Action.PARTITION, groups=((LEADER, "n4", "n5"),)),
    Fault(4.0, Action.HEAL),
)


@pytest.mark.parametrize(
    ("protocol", "engine"), [("push", None), ("pull", None), ("push", CountsLearners)]
)
def test_learners_on_the_leaders_side_commit_nothing(
    protocol: str, engine: type[PushEngine] | None
) -> None:
    """Proof the checks see a quorum that counts learners: the voters on the other side elect
    a leader without the entries the broken one committed. Whether the broken leader commits
    anything during the cut depends on the seed's timing (client writes, its check-quorum
    step-down), so it must be caught in most seeds; a correct engine in none."""
    caught = 0
    for seed in range(4):
        config = SimConfig(
            protocol=protocol,
            seed=seed,
            faults="none",
            voters=3,
            duration=6.0,
            faults_scripted=LEARNERS_WITH_THE_LEADER,
            engine=engine,
        )
        result = run_seed(config)
        assert result.config_changes == 2
        if engine is None:
            assert not result.failed, (seed, result.violations[:2])
        caught += result.failed
    if engine is not None:
        assert caught >= 3, f"the learner-counting quorum was caught in {caught} of 4 seeds"
