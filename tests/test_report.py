"""Bootstrap intervals, grouping, and the report generated from small stored results."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
from run_builder import Spec, crash_spec, latency_of, make_record

from raftbench.cli import main
from workloads.bootstrap import (
    bootstrap,
    bootstrap_ratio,
    mean_of_rows,
    percentile_of_rows,
)
from workloads.intervals import Estimate
from workloads.report import (
    Report,
    ReportError,
    find_run_folders,
    format_estimate,
    format_number,
    format_ratio,
    generate_report,
    load_run,
)
from workloads.results import OpRecord, write_run
from workloads.summary import summarize

PNG = b"\x89PNG\r\n\x1a\n"


def bounds(estimate: Estimate) -> tuple[float, float, float]:
    """(low, value, high) of an estimate that must have an interval."""
    assert estimate.value is not None
    assert estimate.low is not None and estimate.high is not None
    return estimate.low, estimate.value, estimate.high


# ---- bootstrap ----------------------------------------------------------------------------------


def test_interval_contains_the_point_estimate_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(1)
    small = rng.normal(10.0, 2.0, size=20)
    large = rng.normal(10.0, 2.0, size=2000)
    narrow, wide = bootstrap(large, mean_of_rows, "x"), bootstrap(small, mean_of_rows, "x")
    for estimate, data in ((narrow, large), (wide, small)):
        low, value, high = bounds(estimate)
        assert value == pytest.approx(float(np.mean(data)))
        assert low < value < high
    (narrow_low, _, narrow_high), (wide_low, _, wide_high) = bounds(narrow), bounds(wide)
    assert narrow_high - narrow_low < (wide_high - wide_low) / 3


def test_percentile_interval_and_determinism() -> None:
    data = np.arange(1000, dtype=float)
    first = bootstrap(data, percentile_of_rows(99), "ops")
    again = bootstrap(data, percentile_of_rows(99), "ops")
    assert first == again  # seeded: a regenerated report prints the same intervals
    low, value, high = bounds(first)
    assert value == pytest.approx(float(np.percentile(data, 99)))
    assert low <= value <= high


def test_a_single_unit_has_no_interval() -> None:
    estimate = bootstrap([4.0], mean_of_rows, "trials")
    assert (estimate.value, estimate.low, estimate.high, estimate.n) == (4.0, None, None, 1)
    assert bootstrap([], mean_of_rows, "trials").value is None


def test_ratio_of_means() -> None:
    rng = np.random.default_rng(2)
    top, bottom = rng.normal(30.0, 3.0, 200), rng.normal(10.0, 1.0, 200)
    ratio = bootstrap_ratio(top, bottom, mean_of_rows, "trials")
    low, value, high = bounds(ratio)
    assert value == pytest.approx(float(np.mean(top) / np.mean(bottom)))
    assert 2.7 < low < value < high < 3.3
    exact = bootstrap_ratio([6.0, 6.0, 6.0], [2.0, 2.0], mean_of_rows, "trials")
    assert (exact.value, exact.low, exact.high) == (3.0, 3.0, 3.0)


# ---- the report ---------------------------------------------------------------------------------


def slower(i: int) -> float:
    return latency_of(i) * 1.2


RUNS = {
    "crash-push-t0": crash_spec(trial=0),
    "crash-push-t1": crash_spec(trial=1, latency=slower),
    "crash-pull-t0": crash_spec(label="pull", step=0.02, count=600),
    "quick-push-t0": Spec(
        scenario="quick",
        count=300,
        extra_ops=[
            OpRecord(200, "write", "x", "new", 2.0, 2.1, "ok"),
            OpRecord(201, "read", "x", None, 3.0, 3.1, "ok"),  # stale: not linearizable
        ],
    ),
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("results")
    for name, spec in RUNS.items():
        write_run(make_record(spec), results, name)
    return results


@pytest.fixture(scope="module")
def report(stored: Path) -> Report:
    reports = stored.parent / "reports"
    return generate_report(find_run_folders([stored]), reports, "test", "raftbench report results")


def test_every_file_and_figure_exists(report: Report) -> None:
    for name in ("report.md", "index.html", "summary.json"):
        assert (report.folder / name).is_file()
    expected = {
        f"leader-crash-{kind}.png"
        for kind in (
            "latency-ecdf",
            "throughput",
            "unavailability",
            "leader-cost",
            "links",
            "commit-lag",
            "failover-timeline",
        )
    }
    # the quick run has no faults, links, node table or time series: two figures only
    expected |= {"quick-latency-ecdf.png", "quick-throughput.png", "ratios.png"}
    assert set(report.figures) == expected
    for file in report.figures:
        assert (report.folder / file).read_bytes().startswith(PNG)


def test_markdown_embeds_every_figure_by_relative_path(report: Report) -> None:
    markdown = (report.folder / "report.md").read_text()
    for file in report.figures:
        assert f"]({file})" in markdown


def test_html_is_self_contained(report: Report) -> None:
    page = (report.folder / "index.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(report.figures)
    embedded = {base64.b64decode(data) for data in images}
    assert embedded == {(report.folder / file).read_bytes() for file in report.figures}
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<(script|link|iframe)\b", page)
    assert not re.search(r'src="(?!data:)', page)


def test_a_non_linearizable_run_comes_first(report: Report) -> None:
    lines = (report.folder / "report.md").read_text().splitlines()
    body = [line for line in lines[1:] if line.strip()]
    assert body[0].startswith("> **⚠ NOT LINEARIZABLE")
    assert "quick-push-t0" in body[0]
    row = next(line for line in lines if line.startswith("| **quick-push-t0**"))
    assert "**not-linearizable**" in row
    page = (report.folder / "index.html").read_text()
    assert page.index('class="alert"') < page.index("<h2>")
    assert '<tr class="bad"><td>quick-push-t0</td>' in page
    assert "<details open><summary>Every run: 4 runs, 1 failing" in page  # not folded


def summary_row(report: Report, scenario: str, label: str) -> list[str]:
    lines = (report.folder / "report.md").read_text().splitlines()
    start = lines.index(next(line for line in lines if line.startswith("| scenario | label |")))
    for line in lines[start + 2 :]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:2] == [scenario, label]:
            return cells
    raise AssertionError(f"no summary row for {scenario}/{label}")


def per_trial(name: str) -> dict[str, float]:
    summary = summarize(make_record(RUNS[name]))
    return {
        "p50": summary.latency["all"].p50,
        "p99": summary.latency["all"].p99,
        "throughput": summary.throughput,
        "failover": summary.failover or 0.0,
        "bytes": summary.leader_egress_per_write or 0.0,
    }


def test_summary_table_numbers_match_the_data(report: Report) -> None:
    t0, t1 = per_trial("crash-push-t0"), per_trial("crash-push-t1")
    push = summary_row(report, "leader-crash", "push")
    # two trials: the mean of the per-trial values (latency in ms), too few for an interval
    few = " (too few trials)"
    assert push[2] == "2"
    assert push[5] == format_number((t0["p50"] + t1["p50"]) / 2 * 1e3) + few
    assert push[6] == format_number((t0["p99"] + t1["p99"]) / 2 * 1e3) + few
    assert push[7] == format_number((t0["throughput"] + t1["throughput"]) / 2) + few
    assert push[8] == format_number(1.5) + few
    assert push[9] == format_number((t0["bytes"] + t1["bytes"]) / 2) + few
    assert push[11] == "2 trials: too few trials"
    pull, mine = summary_row(report, "leader-crash", "pull"), per_trial("crash-pull-t0")
    # one trial: a bootstrap within it where it has units (operations, 1-s windows)
    assert pull[5].startswith(format_number(mine["p50"] * 1e3) + " [")
    assert pull[7].startswith(format_number(mine["throughput"]) + " [")
    assert pull[9] == format_number(mine["bytes"]) + few  # no finer unit for bytes
    assert "bootstrap" in pull[11] and "ops" in pull[11] and "1-s windows" in pull[11]


def test_summary_json_holds_the_unrounded_numbers(report: Report) -> None:
    data = json.loads((report.folder / "summary.json").read_text())
    groups = {(g["scenario"], g["label"]): g for g in data["groups"]}
    push = groups[("leader-crash", "push")]["estimates"]
    t0, t1 = per_trial("crash-push-t0"), per_trial("crash-push-t1")
    assert push["throughput"]["value"] == pytest.approx((t0["throughput"] + t1["throughput"]) / 2)
    assert push["throughput"]["basis"] == "2 trials"
    for estimate in push.values():
        if estimate["low"] is not None:
            assert estimate["low"] <= estimate["value"] <= estimate["high"]
    assert len(data["runs"]) == len(RUNS)
    assert data["command"] == "raftbench report results"


def test_pull_push_ratio(report: Report) -> None:
    (ratio,) = report.ratios
    assert (ratio.scenario, ratio.label, ratio.baseline) == ("leader-crash", "pull", "push")
    t0, t1 = per_trial("crash-push-t0"), per_trial("crash-push-t1")
    pull = per_trial("crash-pull-t0")
    throughput = ratio.estimates["throughput"]
    assert throughput.value == pytest.approx(
        pull["throughput"] / ((t0["throughput"] + t1["throughput"]) / 2)
    )
    assert throughput.too_few and not throughput.has_interval  # 1 and 2 trials
    assert ratio.trial_ratios["throughput"] == [
        pytest.approx(pull["throughput"] / t0["throughput"])
    ]
    markdown = (report.folder / "report.md").read_text()
    median = format_ratio(ratio.estimates["median"])
    assert median.endswith("x (too few trials)")
    assert f"| leader-crash | pull / push | 1 / 2 | {median}" in markdown


def test_report_states_command_machine_and_limits(report: Report) -> None:
    markdown = (report.folder / "report.md").read_text()
    assert "raftbench report results" in markdown
    assert "raftbench run leader-crash --protocols push" in markdown
    assert "2 cores, Test CPU, 4.0 GiB memory" in markdown
    assert "virtual time in a simulator, no CPU/disk contention modelled" in markdown
    assert "fsync policy: always" in markdown
    assert "calibrated ceiling 400 ops/s" in markdown and "25% of the machine's CPU" in markdown
    assert "git abc1234" in markdown
    for name in RUNS:
        assert re.search(rf"\[{name}\]\([^)]*{name}/\)", markdown)


def test_format_estimate() -> None:
    assert format_estimate(bootstrap([2.0], mean_of_rows, "t"), 1e3) == "2000"
    assert format_number(None) == "n/a"
    assert format_number(0.00123) == "0.00123"
    assert format_number(12.345) == "12.3"


# ---- folders and the command --------------------------------------------------------------------


def test_find_run_folders(stored: Path) -> None:
    assert len(find_run_folders([stored])) == len(RUNS)
    one = stored / "crash-pull-t0"
    assert find_run_folders([one, stored / "crash-pull-t0"]) == [one.resolve()]


def test_an_unreadable_folder_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad-run"
    bad.mkdir()
    (bad / "metadata.json").write_text("{not json")
    (bad / "ops.jsonl").write_text("")
    with pytest.raises(ReportError, match="bad-run"):
        load_run(bad, budget=1.0)
    with pytest.raises(ReportError, match="no readable run folder"):
        generate_report([bad], tmp_path / "reports", "x", "cmd")


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wide terminal, so that rich does not fold table cells."""
    monkeypatch.setenv("COLUMNS", "200")


@pytest.mark.usefixtures("wide")
def test_command_regenerates_a_clean_report(
    stored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "report",
            "crash-push-t0",  # looked up under --results-dir
            "--results-dir",
            str(stored),
            "--reports-dir",
            str(tmp_path),
            "--name",
            "clean",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    markdown = (tmp_path / "clean" / "report.md").read_text()
    assert "**Correctness: all 1 runs linearizable; no acknowledged write lost.**" in markdown
    assert "raftbench report crash-push-t0 --results-dir" in markdown
    assert "leader-crash" in out and "p50 ms" in out
    assert str(tmp_path / "clean" / "report.md") in out


@pytest.mark.usefixtures("wide")
def test_command_exit_status_flags_a_non_linearizable_run(
    stored: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["report", str(stored / "quick-push-t0"), "--reports-dir", str(tmp_path)])
    assert code == 1
    assert "not-linearizable" in capsys.readouterr().out


def test_command_with_nothing_to_report(tmp_path: Path) -> None:
    assert main(["report", str(tmp_path / "missing"), "--reports-dir", str(tmp_path)]) == 2


def test_a_real_run_near_the_load_generators_ceiling(tmp_path: Path) -> None:
    driver = {"cpu_share": 0.6, "ceiling": 110.0}  # the run does 100 ops/s: 91% of it
    spec = Spec(engine="real", metadata={"driver": driver})
    folder = write_run(make_record(spec), tmp_path, "near")
    report = generate_report([folder], tmp_path / "reports", "near", "cmd")
    markdown = (report.folder / "report.md").read_text()
    assert "| leader-crash | push | 100 | 110 | 91% | 60% |" in markdown
    assert "throughput is at 91% of the load generator's ceiling" in markdown
    assert "all 3 nodes and the load generator share one host with 2 cores" in markdown
    assert "virtual time" not in markdown
