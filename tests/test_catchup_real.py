"""add-node on real processes, per protocol: a compacted 3-member cluster under load takes a
fourth member, which catches up from a snapshot and is promoted; nothing acknowledged is lost
and the history is linearizable. No timing is asserted: only what happened."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from test_real_driver import processes_under

from workloads.catchup import catch_ups, observations
from workloads.real_driver import run_real
from workloads.scenario import load_scenario
from workloads.summary import summarize


@pytest.mark.parametrize("protocol", ["push", "pull"])
def test_add_node_on_real_processes(tmp_path: Path, protocol: str) -> None:
    # The add is 4 s into the window, and the run cancels a catch-up still going at its end:
    # leave the newcomer 6 s (plus the cool-down), not 2, to catch up and be promoted on a
    # loaded machine (full scenario runs took up to 1.1 s on a quiet one).
    scenario = load_scenario("add-node").with_duration(10.0)
    workload = dataclasses.replace(scenario.workload, clients=4)
    # A low threshold, so the log is compacted well before the add even on a slow machine.
    scenario = dataclasses.replace(scenario, workload=workload, snapshot_entries=100)
    record = run_real(scenario, protocol, None, 5, 0, protocol, "test", work_dir=tmp_path / "run")
    assert processes_under(tmp_path) == []  # the driver stopped every node it started

    summary = summarize(record, budget=60.0)
    assert summary.verdict == "linearizable"
    assert summary.acked_lost == 0

    (observation,) = observations(record.metadata)
    assert observation.node == "n4" and observation.caught_up is not None
    assert observation.applied >= observation.index > 0
    assert observation.snapshot_index > 0  # it started from a snapshot: the log was compacted
    assert observation.promoted is not None
    assert observation.primary in ("n1", "n2", "n3")
    changes = [(c["change"], c["node"], c["ok"]) for c in record.metadata["membership"]["changes"]]
    assert changes == [("add-learner", "n4", True), ("promote", "n4", True)]
    (catch_up,) = catch_ups(record.metadata, record.timeseries)
    assert catch_up.bytes_received > 0 and catch_up.served_by in ("n1", "n2", "n3")
    assert catch_up.primary_cpu_during is not None and catch_up.primary_egress_before is not None
    # n4 answered the final reads as a member: its own samples show it applied past the add.
    n4 = [row for row in record.timeseries if row["node"] == "n4" and row.get("up")]
    assert max(int(row.get("applied") or 0) for row in n4) >= observation.index
