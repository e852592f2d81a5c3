"""Memory over time: the flat/grows verdict, the report's section, the soak scenario's settings
(duration override, etcd compaction) and the simulator's log-size samples."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from run_builder import Spec, make_record

from cluster.etcd import EtcdCluster, EtcdSpec
from workloads.memory_report import wants_memory_section
from workloads.memory_series import (
    FLAT,
    GROWS,
    MIB,
    TOLERANCE_MIB,
    UNCLEAR,
    block_slope,
    log_held,
    memory_trend,
    slope_interval,
    verdict,
)
from workloads.report import generate_report
from workloads.results import RunRecord, write_run
from workloads.scenario import ScenarioError, load_scenario, parse_scenario

NODES = ("n1", "n2", "n3")
THRESHOLD = 50  # the synthetic runs' compaction threshold (entries)


def _rows(growth_mib_per_s: float) -> list[dict[str, Any]]:
    """Samples every 0.1 s over 0-12 s: RSS 40 MiB plus `growth` per second and page-sized
    wobble; the log fills to THRESHOLD entries and is compacted, over and over."""
    rows = []
    for k in range(121):
        t = round(k * 0.1, 10)
        for i, node in enumerate(NODES):
            rss = 40 * MIB + growth_mib_per_s * MIB * t + 4096 * ((k * 7 + i) % 3)
            rows.append(
                {
                    "t": t,
                    "node": node,
                    "up": True,
                    "rss": int(rss),
                    "log_entries": (5 * k + i) % THRESHOLD,
                    "snapshot_index": THRESHOLD * ((5 * k + i) // THRESHOLD),
                }
            )
    return rows


def _record(label: str, growth: float, compaction: bool = True, scenario: str = "soak") -> Any:
    raw: dict[str, Any] = {"description": "synthetic memory run"}
    if compaction:
        raw["cluster"] = {"snapshot_entries": THRESHOLD}
    spec = Spec(
        scenario=scenario,
        label=label,
        engine="real",
        timeseries=_rows(growth),
        metadata={"scenario_raw": raw},
    )
    return make_record(spec)


# ---- the verdict ----------------------------------------------------------------------------


def test_a_flat_node_is_flat_and_a_growing_one_grows_with_the_rate_it_has() -> None:
    flat = memory_trend(_record("push", 0.0), "n1")
    grows = memory_trend(_record("pull", 0.01), "n2")  # 6 MiB per 10 minutes
    assert flat is not None and grows is not None
    assert flat.verdict == FLAT
    assert flat.high is not None and flat.high < TOLERANCE_MIB
    assert grows.verdict == GROWS
    assert grows.low is not None and grows.high is not None
    assert grows.low <= 6.0 <= grows.high
    assert grows.span == (3.0, 11.0)  # the last 80% of the window [1, 11]


def test_the_interval_allows_for_memory_samples_that_are_not_independent() -> None:
    """AR(1) noise around a known slope: the slope through block means covers it about as
    often as it claims; a line through the raw samples, far less often."""
    rng = np.random.default_rng(5)
    t = np.arange(2000, dtype=float) * 0.1
    true_slope = 0.02
    blocks_covered = raw_covered = 0
    runs = 200
    for _ in range(runs):
        noise = np.zeros(t.size)
        for i in range(1, t.size):
            noise[i] = 0.95 * noise[i - 1] + rng.normal()
        v = true_slope * t + noise
        slope, low, high = block_slope(t, v, (0.0, float(t[-1])))
        assert slope is not None and low is not None and high is not None
        blocks_covered += low <= true_slope <= high
        _, raw_low, raw_high = slope_interval(t, v)
        assert raw_low is not None and raw_high is not None
        raw_covered += raw_low <= true_slope <= raw_high
    assert blocks_covered / runs >= 0.88
    assert raw_covered / runs < 0.6


def test_memory_that_never_moves_is_flat() -> None:
    """RSS is counted in pages, so a quiet node can read the same value for minutes: an exact
    fit (slope 0, no spread) is flat, not undecided."""
    record = _record("push", 0.0)
    for row in record.timeseries:
        row["rss"] = 40 * MIB
    trend = memory_trend(record, "n1")
    assert trend is not None
    assert (trend.growth, trend.low, trend.high) == (0.0, 0.0, 0.0)
    assert trend.verdict == FLAT
    x = np.arange(5, dtype=float)
    assert slope_interval(x, np.full(5, 3.0)) == (0.0, 0.0, 0.0)
    assert slope_interval(x[:2], np.full(2, 3.0)) == (0.0, None, None)  # no interval from 2


def test_verdicts_need_the_whole_interval_on_one_side_of_the_tolerance() -> None:
    assert verdict(-0.5, 0.5) == FLAT
    assert verdict(TOLERANCE_MIB + 0.1, 9.0) == GROWS
    assert verdict(-0.5, TOLERANCE_MIB + 0.1) == UNCLEAR
    assert verdict(None, None) == UNCLEAR


def test_log_held_counts_entries_after_warm_up_and_snapshots_over_the_run() -> None:
    held = log_held(_record("push", 0.0), "n1")
    assert held is not None
    assert held.max_entries < THRESHOLD
    assert held.snapshots == 12  # 5 entries per sample, 121 samples: 605 entries, 12 snapshots
    assert held.last_snapshot == 12 * THRESHOLD


def test_a_run_without_rss_has_no_trend_but_keeps_its_log_counts() -> None:
    record = _record("push", 0.0)
    stripped = [{k: v for k, v in row.items() if k != "rss"} for row in record.timeseries]
    bare = RunRecord(
        record.metadata,
        record.ops,
        stripped,
        record.links,
        record.regions,
        record.nodes,
        record.faults,
    )
    assert memory_trend(bare, "n1") is None
    assert log_held(bare, "n1") is not None


# ---- the report -----------------------------------------------------------------------------


def test_the_report_shows_rss_per_label_and_marks_the_label_that_grows(tmp_path: Path) -> None:
    folders = [
        write_run(_record("push", 0.0), tmp_path / "results", "soak-push-t0"),
        write_run(_record("pull", 0.01), tmp_path / "results", "soak-pull-t0"),
    ]
    report = generate_report(folders, tmp_path / "reports", "mem", "raftbench report results")
    text = (report.folder / "report.md").read_text()
    section = text[text.index("### Memory over time") :]
    assert "push: flat" in section and "pull: GROWS" in section
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    pull_rows = [r for r in rows if "pull" in r]
    push_rows = [r for r in rows if "push" in r]
    assert len(pull_rows) == len(push_rows) == 3
    assert all(r.startswith("| **pull**") and "GROWS" in r for r in pull_rows)
    assert all("**" not in r and "| flat |" in r for r in push_rows)
    for file in ("soak-rss.png", "soak-log-held.png"):
        assert (report.folder / file).is_file() and file in report.figures
    summary = json.loads((report.folder / "summary.json").read_text())
    verdicts = {entry["label"]: entry["verdict"] for entry in summary["memory"]}
    assert verdicts == {"push": FLAT, "pull": GROWS}
    assert "Memory over time" in (report.folder / "index.html").read_text()


def test_short_runs_without_compaction_get_no_memory_section(tmp_path: Path) -> None:
    folder = write_run(
        _record("push", 0.01, compaction=False, scenario="short"), tmp_path / "r", "short"
    )
    report = generate_report([folder], tmp_path / "reports", "short", "raftbench report r")
    assert "Memory over time" not in (report.folder / "report.md").read_text()
    assert not wants_memory_section(report.groups)


# ---- the soak scenario's settings -----------------------------------------------------------


def test_soak_compacts_and_its_duration_can_be_shortened() -> None:
    soak = load_scenario("soak")
    assert soak.snapshot_entries > 0 and soak.timing.duration == 600.0
    assert soak.etcd.snapshot_count > 0 and soak.etcd.retention
    short = soak.with_duration(4.0)
    assert short.timing.duration == 4.0 and short.raw["run"]["duration"] == 4.0
    assert soak.raw["run"]["duration"] == 600.0  # the original is left alone
    assert short.timing.warmup == soak.timing.warmup


def test_a_shortened_run_must_still_hold_its_faults() -> None:
    raw = {
        "cluster": {"nodes": 3},
        "run": {"duration": 10.0},
        "faults": [{"at": 6.0, "action": "crash", "node": "n1"}],
    }
    scenario = parse_scenario(raw)
    with pytest.raises(ScenarioError, match="--duration"):
        scenario.with_duration(5.0)
    with pytest.raises(ScenarioError, match="--duration"):
        scenario.with_duration(0.0)


@pytest.mark.parametrize(
    ("etcd", "field"),
    [
        ({"compaction_retention": "soon"}, "etcd.compaction_retention"),
        ({"compaction_retention": 60}, "etcd.compaction_retention"),
        ({"snapshot_count": -1}, "etcd.snapshot_count"),
        ({"snapshot_cuont": 5}, "etcd.snapshot_cuont"),
    ],
)
def test_bad_etcd_settings_name_the_field(etcd: dict[str, Any], field: str) -> None:
    with pytest.raises(ScenarioError) as caught:
        parse_scenario({"cluster": {"nodes": 3}, "etcd": etcd})
    assert caught.value.field == field


def test_etcd_members_get_the_compaction_the_scenario_asks_for(tmp_path: Path) -> None:
    binary = tmp_path / "etcd"
    binary.write_text("#!/bin/sh\necho 'etcd Version: 3.5.1'\n")
    binary.chmod(0o755)
    spec = EtcdSpec(3, 1.0, 0.1, binary, snapshot_count=2000, compaction_retention="1m")
    command = EtcdCluster(tmp_path, spec).command("n1")
    flags = dict(itertools.pairwise(command))
    assert flags["--snapshot-count"] == "2000"
    assert flags["--auto-compaction-mode"] == "periodic"
    assert flags["--auto-compaction-retention"] == "1m"
    described = EtcdCluster(tmp_path, spec).describe()
    assert described["snapshot_count"] == 2000
    plain = EtcdCluster(tmp_path, EtcdSpec(3, 1.0, 0.1, binary)).command("n1")
    assert "--snapshot-count" not in plain and "--auto-compaction-mode" not in plain


# ---- the simulator --------------------------------------------------------------------------


def test_the_simulator_samples_each_nodes_log_and_compaction_bounds_it() -> None:
    from workloads.sim_driver import run_sim  # noqa: PLC0415

    threshold = 200
    raw = dict(load_scenario("soak").raw)
    raw["run"] = {**raw["run"], "warmup": 5.0}  # not the real soak's five minutes
    soak = dataclasses.replace(parse_scenario(raw).with_duration(3.0), snapshot_entries=200)
    record = run_sim(soak, "push", None, 1, 0, "push", "test")
    commit = max(int(row["commit"]) for row in record.timeseries if row.get("up"))
    assert commit > 5 * threshold  # without compaction the log would hold all of them
    for node in ("n1", "n2", "n3"):
        mine = [row for row in record.timeseries if row["node"] == node and row.get("up")]
        assert mine and all("log_entries" in row and "log_bytes" in row for row in mine)
        assert max(row["snapshot_index"] for row in mine) > 0
        assert max(row["log_entries"] for row in mine) <= 2 * threshold
