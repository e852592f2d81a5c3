"""The load generator against the null server: open-loop accounting, batched lanes, the Jepsen
process rule. Real processes (the generator and the server), no cluster."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path

import pytest

from workloads.generators import PROCESS_SPAN, ArrivalProcess, LoopMode, OpMix, Workload
from workloads.loadgen import (
    GeneratorPlan,
    GeneratorPool,
    GeneratorResult,
    merge_ops,
    monotonic,
    split_workers,
)
from workloads.null_server import NullServer
from workloads.results import OpRecord

SLOW = 0.05  # seconds the slow null server waits before each answer


def drive(
    tmp_path: Path,
    server: NullServer,
    workload: Workload,
    *,
    batch: int = 1,
    stop_at: float = 1.0,
    drain: float = 0.0,
    op_timeout: float = 10.0,
    attempt_timeout: float = 5.0,
) -> GeneratorResult:
    """One generator process running every worker of `workload` against `server`."""
    plan = GeneratorPlan(
        endpoints=(server.url,),
        workload=workload.to_dict(),
        seed=7,
        workers=tuple(range(workload.clients)),
        batch=batch,
        stop_at=stop_at,
        output=str(tmp_path / "ops.jsonl"),
        op_timeout=op_timeout,
        attempt_timeout=attempt_timeout,
        drain=drain,
    )
    with GeneratorPool([plan], tmp_path / "load") as pool:
        pool.start()
        pool.go(monotonic())
        (result,) = pool.finish(timeout=60.0)
    return result


def by_process(ops: list[OpRecord]) -> dict[int, list[OpRecord]]:
    out: dict[int, list[OpRecord]] = defaultdict(list)
    for op in ops:
        out[op.process].append(op)
    return out


def test_open_loop_latency_counts_from_the_intended_start(tmp_path: Path) -> None:
    # One worker, 40 arrivals/s, a server that needs 50 ms per answer: a backlog must build up,
    # and every operation's latency must include the time it waited for the worker.
    workload = Workload(
        mix=OpMix(write=1.0),
        clients=1,
        loop=LoopMode.OPEN,
        rate=40.0,
        arrival=ArrivalProcess.UNIFORM,
    )
    scheduled = workload.arrivals(1.0, 7, 0)
    with NullServer(delay=SLOW) as server:
        result = drive(tmp_path, server, workload, stop_at=1.0, drain=0.5)
    ops = sorted(result.ops, key=lambda op: op.invoke)
    assert ops and all(op.outcome == "ok" for op in ops)
    # Nothing scheduled vanishes: sent late, or counted as abandoned at stop_at + drain.
    assert len(ops) + result.report.not_sent == len(scheduled)
    assert result.report.not_sent > 0
    assert [op.intended for op in ops] == pytest.approx(list(scheduled[: len(ops)]), abs=1e-6)
    first = ops[0].intended
    assert first is not None
    for k, op in enumerate(ops):
        assert op.intended is not None and op.complete is not None
        previous = ops[k - 1].complete if k else None
        assert op.invoke >= op.intended  # never sent before its time
        assert op.latency == pytest.approx(op.complete - op.intended)
        assert op.complete - op.invoke >= 0.99 * SLOW  # the server's own delay
        if previous is not None:
            assert op.invoke >= previous  # one outstanding operation per worker
        # Each earlier operation held the worker for >= SLOW, so operation k cannot start
        # before first + k * SLOW; the latency from its schedule must show that wait.
        queueing = max(0.0, first + k * 0.99 * SLOW - op.intended)
        assert op.invoke - op.intended >= queueing
        assert op.latency is not None and op.latency >= queueing + 0.99 * SLOW


def test_batched_rounds_give_each_lane_its_own_process(tmp_path: Path) -> None:
    workload = Workload(mix=OpMix(read=0.3, write=0.4, cas=0.2, rmw=0.1), key_count=5, clients=2)
    with NullServer() as server:
        result = drive(tmp_path, server, workload, batch=4, stop_at=0.5)
    ops = result.ops
    assert ops and all(op.outcome in ("ok", "fail") for op in ops)
    lanes = {op.process // PROCESS_SPAN for op in ops}
    assert lanes == set(range(2 * 4))  # worker w, lane i -> w * batch + i
    # One request per round: every operation of a request shares its invoke and complete times.
    rounds: dict[tuple[int, float, float | None], list[OpRecord]] = defaultdict(list)
    for op in ops:
        worker = op.process // PROCESS_SPAN // 4
        rounds[(worker, op.invoke, op.complete)].append(op)
    assert len(rounds) == result.report.requests
    # Closed loop: every round started before stop_at is full (after it, only the cas halves
    # of read-modify-writes still go out).
    assert all(len(group) == 4 for (_, invoke, _), group in rounds.items() if invoke < 0.5)
    for lane_ops in by_process(ops).values():
        lane_ops.sort(key=lambda op: op.invoke)
        for before, after in itertools.pairwise(lane_ops):
            assert before.complete is not None and after.invoke >= before.complete


def test_a_read_modify_write_is_a_read_then_a_cas_from_the_value_read(tmp_path: Path) -> None:
    workload = Workload(mix=OpMix(rmw=1.0), key_count=5, clients=1)
    with NullServer() as server:
        result = drive(tmp_path, server, workload, batch=2, stop_at=0.3)
    for lane_ops in by_process(result.ops).values():
        lane_ops.sort(key=lambda op: op.invoke)
        reads, cases = lane_ops[0::2], lane_ops[1::2]
        assert reads and all(op.f == "read" for op in reads)
        assert all(op.f == "cas" for op in cases)
        for read, cas in zip(reads, cases, strict=False):
            # The cas goes out after its read completed, on that key, expecting what was read
            # (the null server never holds a value: None).
            assert read.complete is not None and cas.invoke >= read.complete
            assert cas.key == read.key and cas.value[0] == read.value is None


def test_an_unknown_outcome_moves_the_lane_to_a_new_process(tmp_path: Path) -> None:
    # The server answers after 1 s; the client gives up after 0.3 s: every write's outcome is
    # unknown (it may have been applied), every read simply failed.
    workload = Workload(mix=OpMix(read=0.5, write=0.5), key_count=3, clients=1)
    with NullServer(delay=1.0) as server:
        result = drive(
            tmp_path, server, workload, stop_at=1.0, op_timeout=0.3, attempt_timeout=0.25
        )
    ops = sorted(result.ops, key=lambda op: op.invoke)
    assert len(ops) >= 2
    generation = 0
    for op in ops:
        assert op.process == generation  # worker 0, lane 0
        if op.f == "write":
            assert op.outcome == "unknown" and op.complete is None
            generation += 1
        else:
            assert op.outcome == "fail" and op.complete is not None
    assert any(op.f == "write" for op in ops)
    assert sum(result.report.errors.values()) == len(ops)


def test_workers_are_dealt_evenly_over_processes() -> None:
    assert split_workers(5, 2) == [(0, 2, 4), (1, 3)]
    assert split_workers(2, 8) == [(0,), (1,)]  # never an idle process
    assert sorted(w for part in split_workers(64, 3) for w in part) == list(range(64))


def test_merge_orders_every_process_by_invocation() -> None:
    from workloads.loadgen import GeneratorReport  # noqa: PLC0415

    def result(*times: float) -> GeneratorResult:
        ops = [OpRecord(1, "write", "k", "v", t, t + 1, "ok") for t in times]
        return GeneratorResult(GeneratorReport(1, 0.0, len(ops), len(ops), 0), ops)

    merged = merge_ops([result(0.3, 0.9), result(0.1, 0.5)])
    assert [op.invoke for op in merged] == [0.1, 0.3, 0.5, 0.9]
