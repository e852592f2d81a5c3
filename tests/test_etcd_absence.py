"""A report says why etcd, measured elsewhere in it, has no runs of a scenario."""

from __future__ import annotations

from pathlib import Path

from run_builder import Spec, make_record

from workloads.etcd_absence import etcd_absence_note, etcd_reasons
from workloads.report import find_run_folders, generate_report
from workloads.results import write_run
from workloads.scenario import load_scenario


def raw(name: str) -> dict[str, object]:
    return dict(load_scenario(name).raw)


def test_etcd_on_loopback_cannot_take_partitions_emulated_links_or_egress_caps() -> None:
    assert any(
        "partition faults" in r and "loopback" in r for r in etcd_reasons(raw("partition-leader"))
    )
    assert any(r.startswith("topology:") for r in etcd_reasons(raw("geo")))
    assert any(r.startswith("slow-link faults:") for r in etcd_reasons(raw("slow-follower")))
    assert any(
        r.startswith("network.egress_bytes_per_s:") for r in etcd_reasons(raw("leader-uplink"))
    )


def test_a_scenario_etcd_takes_whole_gives_no_reason() -> None:
    assert etcd_reasons(raw("quick")) == []
    assert etcd_reasons(raw("leader-crash")) == []


def test_an_unreadable_or_missing_scenario_gives_no_reason() -> None:
    assert etcd_reasons(None) == []
    assert etcd_reasons({"cluster": {"nodes": "three"}}) == []


def test_a_note_only_where_the_report_has_etcd_elsewhere() -> None:
    note = etcd_absence_note(["push", "pull", "etcd"], ["push"], raw("partition-leader"))
    assert note is not None
    assert note.startswith("etcd did not run this scenario: on loopback")
    assert "partition faults" in note
    assert etcd_absence_note(["push", "etcd"], ["push", "etcd"], raw("geo")) is None
    assert etcd_absence_note(["push", "pull"], ["push"], raw("geo")) is None
    assert (
        etcd_absence_note(["push", "etcd"], ["push"], raw("quick"))
        == "etcd has no runs of this scenario in this report."
    )


def test_the_report_says_why_etcd_is_missing_from_a_scenario(tmp_path: Path) -> None:
    results = tmp_path / "results"
    specs = {
        "quick-push": Spec(scenario="quick", label="push"),
        "quick-etcd": Spec(scenario="quick", label="etcd"),
        "partition-push": Spec(
            scenario="partition-leader",
            label="push",
            metadata={"scenario_raw": raw("partition-leader")},
        ),
    }
    for name, spec in specs.items():
        write_run(make_record(spec), results, name)
    generate_report(find_run_folders([results]), tmp_path / "reports", "t", "raftbench report")
    text = (tmp_path / "reports" / "t" / "report.md").read_text()
    partition = text[text.index("## Scenario partition-leader") :]
    partition = partition[: partition.index("\n## ", 1)] if "\n## " in partition[1:] else partition
    assert "etcd did not run this scenario" in partition
    assert "partition faults" in partition
    quick = text[text.index("## Scenario quick") :]
    quick = quick[: quick.index("\n## ", 1)] if "\n## " in quick[1:] else quick
    assert "did not run this scenario" not in quick
    assert "no runs of this scenario" not in quick
