"""Membership scenarios: the schema (cluster.voters, add-node, remove-node), the catch-up
figures (workloads.catchup) and the report's Catch-up section, on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from run_builder import Spec, make_record

from cluster.etcd import LOOPBACK_UNSUPPORTED, NO_MEMBERSHIP
from workloads.catchup import CatchUpObservation, catch_ups, measure
from workloads.catchup_report import catchup_lines, newcomer_stats
from workloads.report import generate_report
from workloads.results import FaultRecord, write_run
from workloads.scenario import FaultAction, ScenarioError, load_scenario, parse_scenario

# ---- the schema -----------------------------------------------------------------------------


def test_the_catalogue_scenarios_load_with_their_membership_actions() -> None:
    add = load_scenario("add-node")
    assert (add.nodes, add.initial_voters) == (4, ("n1", "n2", "n3"))
    assert add.changes_membership and add.snapshot_entries > 0
    assert [(f.action, f.node, f.voter) for f in add.faults] == [(FaultAction.ADD_NODE, "n4", True)]
    replace = load_scenario("replace-node")
    assert [(f.action, f.node) for f in replace.faults] == [
        (FaultAction.REMOVE_NODE, "n3"),
        (FaultAction.ADD_NODE, "n4"),
    ]
    boot = load_scenario("bootstrap")
    assert boot.initial_voters == ("n1",)
    assert [f.node for f in boot.faults] == ["n2", "n3", "n4", "n5"]
    assert not load_scenario("quick").changes_membership
    assert load_scenario("quick").initial_voters == ("n1", "n2", "n3")


def _scenario(faults: list[dict[str, Any]], voters: int = 3, nodes: int = 4) -> Any:
    return parse_scenario({"cluster": {"nodes": nodes, "voters": voters}, "faults": faults})


def test_a_learner_add_parses() -> None:
    scenario = _scenario([{"at": 1.0, "action": "add-node", "node": "n4", "voter": False}])
    assert scenario.faults[0].voter is False
    assert scenario.faults[0].describe() == "add-node (learner) n4"


@pytest.mark.parametrize(
    ("cluster", "faults", "field", "words"),
    [
        ({"nodes": 3, "voters": 4}, [], "cluster.voters", "at most"),
        ({"nodes": 3, "voters": 0}, [], "cluster.voters", ">= 1"),
        (
            {"nodes": 4, "voters": 3},
            [{"at": 1.0, "action": "add-node", "node": "n2"}],
            "faults[0].node",
            "already in the configuration",
        ),
        (
            {"nodes": 4, "voters": 3},
            [
                {"at": 1.0, "action": "add-node", "node": "n4"},
                {"at": 2.0, "action": "remove-node", "node": "n4"},
                {"at": 3.0, "action": "add-node", "node": "n4"},
            ],
            "faults[2].node",
            "added twice",
        ),
        (
            {"nodes": 4, "voters": 3},
            [{"at": 1.0, "action": "remove-node", "node": "n4"}],
            "faults[0].node",
            "not in the configuration",
        ),
        (
            {"nodes": 2, "voters": 1},
            [{"at": 1.0, "action": "remove-node", "node": "n1"}],
            "faults[0].node",
            "last member",
        ),
        (
            {"nodes": 4, "voters": 3},
            [{"at": 1.0, "action": "add-node", "node": "leader"}],
            "faults[0].node",
            "member id",
        ),
        (
            {"nodes": 4, "voters": 3},
            [{"at": 1.0, "action": "add-node"}],
            "faults[0].node",
            "member id",
        ),
        (
            {"nodes": 4, "voters": 3},
            [{"at": 1.0, "action": "add-node", "node": "n4", "duration": 2.0}],
            "faults[0].duration",
            "cannot be undone",
        ),
        (
            {"nodes": 4, "voters": 3},
            [{"at": 1.0, "action": "crash", "node": "n1", "voter": True}],
            "faults[0].voter",
            "only add-node",
        ),
        (
            {"nodes": 4, "voters": 3},
            [{"at": 1.0, "action": "add-node", "node": "n4", "voter": "yes"}],
            "faults[0].voter",
            "true or false",
        ),
    ],
)
def test_bad_membership_schedules_name_their_field(
    cluster: dict[str, Any], faults: list[dict[str, Any]], field: str, words: str
) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({"cluster": cluster, "faults": faults})
    assert caught.value.field == field
    assert words in str(caught.value)


def test_a_removal_before_an_add_is_checked_in_time_order() -> None:
    """The list order does not matter: the add at 1 s comes before the removal at 2 s."""
    scenario = _scenario(
        [
            {"at": 2.0, "action": "remove-node", "node": "n4"},
            {"at": 1.0, "action": "add-node", "node": "n4"},
        ]
    )
    assert len(scenario.faults) == 2


def test_etcd_says_why_it_cannot_run_membership_actions() -> None:
    for action in ("add-node", "remove-node"):
        assert LOOPBACK_UNSUPPORTED[action] == NO_MEMBERSHIP
    assert "not runnable on etcd" in NO_MEMBERSHIP


# ---- the figures ----------------------------------------------------------------------------


def _rows(node: str, cpu_rate: float, sent_rate: float, jump_at: float, jump: float) -> list[Any]:
    """A node's cumulative counters every 100 ms: steady rates, and `jump` more egress per
    second from `jump_at` on."""
    rows = []
    for k in range(101):
        t = k / 10
        extra = max(0.0, t - jump_at) * jump
        rows.append(
            {"t": t, "node": node, "up": True, "cpu": cpu_rate * t, "sent": sent_rate * t + extra}
        )
    return rows


def test_catch_up_figures_from_an_observation_and_the_time_series() -> None:
    rows = _rows("n1", 0.2, 1e6, jump_at=5.0, jump=3e6)
    observation = CatchUpObservation(
        "n4",
        added=5.0,
        index=900,
        primary="n1",
        caught_up=5.5,
        applied=1200,
        snapshot_index=1000,
        sync_source="n3",
        received={"n3": 2_000_000, "n1": 500, "n2": 40},
        primary_sent=[5_000_000, 7_000_000],
        primary_cpu=[1.0, 1.25],
    )
    found = measure(observation, rows, end=10.0)
    assert found.seconds == pytest.approx(0.5)
    assert found.served_by == "n3"
    assert found.bytes_received == 2_000_540
    assert (found.entries, found.snapshot_index) == (200, 1000)
    assert found.primary_egress_before == pytest.approx(1e6)  # [4.5, 5.0] of the series
    assert found.primary_egress_during == pytest.approx(4e6)  # the readings at both ends
    assert found.extra_egress == pytest.approx(3e6)
    assert found.primary_cpu_before == pytest.approx(0.2)
    assert found.primary_cpu_during == pytest.approx(0.5)


def test_a_newcomer_that_never_caught_up_is_measured_to_the_end_from_the_series() -> None:
    rows = _rows("n1", 0.2, 1e6, jump_at=4.0, jump=1e6)
    observation = CatchUpObservation("n4", added=4.0, index=10, primary="n1")
    found = measure(observation, rows, end=8.0)
    assert not found.caught_up and found.served_by is None
    assert found.window == pytest.approx(4.0)
    assert found.primary_egress_during == pytest.approx(2e6)
    assert found.primary_egress_before == pytest.approx(1e6)


def test_a_primary_without_samples_has_no_rates() -> None:
    observation = CatchUpObservation("n4", 5.0, 10, "n1", caught_up=5.2)
    found = measure(observation, [], end=10.0)
    assert found.primary_egress_before is None and found.primary_cpu_during is None


# ---- the report -----------------------------------------------------------------------------


def _record(label: str, trial: int, seconds: float, source: str, scenario: str = "add-node") -> Any:
    rows = _rows("n1", 0.3, 1e6, jump_at=5.0, jump=1e6 if source == "n1" else 0.0)
    sent0 = int(1e6 * 5.0)
    sent1 = int(sent0 + (2e6 if source == "n1" else 1e6) * seconds)
    observation = CatchUpObservation(
        "n4",
        added=5.0,
        index=500,
        primary="n1",
        caught_up=5.0 + seconds,
        applied=600,
        snapshot_index=550,
        sync_source=None if label == "push" else source,
        received={source: 1_000_000 + trial, "n2": 30},
        promoted=5.0 + seconds,
        primary_sent=[sent0, sent1],
        primary_cpu=[1.5, 1.5 + 0.4 * seconds],
    )
    metadata = {"membership": {"changes": [], "catchups": [observation.to_dict()]}}
    spec = Spec(scenario=scenario, label=label, trial=trial, timeseries=rows, metadata=metadata)
    return make_record(spec)


def _etcd_record() -> Any:
    skipped = FaultRecord(5.0, "skipped", ("n4",), f"skipped ({NO_MEMBERSHIP}): add-node n4")
    return make_record(Spec(scenario="add-node", label="etcd", engine="real", faults=[skipped]))


def test_the_report_has_a_catch_up_section_per_label(tmp_path: Path) -> None:
    folders = []
    for trial, (push_s, pull_s) in enumerate([(0.30, 0.10), (0.34, 0.12), (0.32, 0.11)]):
        for label, seconds, source in (("push", push_s, "n1"), ("pull", pull_s, "n3")):
            record = _record(label, trial, seconds, source)
            folders.append(write_run(record, tmp_path / "results", f"add-{label}-t{trial}"))
    folders.append(write_run(_etcd_record(), tmp_path / "results", "add-etcd-t0"))
    report = generate_report(folders, tmp_path / "reports", "catch", "raftbench report results")
    text = (report.folder / "report.md").read_text()
    section = text[text.index("### Catch-up") :]
    rows = [line for line in section.splitlines() if line.startswith("| push") or "| pull" in line]
    push = next(r for r in rows if r.startswith("| push"))
    pull = next(r for r in rows if r.startswith("| pull"))
    assert "| 3/3 |" in push and "0.32 [" in push and "n1 (3/3)" in push
    assert "| 3/3 |" in pull and "0.11 [" in pull and "n3 (3/3)" in pull
    assert "| 50 [50, 50] |" in push  # entries after the snapshot: 600 - 550
    assert "etcd: not runnable on etcd" in section
    summary = json.loads((report.folder / "summary.json").read_text())
    by_label = {entry["label"]: entry for entry in summary["catchup"]}
    assert by_label["push"]["served_by"] == {"n1": 3}
    assert by_label["pull"]["seconds"]["value"] == pytest.approx(0.11)
    assert by_label["push"]["primary_extra_egress"]["value"] == pytest.approx(1e6, rel=1e-3)
    assert by_label["pull"]["primary_extra_egress"]["value"] == pytest.approx(0.0, abs=1e3)
    assert "not_runnable" in by_label["etcd"]
    lines = catchup_lines(report.groups)
    assert any(line.startswith("push n4: caught up 3/3") for line in lines)
    assert any(line.startswith("etcd: not runnable") for line in lines)
    assert "Catch-up" in (report.folder / "index.html").read_text()


def test_runs_without_membership_changes_get_no_catch_up_section(tmp_path: Path) -> None:
    folder = write_run(make_record(Spec()), tmp_path / "r", "plain")
    report = generate_report([folder], tmp_path / "reports", "plain", "raftbench report r")
    assert "Catch-up" not in (report.folder / "report.md").read_text()
    assert newcomer_stats(report.groups) == []


def test_catch_ups_reads_every_observation_of_a_run() -> None:
    record = _record("pull", 0, 0.2, "n3")
    (found,) = catch_ups(record.metadata, record.timeseries)
    assert found.node == "n4" and found.served_by == "n3"
