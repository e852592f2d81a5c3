"""The simulator as a checker: many seeds under faults, determinism, and proof it can fail."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest

from cluster.sim import simulator
from cluster.sim.simulator import SimConfig
from protocols.messages import VoteRequest
from protocols.push import PushEngine
from protocols.types import NodeId, Role
from raftbench.cli import main
from raftbench.commands.sim import sync_settings
from workloads.sim_runner import replay_command, run_seed

PROTOCOLS = ["push", "pull"]
CI_SEEDS = 200


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_many_seeds_with_all_faults_are_safe_and_linearizable(protocol: str) -> None:
    failures = []
    completed = 0
    for seed in range(CI_SEEDS):
        config = SimConfig(protocol=protocol, seed=seed, faults="all", duration=4.0, nodes=5)
        result = run_seed(config)
        completed += result.ops_ok + result.ops_fail
        if result.failed:
            failures.append((seed, result.violations[:3], result.verdict, replay_command(config)))
    assert not failures, failures[:5]
    assert completed > CI_SEEDS * 50  # the clients really did work under the faults


@pytest.mark.parametrize("policy", ["primary", "freshest", "random", "fixed"])
def test_every_sync_policy_under_all_faults(policy: str) -> None:
    """The default policy (nearest) runs the 200 seeds above; the others a smaller sweep."""
    for seed in range(15):
        config = SimConfig(
            protocol="pull",
            seed=seed,
            faults="all",
            duration=4.0,
            config_overrides={"sync": sync_settings(policy, 5)},
        )
        result = run_seed(config)
        assert not result.failed, (seed, result.violations[:3], replay_command(config))


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("faults", ["none", "crash", "partition"])
def test_each_fault_mode_alone(protocol: str, faults: str) -> None:
    for seed in range(10):
        result = run_seed(SimConfig(protocol=protocol, seed=seed, faults=faults, duration=4.0))
        assert not result.failed, (seed, result.violations[:3], result.verdict)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_seed_replays_exactly(protocol: str) -> None:
    config = SimConfig(protocol=protocol, seed=7, faults="all", duration=3.0)
    first = run_seed(config, keep_history=True)
    second = run_seed(config, keep_history=True)
    assert first.history == second.history
    assert (first.events, first.messages) == (second.events, second.messages)


def test_a_seed_replays_exactly_across_processes_with_different_hash_seeds() -> None:
    """String hashing is randomised per process: nothing may depend on set/dict hash order."""
    code = (
        "from workloads.sim_runner import run_seed; from cluster.sim.simulator import SimConfig;"
        "r = run_seed(SimConfig(seed=3, faults='all', duration=3.0), keep_history=True);"
        "print(r.events, r.messages, len(r.history),"
        " [(o.process, o.f, o.key, o.value, o.outcome) for o in r.history])"
    )
    outputs = set()
    for hash_seed in ("1", "2", "3"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1


class CommitsWithoutMajority(PushEngine):
    """Deliberately broken: the leader commits whatever it has, without waiting for acks."""

    def _maybe_commit(self) -> None:
        if self.role is Role.LEADER and self.log.stable_index > self.commit_index:
            self._set_commit(self.log.stable_index)
            self._commit_moved = True


class IgnoresElectionRestriction(PushEngine):
    """Deliberately broken: votes for any candidate, however stale its log (§5.4.1)."""

    def _handle_vote_request(self, src: NodeId, message: VoteRequest, now: float) -> None:
        forged = VoteRequest(
            message.term, self.log.last_term, self.log.last_index, message.pre_vote, message.force
        )
        super()._handle_vote_request(src, forged, now)


@pytest.mark.parametrize("broken", [CommitsWithoutMajority, IgnoresElectionRestriction])
def test_a_broken_engine_is_caught(broken: type[PushEngine]) -> None:
    """Proof that the checks can fail: known bugs are found within a few seeds."""
    caught = []
    for seed in range(40):
        config = SimConfig(seed=seed, faults="all", duration=6.0, engine=broken)
        result = run_seed(config)
        if result.failed:
            caught.append(seed)
            if len(caught) >= 2:
                break
    assert caught, f"{broken.__name__} survived 40 seeds"


def test_failing_seed_prints_its_replay_command_and_trace(
    capsys: pytest.CaptureFixture[str],
) -> None:
    seed = next(
        s
        for s in range(40)
        if run_seed(
            SimConfig(seed=s, faults="all", duration=6.0, engine=CommitsWithoutMajority)
        ).failed
    )
    config = SimConfig(seed=seed, faults="all", duration=6.0, engine=CommitsWithoutMajority)
    assert f"--start-seed {seed}" in replay_command(config)
    traced = run_seed(
        SimConfig(seed=seed, faults="all", duration=6.0, engine=CommitsWithoutMajority, trace=50)
    )
    assert len(traced.trace.splitlines()) == 50
    code = main(
        ["sim", "--protocol", "push", "--seeds", "2", "--duration", "2", "--faults", "none"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.strip().splitlines()[-1] == "seeds=2 violations=0 nonlinearizable=0"


def test_unknown_protocol_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["sim", "--protocol", "paxos", "--seeds", "1"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'paxos'" in capsys.readouterr().err


def test_parallel_jobs_give_the_same_per_seed_results(capsys: pytest.CaptureFixture[str]) -> None:
    """--jobs N only spreads seeds over processes: every seed's line (digest included) and
    every replay command is what --jobs 1 prints."""
    outputs = []
    for jobs in ("1", "2"):
        args = ["sim", "--protocol", "pull", "--seeds", "3", "--duration", "2", "--faults"]
        main([*args, "all", "--jobs", jobs, "-v"])
        out = capsys.readouterr().out
        outputs.append([line for line in out.splitlines() if not line.startswith("#")])
    assert outputs[0] == outputs[1]
    assert len([line for line in outputs[0] if line.startswith("seed=")]) == 3
    assert all("digest=" in line for line in outputs[0] if line.startswith("seed="))


def test_the_digest_tells_different_runs_apart() -> None:
    first = run_seed(SimConfig(seed=1, faults="all", duration=2.0))
    again = run_seed(SimConfig(seed=1, faults="all", duration=2.0))
    other = run_seed(SimConfig(seed=2, faults="all", duration=2.0))
    assert first.digest == again.digest
    assert first.digest != other.digest


def test_the_loop_collects_garbage_less_often_and_restores_the_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The loop raises the collector's first threshold while it runs, and only then."""
    seen: list[tuple[int, int, int]] = []
    on_tick = simulator.Simulator._on_tick

    def recording_tick(self: simulator.Simulator, node: object, deadline: float) -> None:
        seen.append(gc.get_threshold())
        on_tick(self, node, deadline)  # type: ignore[arg-type]

    monkeypatch.setattr(simulator.Simulator, "_on_tick", recording_tick)
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    try:
        run_seed(SimConfig(seed=3, faults="none", duration=1.0))
        assert gc.get_threshold() == (700, 10, 10)
    finally:
        gc.set_threshold(*before)
    assert seen and all(threshold[0] >= 100_000 for threshold in seen)
    assert all(threshold[1:] == (10, 10) for threshold in seen)
