"""The membership scenarios on the simulator, for push and pull: every acknowledged write
survives, the history is linearizable, and every newcomer catches up (and is promoted)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from workloads.catchup import catch_ups, observations
from workloads.scenario import Scenario, load_scenario
from workloads.sim_driver import run_sim
from workloads.summary import summarize

LINEARIZABLE = "linearizable"


def _short(name: str, duration: float) -> Scenario:
    """The catalogue scenario with fewer clients and a shorter window (same actions)."""
    scenario = load_scenario(name).with_duration(duration)
    workload = dataclasses.replace(scenario.workload, clients=4)
    return dataclasses.replace(scenario, workload=workload)


def _run(scenario: Scenario, label: str, seed: int = 1) -> Any:
    protocol, _, policy = label.partition(":")
    record = run_sim(scenario, protocol, policy or None, seed, 0, label, "test")
    summary = summarize(record, budget=60.0)
    assert record.metadata["sim"]["violations"] == []
    assert summary.verdict == LINEARIZABLE
    assert summary.acked_lost == 0
    return record


@pytest.mark.parametrize("label", ["push", "pull:primary", "pull:nearest"])
def test_add_node_the_newcomer_catches_up_from_a_snapshot(label: str) -> None:
    record = _run(_short("add-node", 6.0), label)
    (observation,) = observations(record.metadata)
    assert observation.node == "n4" and observation.caught_up is not None
    assert observation.snapshot_index > 0  # a compacted cluster: it started from a snapshot
    assert observation.applied >= observation.index
    assert observation.promoted is not None
    changes = [(c["change"], c["node"], c["ok"]) for c in record.metadata["membership"]["changes"]]
    assert changes == [("add-learner", "n4", True), ("promote", "n4", True)]
    (catch_up,) = catch_ups(record.metadata, record.timeseries)
    assert catch_up.bytes_received > 0 and catch_up.primary_egress_during is not None


@pytest.mark.parametrize(("label", "server"), [("push", "n1"), ("pull:primary", "n1")])
def test_add_node_is_served_by_the_primary_when_the_protocol_says_so(
    label: str, server: str
) -> None:
    record = _run(_short("add-node", 6.0), label)
    (catch_up,) = catch_ups(record.metadata, record.timeseries)
    assert catch_up.primary == "n1" and catch_up.served_by == server


def test_add_node_pull_nearest_copies_from_the_secondary_next_to_it() -> None:
    """n4 is in n3's region, the primary n1 across a 20 ms link: n3 serves the initial sync
    and the primary sends the newcomer next to nothing (probes, heartbeats)."""
    record = _run(_short("add-node", 6.0), "pull:nearest")
    (observation,) = observations(record.metadata)
    received = observation.received
    assert max(received, key=lambda peer: received[peer]) == "n3"
    assert received.get("n1", 0) * 100 < received["n3"]
    assert observation.sync_source == "n3"


@pytest.mark.parametrize("label", ["push", "pull:nearest"])
def test_replace_node_removes_one_and_the_fresh_one_catches_up(label: str) -> None:
    record = _run(_short("replace-node", 6.0), label)
    changes = [(c["change"], c["node"], c["ok"]) for c in record.metadata["membership"]["changes"]]
    assert changes == [
        ("remove", "n3", True),
        ("add-learner", "n4", True),
        ("promote", "n4", True),
    ]
    (observation,) = observations(record.metadata)
    assert observation.caught_up is not None and observation.snapshot_index > 0
    crashed = [f for f in record.faults if f.kind == "crash"]
    assert [f.nodes for f in crashed] == [("n3",)]  # stopped once its removal committed


@pytest.mark.parametrize("label", ["push", "pull:nearest"])
def test_bootstrap_grows_one_node_to_five(label: str) -> None:
    record = _run(_short("bootstrap", 9.0), label)
    found = observations(record.metadata)
    assert [o.node for o in found] == ["n2", "n3", "n4", "n5"]
    assert all(o.caught_up is not None and o.promoted is not None for o in found)
    promoted = [c["node"] for c in record.metadata["membership"]["changes"] if c["ok"]]
    assert promoted.count("n5") == 2  # added, then promoted: five voters
    final = record.metadata["final_state"]
    assert final  # the cluster of five answered the final reads
