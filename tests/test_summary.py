"""workloads.summary and workloads.lost_writes on hand-made runs with numbers known in advance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from run_builder import (
    CRASH_AT,
    CRASH_LINKS,
    ELECTED_AT,
    WINDOW,
    Spec,
    crash_spec,
    make_ops,
    make_record,
)

from workloads.checker import LINEARIZABLE, NOT_LINEARIZABLE
from workloads.lost_writes import acked_writes_lost
from workloads.results import FaultRecord, OpRecord, read_run, write_run
from workloads.summary import save_summary, summarize


def ok_completing_in_window(spec: Spec, kinds: tuple[str, ...] = ("read", "write")) -> int:
    """The hand count: ok operations of `kinds` completing in the measured window."""
    return sum(
        1
        for op in make_ops(spec)
        if op.outcome == "ok"
        and op.f in kinds
        and op.complete is not None
        and WINDOW[0] <= op.complete < WINDOW[1]
    )


# ---- throughput and latency ---------------------------------------------------------------------


def test_throughput_counts_ok_completions_in_the_window() -> None:
    # One op per 10 ms: exactly 1000 complete in [1, 11) (op 99 is slow and lands at 1.005,
    # op 1099 is slow and lands at 11.005); every 5th is a read, so 800 are writes.
    summary = summarize(make_record(Spec()))
    assert summary.ok_ops == 1000
    assert summary.throughput == 100.0
    assert summary.acked_writes == 800
    assert summary.write_throughput == 80.0
    assert summary.throughput_windows == [100.0] * 10


def test_latency_percentiles_per_kind() -> None:
    # Of the 1000 ops meant to start in the window, every 10th takes 10 ms, the rest 1 ms; the
    # slow ones are all reads (i % 10 == 9 implies i % 5 == 4), half of the reads.
    summary = summarize(make_record(Spec()))
    every = summary.latency["all"]
    assert every.count == 1000
    assert every.p50 == pytest.approx(0.001)
    assert every.p90 == pytest.approx(0.001 + 0.1 * 0.009)  # between ranks 899 and 900
    assert every.p99 == pytest.approx(0.010)
    assert every.max == pytest.approx(0.010)
    assert summary.latency["write"].p99 == pytest.approx(0.001)
    assert summary.latency["read"].count == 200
    assert summary.latency["read"].p50 == pytest.approx(0.0055)


def test_open_loop_latency_counts_from_the_intended_start() -> None:
    late = OpRecord(0, "write", "late", "x", 5.0, 5.3, "ok", intended=4.8)
    summary = summarize(make_record(Spec(count=0, extra_ops=[late])))
    assert summary.latency["write"].max == pytest.approx(0.5)


def test_failed_and_unknown_operations_are_counted_not_timed() -> None:
    extra = [
        OpRecord(100, "write", "a", "1", 2.0, 2.5, "fail"),
        OpRecord(101, "write", "b", "2", 3.0, None, "unknown"),
        OpRecord(102, "write", "c", "3", 0.5, None, "unknown"),  # before the window
    ]
    summary = summarize(make_record(Spec(count=0, extra_ops=extra)))
    assert (summary.ok_ops, summary.failed_ops, summary.unknown_ops) == (0, 1, 1)
    assert summary.latency == {}


# ---- faults -------------------------------------------------------------------------------------


def test_unavailability_and_election_after_a_leader_crash() -> None:
    spec = crash_spec()
    summary = summarize(make_record(spec))
    assert len(summary.faults) == 1  # the restart undoes the crash: not scored
    fault = summary.faults[0]
    assert (fault.t, fault.kind, fault.nodes) == (CRASH_AT, "crash", ("n1",))
    assert fault.pre_rate == 100.0  # 200 ok completions in [3, 5)
    assert fault.unavailable == pytest.approx(1.5)  # nothing completes in [5.0, 6.5)
    assert fault.recovered
    assert fault.election == pytest.approx(ELECTED_AT - CRASH_AT)
    assert fault.new_leader == "n2"
    assert summary.failover == pytest.approx(1.5)
    assert summary.throughput == ok_completing_in_window(spec) / 10


def test_a_lone_burst_during_the_outage_is_not_a_recovery() -> None:
    # Ten writes complete in one 100 ms bin in the middle of the outage, then nothing again:
    # recovery needs two healthy bins in a row, so the window still ends at 6.5.
    burst = [
        OpRecord(300 + j, "write", f"burst{j}", "b", 5.5, 5.51 + 0.005 * j, "ok") for j in range(10)
    ]
    fault = summarize(make_record(crash_spec(extra_ops=burst))).faults[0]
    assert fault.unavailable == pytest.approx(1.5)


def test_a_fault_that_does_not_dent_throughput_scores_zero() -> None:
    spec = Spec(faults=[FaultRecord(5.0, "crash", ("n3",))])
    fault = summarize(make_record(spec)).faults[0]
    assert fault.unavailable == 0.0
    assert fault.recovered
    assert fault.election is None  # no time series, no leader change


def test_a_fault_that_lands_late_is_scored_from_its_start_to_the_end_of_its_dip() -> None:
    # The partition starts at 5.0, is in force at 5.6 (took 0.6 s), and the rate falls at 5.8:
    # the first bins after the fault are healthy, but the dip still belongs to the fault.
    spec = Spec(outage=(5.8, 7.0), faults=[FaultRecord(5.0, "partition", ("n1",), took=0.6)])
    fault = summarize(make_record(spec)).faults[0]
    assert fault.unavailable == pytest.approx(2.0)
    assert fault.recovered


def test_a_dip_long_after_the_fault_is_in_force_is_not_the_faults() -> None:
    spec = Spec(outage=(6.2, 7.0), faults=[FaultRecord(5.0, "partition", ("n1",), took=0.1)])
    assert summarize(make_record(spec)).faults[0].unavailable == 0.0
    later = Spec(outage=(6.0, 7.0), faults=[FaultRecord(5.0, "partition", ("n1",), took=0.1)])
    assert summarize(make_record(later)).faults[0].unavailable == pytest.approx(2.0)


def test_one_thin_bin_is_not_a_dip() -> None:
    spec = Spec(outage=(5.3, 5.4), faults=[FaultRecord(5.0, "crash", ("n3",))])
    assert summarize(make_record(spec)).faults[0].unavailable == 0.0
    two = Spec(outage=(5.3, 5.5), faults=[FaultRecord(5.0, "crash", ("n3",))])
    assert summarize(make_record(two)).faults[0].unavailable == pytest.approx(0.5)


def test_how_long_a_fault_took_is_read_from_an_old_records_detail(tmp_path: Path) -> None:
    faults = [
        FaultRecord(5.0, "partition", ("n1",), "n1 | n2,n3 (shaper) (took 0.708 s)"),
        FaultRecord(9.0, "heal", ("n1",), "(took 1.5 s)", took=0.25),
        FaultRecord(12.0, "crash", ("n2",), "SIGKILL"),
    ]
    record = make_record(Spec(faults=faults))
    write_run(record, tmp_path, "run")
    stored = (tmp_path / "run" / "faults.jsonl").read_text().splitlines()
    old_style = []
    for line in stored:
        row = json.loads(line)
        row.pop("took")
        old_style.append(json.dumps(row))
    (tmp_path / "run" / "faults.jsonl").write_text("\n".join(old_style) + "\n")
    back = read_run(tmp_path / "run").faults
    assert [f.took for f in back] == [0.708, 1.5, None]
    assert back[0].in_force == pytest.approx(5.708)
    assert back[2].in_force == 12.0


def test_a_rate_that_never_recovers_is_a_lower_bound_to_the_end_of_the_data() -> None:
    spec = Spec(outage=(5.0, 100.0), faults=[FaultRecord(5.0, "partition", ("n1",))])
    fault = summarize(make_record(spec)).faults[0]
    last = max(op.complete or op.invoke for op in make_ops(spec))
    assert not fault.recovered
    assert fault.unavailable == pytest.approx(last - 5.0)


def test_undo_and_skipped_faults_are_not_scored() -> None:
    faults = [
        FaultRecord(3.0, "slow-link", ("n3",), "slow-link n3 +40ms"),
        FaultRecord(3.0, "slow-disk", ("n3",), "slow-disk n3 +20ms"),
        FaultRecord(4.0, "skipped", (), "skipped (no leader): crash leader"),
        FaultRecord(6.0, "slow-link", ("n3",), "slow-link n3"),  # the simulator's undo
        FaultRecord(6.0, "slow-disk", ("n3",), "undo: slow-disk n3"),
        FaultRecord(7.0, "heal", (), "heal"),
    ]
    summary = summarize(make_record(Spec(faults=faults)))
    assert [(f.t, f.kind) for f in summary.faults] == [(3.0, "slow-link"), (3.0, "slow-disk")]


def test_election_is_not_blamed_on_an_earlier_fault() -> None:
    # A follower crashes at 3.0 and the leader at 5.0: the election at 6.2 belongs to the
    # second fault only.
    faults = [FaultRecord(3.0, "crash", ("n3",)), *crash_spec().faults]
    summary = summarize(make_record(crash_spec(faults=faults)))
    assert [f.election for f in summary.faults] == [None, pytest.approx(1.2)]


# ---- costs and lag ------------------------------------------------------------------------------


def test_bytes_per_write_with_one_leader_throughout() -> None:
    nodes = {
        "n1": {"region": "a", "cpu_seconds": 5.0, "leader_time": 10.0},
        "n2": {"region": "a", "cpu_seconds": 2.0, "leader_time": 0.0},
        "n3": {"region": "b", "cpu_seconds": 1.0, "leader_time": 0.0},
    }
    summary = summarize(make_record(Spec(links=[dict(x) for x in CRASH_LINKS], nodes=nodes)))
    # 800 acknowledged writes; n1 sent 2000 bytes; 1600 bytes crossed regions; 2700 in all.
    assert summary.leader_egress_per_write == 2000 / 800
    assert summary.cross_region_per_write == 1600 / 800
    assert summary.link_bytes_per_write == 2700 / 800
    assert summary.leader_cpu == pytest.approx(0.5)  # 5 CPU seconds over a 10 s window
    assert summary.leader_cpu_per_write == pytest.approx(5.0 / 800)


def test_leader_costs_are_weighted_by_leader_time() -> None:
    spec = crash_spec()
    summary = summarize(make_record(spec))
    writes = ok_completing_in_window(spec, ("write",))
    assert summary.acked_writes == writes
    # n1 led 4.0 s using 4 CPU s over the window, n2 led 4.8 s using 3 CPU s.
    assert summary.leader_cpu == pytest.approx((0.4 * 4.0 + 0.3 * 4.8) / 8.8)
    assert summary.leader_egress_per_write == pytest.approx((2000 * 4.0 + 600 * 4.8) / 8.8 / writes)


def test_no_cpu_figures_means_no_leader_cpu() -> None:
    nodes = {"n1": {"cpu_seconds": None, "leader_time": 10.0}}
    summary = summarize(make_record(Spec(nodes=nodes)))
    assert summary.leader_cpu is None
    assert summary.link_bytes_per_write is None  # no links recorded: unknown, not zero


def test_commit_lag_per_follower() -> None:
    lags = {lag.node: lag for lag in summarize(make_record(crash_spec())).commit_lag}
    # Samples in [1, 11): n2 follows n1 for 40 samples (lag 1); n3 trails by 2 for 40 samples,
    # then by 3 for 48 under n2 (nothing is compared while nobody leads); n1 rejoins at 9.0.
    assert (lags["n2"].samples, lags["n2"].mean, lags["n2"].max) == (40, 1.0, 1)
    assert lags["n3"].samples == 88
    assert lags["n3"].mean == pytest.approx((40 * 2 + 48 * 3) / 88)
    assert lags["n3"].max == 3
    assert (lags["n1"].samples, lags["n1"].mean) == (20, 5.0)


def test_malformed_time_series_rows_are_skipped() -> None:
    rows = [{"t": "soon", "node": "n1"}, {"node": "n2"}, *crash_spec().timeseries]
    summary = summarize(make_record(crash_spec(timeseries=rows)))
    assert summary.faults[0].new_leader == "n2"


def test_missing_window_falls_back_to_the_span_of_the_operations() -> None:
    record = make_record(Spec())
    del record.metadata["window"]
    summary = summarize(record)
    first = min(op.invoke for op in record.ops)
    last = max(op.complete or 0.0 for op in record.ops)
    assert summary.window == (first, last)


def test_driver_figures_are_reported() -> None:
    summary = summarize(make_record(Spec()))
    assert (summary.driver_cpu_share, summary.driver_ceiling) == (0.25, 400.0)


# ---- correctness --------------------------------------------------------------------------------


def stale_read() -> list[OpRecord]:
    return [
        OpRecord(200, "write", "x", "new", 2.0, 2.1, "ok"),
        OpRecord(201, "read", "x", None, 3.0, 3.1, "ok"),
    ]


def test_a_stale_read_makes_the_history_non_linearizable() -> None:
    summary = summarize(make_record(Spec(count=50, extra_ops=stale_read())))
    assert summary.verdict == NOT_LINEARIZABLE
    assert "x" in summary.verdict_detail
    assert summary.acked_lost is None  # no final state: cannot count


def test_a_linearizable_history_without_final_reads_loses_nothing() -> None:
    summary = summarize(make_record(Spec(count=50)))
    assert summary.verdict == LINEARIZABLE
    assert summary.acked_lost == 0


def test_final_state_that_misses_an_acknowledged_write() -> None:
    # The store as a whole (the simulator's snapshot): every written key but k1, which was
    # written (acknowledged) and is absent at the end.
    spec = Spec(count=50)
    store = {op.key: op.value for op in make_ops(spec) if op.f == "write" and op.key != "k1"}
    summary = summarize(make_record(Spec(count=50, metadata={"final_state": store})))
    assert summary.verdict == LINEARIZABLE
    assert summary.acked_lost == 1
    assert "'k1'" in summary.lost_detail
    store["k1"] = "v1"
    assert summarize(make_record(Spec(count=50, metadata={"final_state": store}))).acked_lost == 0


def test_keys_the_driver_could_not_read_are_not_checked() -> None:
    spec = Spec(count=50)
    store = {op.key: op.value for op in make_ops(spec) if op.f == "write" and op.key != "k1"}
    meta = {"final_state": store, "real": {"final_state_unread": ["k1"]}}
    summary = summarize(make_record(Spec(count=50, metadata=meta)))
    assert summary.acked_lost == 0
    assert "1 keys could not be read" in summary.lost_detail


def test_a_partial_final_state_checks_only_the_keys_it_lists() -> None:
    final = {"k0": "v0", "k1": None, "k2": "v2"}
    meta = {"final_state": final, "final_state_partial": True}
    summary = summarize(make_record(Spec(count=50, metadata=meta)))
    assert summary.acked_lost == 1  # k1; the other 37 written keys were not read


def sequential(first: str, second: str) -> list[OpRecord]:
    return [
        OpRecord(1, "write", "x", first, 1.0, 1.1, "ok"),
        OpRecord(1, "write", "x", second, 2.0, 2.1, "ok"),
    ]


@pytest.mark.parametrize(
    ("ops", "final", "lost"),
    [
        (sequential("a", "b"), "b", 0),
        (sequential("a", "b"), "a", 1),  # b was invoked after a completed: b is lost
        (sequential("a", "b"), None, 2),  # absent: both acknowledged writes are gone
        (sequential("a", "b"), "zzz", 2),  # a value nobody wrote
        (  # overlapping writes may take effect in either order
            [
                OpRecord(1, "write", "x", "a", 1.0, 2.0, "ok"),
                OpRecord(2, "write", "x", "b", 1.5, 2.5, "ok"),
            ],
            "a",
            0,
        ),
        (  # an unknown outcome may take effect at any time after its invocation
            [*sequential("a", "b"), OpRecord(3, "write", "x", "c", 1.5, None, "unknown")],
            "c",
            0,
        ),
        (  # a failed write took no effect
            [*sequential("a", "b"), OpRecord(3, "write", "x", "c", 2.5, 2.6, "fail")],
            "c",
            2,
        ),
        (  # cas writes its new value; delete leaves the key absent
            [
                OpRecord(1, "write", "x", "a", 1.0, 1.1, "ok"),
                OpRecord(1, "cas", "x", ("a", "b"), 2.0, 2.1, "ok"),
                OpRecord(1, "delete", "x", None, 3.0, 3.1, "ok"),
            ],
            None,
            0,
        ),
        ([OpRecord(1, "cas", "x", (None, "b"), 2.0, 2.1, "ok")], "b", 0),
        ([], None, 0),  # never written, absent
        (  # invoked exactly when the other completed: not strictly after it
            [
                OpRecord(1, "write", "x", "a", 1.0, 2.0, "ok"),
                OpRecord(2, "write", "x", "b", 2.0, 2.5, "ok"),
            ],
            "a",
            0,
        ),
    ],
)
def test_lost_write_rule(ops: list[OpRecord], final: str | None, lost: int) -> None:
    assert acked_writes_lost(ops, LINEARIZABLE, {"x": final}).lost == lost


def test_final_state_is_counted_even_when_the_history_is_not_linearizable() -> None:
    check = acked_writes_lost(sequential("a", "b"), NOT_LINEARIZABLE, {"x": "b"})
    assert check.lost == 0
    assert check.keys_checked == 1


# ---- the folder round trip ----------------------------------------------------------------------


def test_summary_from_the_folder_equals_the_summary_in_memory(tmp_path: Path) -> None:
    record = make_record(crash_spec())
    folder = write_run(record, tmp_path, "run-1")
    again = summarize(read_run(folder), run="run-1")
    first = summarize(record, run="run-1").to_dict()
    second = again.to_dict()
    for data in (first, second):
        data.pop("check_seconds")
    assert json.loads(json.dumps(first)) == json.loads(json.dumps(second))
    path = save_summary(again, folder)
    stored = json.loads(path.read_text())
    assert stored["throughput"] == again.throughput
    assert stored["failover"] == pytest.approx(1.5)
    assert stored["faults"][0]["new_leader"] == "n2"
