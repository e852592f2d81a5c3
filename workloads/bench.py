"""`raftbench bench`: the runtime's own cost against etcd's, in one interleaved run.

Why it exists: a pull/push ratio says something about the protocols only when the node's own
overhead (HTTP, event loop, persistence, transport) is small beside what the protocols do. So
this benchmark measures that overhead the way issue "a lean node" defines it, against a Raft that
people run in production, on the same machine at the same time:

* **W=1**: one closed-loop writer, one write at a time (latency: one client round trip, the
  leader's and a follower's fsync, one peer round trip, apply, answer);
* **W=64**: 64 closed-loop writers, one write each per request (throughput and CPU per write
  under group commit);
* **idle**: the members' CPU with no load at all (heartbeats, probes, long polls).

Each round starts a fresh cluster per label, in a rotated order (round r starts at label r), and
measures idle, W=1 and W=64 on it; the ratios to the reference label (etcd) are taken within a
round, so a slow minute of a shared machine moves both sides of a ratio, and the medians over
rounds are printed. Server CPU is the members' utime+stime over the measured window (all
members summed) divided by the writes acknowledged in it; idle CPU, a few tens of ms, is read
from the scheduler's exact per-thread counters instead (clock ticks would round it by ±10 ms
per process and reading). The load generators' own CPU share of
the machine is printed beside each phase: when it is high, the generator, not the cluster, set
the pace.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster.procfs import run_seconds_between, thread_run_ns
from cluster.target import Target
from protocols.types import NodeId
from workloads.loadgen import (
    GeneratorPlan,
    GeneratorPool,
    iter_window,
    merge_ops,
    monotonic,
    percentile_ms,
    split_workers,
)
from workloads.profiling import ProfilerError, Recording
from workloads.real_driver import ETCD, client_timeouts, start_target
from workloads.scenario import Scenario, parse_protocol_label, parse_scenario

REFERENCE = ETCD
LEADER_WAIT = 30.0
SETTLE = 1.0  # after the leader is known, before idle is measured (connections, first probes)
GO_DELAY = 0.3  # between the generators' `go` and run time 0


@dataclass(frozen=True, slots=True)
class BenchSettings:
    labels: tuple[str, ...] = ("push", "pull", ETCD)
    rounds: int = 3
    nodes: int = 3
    value_size: int = 100
    idle: float = 3.0  # seconds of idle measurement
    warmup: float = 1.0  # per load phase, not measured
    duration: float = 5.0  # per load phase, measured
    widths: tuple[int, ...] = (1, 64)  # closed-loop writers per phase
    processes: int = 2  # generator processes for a phase with more than one writer
    election_timeout: float = 1.0  # etcd's default, for every label
    heartbeat_interval: float = 0.1
    seed: int = 1
    etcd_binary: Path | None = None
    profile_dir: Path | None = None  # py-spy profiles of each raftbench leader per phase


@dataclass(slots=True)
class Phase:
    """One load phase of one label in one round."""

    width: int
    writes: int  # acknowledged inside the window
    failures: int  # writes that failed or were unknown inside the window
    writes_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float  # members summed, over the window
    cpu_per_write_ms: float
    leader_cpu_per_write_ms: float  # the leader's own share of it
    loadgen_share: float  # of the machine's cores, over the window


@dataclass(slots=True)
class Block:
    """One label's cluster in one round: idle, then each load phase."""

    label: str
    round: int
    leader: NodeId
    idle_cores: float  # members summed
    phases: list[Phase] = field(default_factory=list)

    def phase(self, width: int) -> Phase | None:
        return next((p for p in self.phases if p.width == width), None)


def bench_scenario(settings: BenchSettings, width: int) -> Scenario:
    """The closed-loop write-only scenario of one phase (the driver's own scenario format)."""
    processes = 1 if width == 1 else min(settings.processes, width)
    return parse_scenario(
        {
            "name": f"bench-w{width}",
            "description": f"{width} closed-loop writers, one write per request",
            "cluster": {
                "nodes": settings.nodes,
                "election_timeout": settings.election_timeout,
                "heartbeat_interval": settings.heartbeat_interval,
            },
            "workload": {
                "mix": "write-only",
                "key_count": 1000,
                "value_size": settings.value_size,
                "clients": width,
            },
            "run": {"warmup": settings.warmup, "duration": settings.duration, "cooldown": 0.0},
            "load": {"processes": processes, "batch": 1},
        },
        default_name=f"bench-w{width}",
    )


def run_bench(
    settings: BenchSettings,
    work_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Block]:
    """Every round, every label (rotated), each on a fresh cluster."""
    say = progress or (lambda _text: None)
    blocks = []
    with tempfile.TemporaryDirectory(prefix="raftbench-bench-") as tmp:
        base = work_dir or Path(tmp)
        for round_ in range(settings.rounds):
            shift = round_ % len(settings.labels)
            order = settings.labels[shift:] + settings.labels[:shift]
            for label in order:
                say(f"round {round_ + 1}/{settings.rounds}: {label}")
                blocks.append(_block(settings, label, round_, base / f"r{round_}-{label}"))
    return blocks


def _block(settings: BenchSettings, label: str, round_: int, directory: Path) -> Block:
    protocol, policy = parse_protocol_label(label)
    first = bench_scenario(settings, settings.widths[0])
    seed = settings.seed + round_
    target = start_target(
        first, protocol, policy, seed, False, directory / "cluster", settings.etcd_binary
    )
    try:
        leader = target.wait_for_leader(LEADER_WAIT)
        time.sleep(SETTLE)
        before = _member_readings(target)
        started = monotonic()
        time.sleep(settings.idle)
        idle = _cpu_between(before, _member_readings(target)) / (monotonic() - started)
        block = Block(label, round_, leader, idle)
        for width in settings.widths:
            scenario = bench_scenario(settings, width)
            profile = None
            if settings.profile_dir is not None and target.kind != ETCD:
                profile = settings.profile_dir / profile_name(label, round_, width)
            block.phases.append(
                _phase(scenario, target, seed, directory / f"w{width}", leader, profile)
            )
        return block
    finally:
        target.down()


def profile_name(label: str, round_: int, width: int) -> str:
    """The collapsed-stack file of one label's leader in one round and phase."""
    return f"{label.replace(':', '-')}-r{round_ + 1}-w{width}.txt"


def _phase(
    scenario: Scenario,
    target: Target,
    seed: int,
    directory: Path,
    leader: NodeId,
    profile: Path | None,
) -> Phase:
    attempt, op_timeout = client_timeouts(scenario)
    timing = scenario.timing
    workload = scenario.workload
    endpoints = _leader_first(target)
    plans = [
        GeneratorPlan(
            endpoints=endpoints,
            workload=workload.to_dict(),
            seed=seed,
            workers=ids,
            batch=1,
            stop_at=timing.warmup + timing.duration,
            output=str(directory / f"ops-{index}.jsonl"),
            op_timeout=op_timeout,
            attempt_timeout=attempt,
            target=target.kind,
            client_prefix=f"{scenario.name}-",  # one cluster serves every phase
        )
        for index, ids in enumerate(split_workers(workload.clients, scenario.load.processes))
    ]
    with GeneratorPool(plans, directory) as pool:
        pool.start()
        origin = monotonic() + GO_DELAY
        pool.go(origin)
        start, end = origin + timing.warmup, origin + timing.warmup + timing.duration
        _sleep_until(start)
        cpu0, load0 = _member_cpu(target), pool.cpu_seconds()
        recording = _record(target, leader, timing.duration, profile)
        _sleep_until(end)
        cpu1, load1 = _member_cpu(target), pool.cpu_seconds()
        if recording is not None:
            recording.wait()
        results = pool.finish(timeout=op_timeout + 30.0)
    ops = merge_ops(results)
    low, high = timing.warmup, timing.warmup + timing.duration  # run time of the window
    ok = [op.complete - op.invoke for op in iter_window(ops, low, high) if op.complete]
    failures = sum(1 for op in ops if op.outcome != "ok" and low <= op.invoke < high)
    seconds = end - start
    server = sum(cpu1.values()) - sum(cpu0.values())
    lead = cpu1[leader] - cpu0[leader]
    cores = os.cpu_count() or 1
    return Phase(
        width=workload.clients,
        writes=len(ok),
        failures=failures,
        writes_per_s=len(ok) / seconds,
        p50_ms=_percentile_ms(ok, 50),
        p99_ms=_percentile_ms(ok, 99),
        server_cpu_s=server,
        cpu_per_write_ms=1000.0 * server / len(ok) if ok else math.nan,
        leader_cpu_per_write_ms=1000.0 * lead / len(ok) if ok else math.nan,
        loadgen_share=(load1 - load0) / (seconds * cores),
    )


def _record(
    target: Target, leader: NodeId, seconds: float, output: Path | None
) -> Recording | None:
    if output is None:
        return None
    process = target.process(leader)
    if process is None:
        raise ProfilerError(f"no process for the leader {leader} to profile")
    return Recording(process[0], seconds, output)


def _leader_first(target: Target) -> tuple[str, ...]:
    """Every member's endpoint, the leader's first (clients then start there, not redirected)."""
    endpoints = list(target.endpoints)
    leader = target.wait_for_leader(LEADER_WAIT)
    index = list(target.node_ids).index(leader)
    return (endpoints[index], *endpoints[:index], *endpoints[index + 1 :])


def _member_cpu(target: Target) -> dict[NodeId, float]:
    """CPU seconds of each member's process so far (a member that is gone counts 0)."""
    cpu = {}
    for node in target.node_ids:
        stat = target.process_stat(node)
        cpu[node] = 0.0 if stat is None else stat.cpu
    return cpu


@dataclass(frozen=True, slots=True)
class _Reading:
    """One member's process at one moment: who it is, its ticks, its threads' exact time."""

    pid: int
    start_ticks: int
    cpu: float  # utime + stime, clock ticks
    threads: dict[int, int] | None  # ns per live thread


def _member_readings(target: Target) -> dict[NodeId, _Reading | None]:
    """Each member's CPU now (the bench's targets are local processes: their pids are ours)."""
    readings: dict[NodeId, _Reading | None] = {}
    for node in target.node_ids:
        stat = target.process_stat(node)
        readings[node] = (
            None
            if stat is None
            else _Reading(stat.pid, stat.start_ticks, stat.cpu, thread_run_ns(stat.pid))
        )
    return readings


def _cpu_between(
    before: dict[NodeId, _Reading | None], after: dict[NodeId, _Reading | None]
) -> float:
    """CPU seconds the members ran between two readings, summed: exact where every thread
    lived through the window (idle windows are a few tens of ms, which clock ticks would
    round by up to 10 ms per reading and process), from ticks otherwise."""
    total = 0.0
    for node, first in before.items():
        last = after.get(node)
        if (
            first is None
            or last is None
            or (first.pid, first.start_ticks)
            != (
                last.pid,
                last.start_ticks,
            )
        ):
            continue  # not running throughout: it ran nothing we can attribute
        exact = None
        if first.threads is not None and last.threads is not None:
            exact = run_seconds_between(first.threads, last.threads)
        total += exact if exact is not None else last.cpu - first.cpu
    return total


def _sleep_until(when: float) -> None:
    delay = when - monotonic()
    if delay > 0:
        time.sleep(delay)


def _percentile_ms(latencies: Sequence[float], q: float) -> float:
    value = percentile_ms(latencies, q)
    return math.nan if value is None else value


# ---- the summary ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spread:
    """The median over rounds, with the lowest and highest round."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        kept = [v for v in values if not math.isnan(v)]
        if not kept:
            return cls(math.nan, math.nan, math.nan)
        return cls(statistics.median(kept), min(kept), max(kept))


METRICS: tuple[tuple[str, str], ...] = (
    ("writes_per_s", "writes/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("cpu_per_write_ms", "CPU/write ms"),
    ("loadgen_share", "loadgen"),
    ("failures", "failed"),
)


def summarise(blocks: Sequence[Block], reference: str = REFERENCE) -> dict[str, Any]:
    """Per label: each phase's metrics and idle cores over rounds, and the per-round ratios to
    `reference` (absent when the run has no such label)."""
    labels = list(dict.fromkeys(b.label for b in blocks))
    widths = sorted({p.width for b in blocks for p in b.phases})
    by_round = {(b.label, b.round): b for b in blocks}
    rounds = sorted({b.round for b in blocks})
    out: dict[str, Any] = {}
    for label in labels:
        mine = [b for b in blocks if b.label == label]
        entry: dict[str, Any] = {"idle_cores": Spread.of(b.idle_cores for b in mine)}
        for width in widths:
            phases = [p for b in mine if (p := b.phase(width)) is not None]
            entry[f"w{width}"] = {
                name: Spread.of(getattr(p, name) for p in phases) for name, _ in METRICS
            }
            if reference in labels:
                entry[f"w{width}"]["ratio"] = {
                    name: Spread.of(
                        _ratio(by_round, label, reference, r, width, name) for r in rounds
                    )
                    for name in ("writes_per_s", "p50_ms", "p99_ms", "cpu_per_write_ms")
                }
        if reference in labels:
            entry["idle_ratio"] = Spread.of(
                _idle_ratio(by_round, label, reference, r) for r in rounds
            )
        out[label] = entry
    return out


def _ratio(
    by_round: dict[tuple[str, int], Block],
    label: str,
    reference: str,
    round_: int,
    width: int,
    name: str,
) -> float:
    mine, theirs = by_round.get((label, round_)), by_round.get((reference, round_))
    if mine is None or theirs is None:
        return math.nan
    a, b = mine.phase(width), theirs.phase(width)
    if a is None or b is None:
        return math.nan
    top, bottom = getattr(a, name), getattr(b, name)
    return top / bottom if bottom and not math.isnan(bottom) else math.nan


def _idle_ratio(
    by_round: dict[tuple[str, int], Block], label: str, reference: str, round_: int
) -> float:
    mine, theirs = by_round.get((label, round_)), by_round.get((reference, round_))
    if mine is None or theirs is None or not theirs.idle_cores:
        return math.nan
    return mine.idle_cores / theirs.idle_cores


def pair_ratio(blocks: Sequence[Block], top: str, bottom: str) -> Spread:
    """Idle CPU of `top` over `bottom`, per round (the issue's pull-vs-push idle target)."""
    by_round = {(b.label, b.round): b for b in blocks}
    rounds = sorted({b.round for b in blocks})
    return Spread.of(_idle_ratio(by_round, top, bottom, r) for r in rounds)


def format_table(blocks: Sequence[Block], settings: BenchSettings) -> str:
    """The printed table: one row per label and phase, then idle CPU, then ratios."""
    summary = summarise(blocks)
    widths = sorted({p.width for b in blocks for p in b.phases})
    lines = [
        f"{settings.nodes} members, fsync on, {settings.value_size}-byte values, "
        f"{settings.rounds} interleaved rounds of {settings.duration:g} s per phase; "
        "medians over rounds [lowest, highest]",
        "",
        f"{'label':<12} {'W':>3} {'writes/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU/write ms':>13} {'loadgen':>8} {'failed':>7}",
    ]
    for label, entry in summary.items():
        for width in widths:
            cells = entry[f"w{width}"]
            lines.append(
                f"{label:<12} {width:>3} {cells['writes_per_s'].median:>9.0f} "
                f"{cells['p50_ms'].median:>8.2f} {cells['p99_ms'].median:>8.2f} "
                f"{cells['cpu_per_write_ms'].median:>13.3f} {cells['loadgen_share'].median:>8.0%}"
                f" {cells['failures'].median:>7.0f}"
            )
    lines += ["", f"{'label':<12} {'idle cores (members summed)':>28}"]
    for label, entry in summary.items():
        idle = entry["idle_cores"]
        lines.append(f"{label:<12} {idle.median:>10.3f} [{idle.low:.3f}, {idle.high:.3f}]")
    if REFERENCE in summary:
        lines += ["", f"ratios to {REFERENCE}, per round then the median [lowest, highest]:"]
        for label, entry in summary.items():
            if label == REFERENCE:
                continue
            parts = []
            for width in widths:
                ratio = entry[f"w{width}"]["ratio"]
                parts.append(f"W={width} p50 {_spread(ratio['p50_ms'])}")
                parts.append(f"W={width} CPU/write {_spread(ratio['cpu_per_write_ms'])}")
            parts.append(f"idle {_spread(entry['idle_ratio'])}")
            lines.append(f"  {label}: " + "; ".join(parts))
    labels = [b.label for b in blocks]
    pulls = [x for x in dict.fromkeys(labels) if x.startswith("pull")]
    if "push" in labels:
        for pull in pulls:
            lines.append(f"  idle {pull}/push: {_spread(pair_ratio(blocks, pull, 'push'))}")
    return "\n".join(lines)


def _spread(value: Spread) -> str:
    return f"{value.median:.2f}x [{value.low:.2f}, {value.high:.2f}]"


def to_json(blocks: Sequence[Block], settings: BenchSettings) -> dict[str, Any]:
    """Everything measured (each round's blocks) and the summary, for a results file."""
    raw = asdict(settings)
    raw["etcd_binary"] = None if settings.etcd_binary is None else str(settings.etcd_binary)
    summary = summarise(blocks)
    return {
        "settings": raw,
        "machine_cores": os.cpu_count(),
        "blocks": [asdict(b) for b in blocks],
        "summary": json.loads(json.dumps(summary, default=asdict)),
    }
