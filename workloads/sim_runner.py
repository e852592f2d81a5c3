"""Run seeded simulations and judge them: invariants plus the linearizability checker."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from cluster.sim.simulator import SimConfig, Simulator
from protocols.config import SyncSettings
from workloads.checker import CheckResult, Operation, check_operations
from workloads.sim_load import correctness_workload, op_record


@dataclass(slots=True)
class SeedResult:
    seed: int
    violations: list[str]
    verdict: str  # linearizable | not-linearizable | unknown
    check_detail: str
    virtual_seconds: float
    wall_seconds: float  # the simulation alone (not the checker)
    cpu_seconds: float  # the same, in CPU time of this process: per-core speed under load
    ops_ok: int
    ops_fail: int
    ops_unknown: int
    events: int
    messages: int
    elections: int
    crashes: int
    digest: str = ""  # of the events, messages and history: equal digests, equal runs
    config_changes: int = 0  # membership changes committed
    trace: str = ""
    history: list[Operation] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.violations) or self.verdict != "linearizable"


def replay_command(config: SimConfig, trace: int = 200) -> str:
    """The one-line command that replays `config.seed` exactly, with a trace dump."""
    return (
        f"raftbench sim --protocol {config.protocol} --seeds 1 --start-seed {config.seed} "
        f"--nodes {config.nodes} --duration {config.duration:g} --faults {config.faults} "
        f"--clients {config.clients} --trace {trace}{_policy_flag(config)}"
        f"{_snapshot_flags(config)}"
    )


def _snapshot_flags(config: SimConfig) -> str:
    flags = ""
    for name in ("snapshot_entries", "snapshot_bytes", "snapshot_chunk_bytes"):
        value = config.config_overrides.get(name)
        if value:
            flags += f" --{name.replace('_', '-')} {value}"
    return flags


def _policy_flag(config: SimConfig) -> str:
    sync = config.config_overrides.get("sync")
    policy = getattr(sync, "policy", "nearest")
    if config.protocol != "pull" or policy == "nearest":
        return ""
    pullers = getattr(sync, "max_pullers", SyncSettings().max_pullers)
    cap = f" --max-pullers {pullers}" if policy == "spread" else ""
    return f" --sync-policy {policy}{cap}"


def run_seed(config: SimConfig, budget: float = 10.0, keep_history: bool = False) -> SeedResult:
    """Simulate one seed, check every invariant and the history's linearizability."""
    if config.workload is None:
        config = dataclasses.replace(config, workload=correctness_workload(config.clients))
    started, cpu_started = time.perf_counter(), time.process_time()
    simulator = Simulator(config)
    simulator.run()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    records = (op_record(op) for c in simulator.clients for op in c.ops)
    history = [op.as_operation() for op in records if op.is_linearizable_op()]
    check: CheckResult = check_operations(history, budget=budget)
    stats = simulator.stats
    return SeedResult(
        seed=config.seed,
        violations=[str(v) for v in simulator.violations],
        verdict=check.verdict,
        check_detail=check.detail,
        virtual_seconds=simulator.now,
        wall_seconds=wall,
        cpu_seconds=cpu,
        ops_ok=stats.ops_ok,
        ops_fail=stats.ops_fail,
        ops_unknown=stats.ops_unknown,
        events=stats.events,
        messages=stats.messages,
        elections=stats.elections_won,
        crashes=stats.crashes,
        digest=run_digest(stats.events, stats.messages, history),
        config_changes=len(simulator.invariants.configs),
        trace=simulator.format_trace() if config.trace else "",
        history=history if keep_history else [],
    )


def seed_configs(base: SimConfig, seeds: int, start_seed: int) -> list[SimConfig]:
    return [dataclasses.replace(base, seed=start_seed + i) for i in range(seeds)]


def run_digest(events: int, messages: int, history: list[Operation]) -> str:
    """A short fingerprint of one run: two runs of a seed must agree on it exactly."""
    text = repr((events, messages, [dataclasses.astuple(op) for op in history]))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _judge(config: SimConfig, budget: float) -> SeedResult:
    return run_seed(config, budget=budget)


def run_seeds(configs: list[SimConfig], budget: float, jobs: int = 1) -> Iterator[SeedResult]:
    """Judge every config, in order; with `jobs` > 1 in that many worker processes.

    Each seed is simulated by one process from its config alone, so the results (and the
    replay commands) do not depend on `jobs`.
    """
    if jobs <= 1 or len(configs) <= 1:
        for config in configs:
            yield run_seed(config, budget=budget)
        return
    with ProcessPoolExecutor(max_workers=min(jobs, len(configs))) as pool:
        yield from pool.map(_judge, configs, [budget] * len(configs))
