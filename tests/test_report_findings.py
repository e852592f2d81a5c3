"""What the report leads with (verdict, ratio chart, etcd comparison), the folded correctness
table, too few trials, rerunnable commands and the 80-column terminal summary."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import ViewportSize, sync_playwright
from report_fixtures import CPU, LATENCY, TRIALS, write_three_labels, write_two_trials
from rich.console import Console

from raftbench.cli import build_parser
from raftbench.commands.report import print_summary_table
from workloads.findings import RULE
from workloads.intervals import LOG_RATIO_METHOD, TOO_FEW
from workloads.provenance import PROGRAM, REPO_ROOT, regenerate, repo_command, rerunnable
from workloads.report import Report, generate_report


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Report:
    root = tmp_path_factory.mktemp("three")
    folders = write_three_labels(root / "results")
    return generate_report(folders, root / "reports", "three", "raftbench report results")


def markdown(report: Report) -> str:
    return (report.folder / "report.md").read_text()


def test_etcd_ratios_sit_next_to_pull_push(three: Report) -> None:
    assert [r.pair for r in three.ratios] == ["pull / push", "push / etcd", "pull / etcd"]
    expected = {
        ("pull", "push"): LATENCY["pull"] / LATENCY["push"],
        ("push", "etcd"): LATENCY["push"] / LATENCY["etcd"],
        ("pull", "etcd"): LATENCY["pull"] / LATENCY["etcd"],
    }
    for ratio in three.ratios:
        median = ratio.estimates["median"]
        assert median.value == pytest.approx(expected[(ratio.label, ratio.baseline)], rel=1e-6)
        assert median.method == LOG_RATIO_METHOD and median.n == TRIALS
        assert median.excludes(1.0)
        assert len(ratio.trial_ratios["median"]) == TRIALS
        cpu = ratio.estimates["cpu_per_write"].value
        assert cpu == pytest.approx(CPU[ratio.label] / CPU[ratio.baseline], rel=1e-6)
    text = markdown(three)
    pull_etcd = f"{LATENCY['pull'] / LATENCY['etcd']:.2f}x"
    assert f"| steady | pull / etcd | 3 / 3 | {pull_etcd} [" in text
    assert "pull slower at p50" in text


def test_summary_says_how_far_each_engine_is_from_etcd(three: Report) -> None:
    text = markdown(three)
    (sentence,) = [line for line in text.splitlines() if line.startswith("**Against etcd**")]
    assert re.search(r"push: median latency 1\.25x \[[\d.]+, [\d.]+\], throughput 1\.00x", sentence)
    pull_etcd = re.escape(f"{LATENCY['pull'] / LATENCY['etcd']:.2f}x")
    assert re.search(rf"pull: median latency {pull_etcd} .*leader CPU per write 3\.00x", sentence)
    assert "failover time" in sentence and sentence.count(".") >= 1


def test_the_report_leads_with_its_verdict_and_the_ratio_chart(three: Report) -> None:
    text = markdown(three)
    verdict = text.index("**Verdict**")
    assert verdict < text.index("](ratios.png)") < text.index("## Summary")
    lines = text[verdict : text.index("](ratios.png)")].splitlines()
    assert RULE in lines[0]
    assert lines[2].startswith("- **pull vs push:** slower at p50 in steady; slower at p99 in")
    assert lines[3].startswith("- **push vs etcd:** ") and lines[4].startswith("- **pull vs etcd:")
    assert (three.folder / "ratios.png").read_bytes().startswith(b"\x89PNG")
    page = (three.folder / "index.html").read_text()
    assert (
        page.index('<p id="verdict">')
        < page.index('<figure id="ratios">')
        < page.index("<h2>Summary</h2>")
    )


def test_a_clean_correctness_table_is_folded(three: Report) -> None:
    page = (three.folder / "index.html").read_text()
    assert "<details><summary>Every run: 9 runs, all linearizable" in page
    assert "<details open>" not in page


def test_two_trials_are_too_few(tmp_path: Path) -> None:
    report = generate_report(write_two_trials(tmp_path / "r"), tmp_path / "out", "few", "cmd")
    (ratio,) = report.ratios
    assert all(e.too_few for e in ratio.estimates.values() if e.value is not None)
    text = markdown(report)
    assert "| few | push | 2 |" in text and "100 (too few trials)" in text
    assert f"**pull vs push:** {TOO_FEW} for" in text
    assert "2 trials: too few trials" in text


def test_printed_commands_run_from_the_repository_root(tmp_path: Path) -> None:
    command = (
        "raftbench compare --scenario geo --trials 5 --results-dir results/reference "
        "--reports-dir /tmp/tmp.TfsE3pHobd"
    )
    assert rerunnable(command) == (
        f"{PROGRAM} compare --scenario geo --trials 5 --results-dir results/reference"
    )
    inside = f"raftbench report {REPO_ROOT}/results/reference --reports-dir={REPO_ROOT}/reports"
    assert rerunnable(inside) == f"{PROGRAM} report results/reference --reports-dir=reports"
    lines = regenerate([command, command], "raftbench report results/reference --name ref")
    assert lines == [rerunnable(command), f"{PROGRAM} report results/reference --name ref"]
    # a command run elsewhere is recorded relative to the root
    recorded = repo_command(
        ["raftbench", "compare", "--results-dir", "out", "--scenario", "quick"], cwd=REPO_ROOT / "x"
    )
    assert recorded == "raftbench compare --results-dir x/out --scenario quick"


def test_report_prints_the_commands_that_remake_it(three: Report) -> None:
    text = markdown(three)
    block = text.split("To make the runs and this report again")[1].split("```")[1]
    lines = block.strip().splitlines()
    assert lines[-1] == f"{PROGRAM} report results"
    assert f"{PROGRAM} run steady --protocols etcd" in lines
    assert all(line.startswith(PROGRAM) and "/tmp" not in line for line in lines)


def test_terminal_summary_fits_in_80_columns(three: Report) -> None:
    buffer = io.StringIO()
    print_summary_table(three.groups, three.ratios, Console(file=buffer, width=80))
    lines = buffer.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    for label in ("push", "pull", "etcd", "pull/push", "push/etcd", "pull/etcd"):
        (row,) = [line for line in lines if line.split()[:1] == [label]]
        assert row.count("±") == 5  # five measures, each with its interval, on one line
    assert [line.split()[0] for line in lines if line.split()[:1] == ["pull/push"]]
    assert "1.30x ±" in "\n".join(lines) and "*" in "\n".join(lines)
    # a long label is cut, not wrapped
    long = [replace(g, label="pull:a-very-long-sync-policy-name") for g in three.groups]
    buffer = io.StringIO()
    print_summary_table(long, three.ratios, Console(file=buffer, width=80))
    assert max(len(line) for line in buffer.getvalue().splitlines()) <= 80


def test_compare_runs_five_trials_by_default() -> None:
    args = build_parser("compare").parse_args(["compare", "--scenario", "quick"])
    assert args.trials == 5


# ---- the page in a real browser ------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}


def test_the_page_loads_cleanly_and_leads_with_its_findings(three: Report) -> None:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the HTML report is tested in Debian's chromium; install "
            "it with `apt-get install -y chromium` (scripts/check does so as root)"
        )
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto((three.folder / "index.html").as_uri(), wait_until="load")
            widths = page.evaluate(
                "Promise.all([...document.images].map(i => i.decode().then(() => i.naturalWidth)))"
            )
            boxes = {
                s: page.locator(s).bounding_box()
                for s in ("#verdict", "#verdict-lines", "#ratios img")
            }
        finally:
            browser.close()
    assert problems == []
    assert len(widths) == len(three.figures) and all(w > 0 for w in widths)
    for selector, box in boxes.items():
        assert box is not None, selector
        inside = box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"]
        assert inside and box["x"] + box["width"] <= VIEWPORT["width"], (selector, box)


def test_a_label_that_did_not_run_the_scenario_as_written_gets_no_ratio(tmp_path: Path) -> None:
    folders = write_three_labels(tmp_path / "results")
    skipped = (
        '{"t": 0.0, "kind": "skipped", "nodes": [], '
        '"detail": "skipped (not applied to etcd: loopback): partition n1 | n2,n3"}\n'
    )
    for folder in folders:
        if "-etcd-" in folder.name:
            with (folder / "faults.jsonl").open("a") as faults:
                faults.write(skipped)
    report = generate_report(folders, tmp_path / "reports", "skip", "raftbench report results")
    pairs = {(r.label, r.baseline) for r in report.ratios}
    assert pairs == {("pull", "push")}
    text = markdown(report)
    assert "etcd did not run this scenario as written" in text
    assert "partition n1 | n2,n3" in text
