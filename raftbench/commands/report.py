"""`raftbench report RESULTS_DIR...`: regenerate a comparison report from run folders alone.

Each RESULTS_DIR is a run folder or a folder holding run folders (a name that does not exist
as given is looked up under --results-dir; with no RESULTS_DIR, all of --results-dir is used).
Prints a summary table and where the report is. Exit status: 0 when every run is linearizable
and lost no acknowledged write, 1 when some run is not linearizable or lost writes, 2 when no
report could be made (or some verdict is unknown, or a folder was unreadable).

`print_summary_table(groups)` is shared with `raftbench compare`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.console import Console
from rich.table import Table

from raftbench.commands.argtypes import positive_float
from workloads.aggregate import METRIC_BY_KEY, GroupStats, RatioStats
from workloads.catchup_report import catchup_lines
from workloads.checker import LINEARIZABLE, NOT_LINEARIZABLE
from workloads.intervals import Estimate
from workloads.memory_report import memory_lines, wants_memory_section
from workloads.provenance import from_root, repo_command
from workloads.report import (
    ReportError,
    find_run_folders,
    format_number,
    generate_report,
)

EXIT_OK, EXIT_INCORRECT, EXIT_UNDECIDED = 0, 1, 2
DEFAULT_RESULTS = Path("results")
DEFAULT_REPORTS = Path("reports")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="regenerate a comparison report from stored results",
        description="Summarize run folders (re-checking every history) into "
        "REPORTS_DIR/NAME/: report.md, a self-contained index.html, PNG figures, summary.json.",
        epilog="Exit status: 0 all runs linearizable with no acknowledged write lost; 1 some "
        "run is not linearizable or lost writes; 2 no report, an unknown verdict or an "
        "unreadable folder.",
    )
    parser.add_argument(
        "results",
        nargs="*",
        type=Path,
        metavar="RESULTS_DIR",
        help="run folders, or folders holding run folders (default: --results-dir)",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=DEFAULT_RESULTS,
        help="where run folders are looked up (default: results/)",
    )
    parser.add_argument(
        "--reports-dir",
        type=Path,
        default=DEFAULT_REPORTS,
        help="where the report folder is written (default: reports/)",
    )
    parser.add_argument("--name", default=None, help="report folder name (default: time+scenarios)")
    parser.add_argument(
        "--budget",
        type=positive_float,
        default=10.0,
        metavar="SECONDS",
        help="linearizability checker time per run before 'unknown' (default: 10)",
    )
    parser.set_defaults(handler=run)


def resolve_inputs(paths: Sequence[Path], results_dir: Path) -> tuple[list[Path], list[Path]]:
    """(paths that exist, paths found nowhere) — a missing path is tried under results_dir."""
    found, missing = [], []
    for path in paths or [results_dir]:
        if path.exists():
            found.append(path)
        elif not path.is_absolute() and (results_dir / path).exists():
            found.append(results_dir / path)
        else:
            missing.append(path)
    return found, missing


def command_line(args: argparse.Namespace) -> str:
    """The command that regenerates this report, with every option spelled out and paths
    relative to the repository root (a folder looked up under --results-dir stays as given)."""
    inputs = [from_root(str(p.resolve())) if p.exists() else str(p) for p in args.results]
    words = ["raftbench", "report", *inputs]
    words += ["--results-dir", str(args.results_dir), "--reports-dir", str(args.reports_dir)]
    if args.name is not None:
        words += ["--name", args.name]
    if args.budget != 10.0:
        words += ["--budget", f"{args.budget:g}"]
    return repo_command(words)


def run(args: argparse.Namespace) -> int:
    console = Console()
    paths, missing = resolve_inputs(args.results, args.results_dir)
    for path in missing:
        console.print(f"[red]no such folder:[/red] {path}")
    folders = find_run_folders(paths)
    if not folders:
        where = ", ".join(str(p) for p in paths) or str(args.results_dir)
        console.print(f"[red]no run folders found in {where}[/red]")
        return EXIT_UNDECIDED
    try:
        report = generate_report(
            folders, args.reports_dir, args.name, command_line(args), args.budget, progress=True
        )
    except ReportError as error:
        console.print(f"[red]{error}[/red]")
        return EXIT_UNDECIDED
    print_summary_table(report.groups, report.ratios, console)
    for folder, reason in report.skipped:
        console.print(f"[yellow]skipped[/yellow] {folder}: {reason}")
    console.print(f"report: {report.folder / 'report.md'}")
    console.print(f"        {report.folder / 'index.html'}")
    verdicts = [run.summary.verdict for run in report.runs]
    lost = [run.summary.acked_lost for run in report.runs]
    if NOT_LINEARIZABLE in verdicts or any(n for n in lost):
        return EXIT_INCORRECT
    if missing or report.skipped or any(v != LINEARIZABLE for v in verdicts):
        return EXIT_UNDECIDED
    return EXIT_OK


def print_summary_table(
    groups: Sequence[GroupStats],
    ratios: Sequence[RatioStats] = (),
    console: Console | None = None,
) -> None:
    """A compact summary for an 80-column terminal: per scenario, one line per label and per
    ratio, each value with its 95% interval as `±x%`; failing groups in red and listed below.
    The full table (intervals as [low, high], method and n) is in report.md."""
    out = console or Console()
    for scenario in dict.fromkeys(g.scenario for g in groups):
        mine = [g for g in groups if g.scenario == scenario]
        counts = sorted({g.trials for g in mine})
        trials = "/".join(map(str, counts))
        table = Table(
            title=f"{scenario} ({trials} trial{'s' if counts != [1] else ''} per label)",
            title_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
        )
        table.add_column("label", no_wrap=True, overflow="ellipsis", max_width=LABEL_WIDTH)
        for header in SHORT.values():
            table.add_column(header, justify="right", no_wrap=True)
        for group in mine:
            cells = [compact(group.estimates[key], METRIC_BY_KEY[key].scale) for key in SHORT]
            name = group.label if group.correct else f"{group.label} !"
            table.add_row(name, *cells, style=None if group.correct else "bold red")
        for ratio in (r for r in ratios if r.scenario == scenario):
            cells = [compact_ratio(ratio.estimates[key]) for key in SHORT]
            table.add_row(f"{ratio.label}/{ratio.baseline}", *cells, style="cyan")
        out.print(table)
        ceilings = ceiling_table(mine)
        if ceilings is not None:
            out.print(ceilings)
        memory = memory_lines(mine) if wants_memory_section(mine) else []
        if memory:
            out.print("memory after warm-up (flat: growth < 1 MiB per 10 min, 95%):")
            for line in memory:
                out.print(f"  {line}", style="bold red" if "GROWS" in line else None)
        catchup = catchup_lines(mine)
        if catchup:
            out.print("catch-up (mean [95%] over trials; primary before -> during):")
            for line in catchup:
                out.print(f"  {line}")
        for group in mine:
            if not group.correct:
                out.print(f"[bold red]! {scenario} / {group.label}: {correctness(group)}[/]")
    out.print(LEGEND, style="dim")


def ceiling_table(groups: Sequence[GroupStats]) -> Table | None:
    """Measured acked writes/s beside each label's ceiling (bandwidth-capped scenarios only):
    means over trials, the bottleneck pipe of the first trial."""
    rows = []
    for group in groups:
        ceilings = [run.summary.ceiling for run in group.runs if run.summary.ceiling]
        if not ceilings:
            continue
        writes = float(np.mean([run.summary.write_throughput for run in group.runs]))
        predicted = [c.predicted for c in ceilings if c.predicted]
        observed = [c.observed for c in ceilings if c.observed]
        mean_predicted = float(np.mean(predicted)) if predicted else None
        rows.append(
            (
                group.label,
                format_number(writes),
                format_number(mean_predicted),
                f"{writes / mean_predicted:.0%}" if mean_predicted else "n/a",
                format_number(float(np.mean(observed)) if observed else None),
                f"{ceilings[0].predicted_pipe} x{ceilings[0].copies}",
            )
        )
    if not rows:
        return None
    table = Table(
        title="ceiling: writes/s the egress caps allow (workloads/ceiling.py)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("label", no_wrap=True, overflow="ellipsis", max_width=LABEL_WIDTH)
    for header in ("writes/s", "predicted", "of pred.", "observed", "bottleneck"):
        table.add_column(header, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


LABEL_WIDTH = 18
SHORT = {
    "median": "p50 ms",
    "p99": "p99 ms",
    "throughput": "ops/s",
    "failover": "failover s",
    "bytes_per_write": "leader B/w",
}
LEGEND = (
    "±: 95% interval, its wider side in % of the value. With 3+ trials: over trials "
    "(Student t; ratios: log-ratio t, delta method). 1 trial: bootstrap within it. No ±: "
    "too few trials (2), or nothing to resample. *: the ratio's interval excludes 1.0. Full "
    "table, methods and n: report.md."
)


def compact(estimate: Estimate, scale: float = 1.0) -> str:
    """`12.3 ±4%`: the value and the wider side of its interval in % of it."""
    if estimate.value is None:
        return "n/a"
    return format_number(estimate.value * scale) + _spread(estimate)


def compact_ratio(estimate: Estimate) -> str:
    """`1.13x ±3%*`, the star when the interval excludes 1.0."""
    if estimate.value is None:
        return "n/a"
    star = "*" if estimate.excludes(1.0) else ""
    return f"{estimate.value:.2f}x{_spread(estimate)}{star}"


def _spread(estimate: Estimate) -> str:
    value, low, high = estimate.value, estimate.low, estimate.high
    if value is None or low is None or high is None or value == 0:
        return ""
    wider = max(abs(high - value), abs(value - low)) / abs(value)
    return f" ±{wider:.0%}" if wider < 10 else " ±>999%"


def correctness(group: GroupStats) -> str:
    """ "ok", or what is wrong: verdicts other than linearizable, acknowledged writes lost."""
    problems = [f"{n} {v}" for v, n in _counts(group.verdicts).items() if v != LINEARIZABLE]
    if group.lost is None:
        problems.append("lost: cannot tell")
    elif group.lost:
        problems.append(f"{group.lost} acked writes LOST")
    return ", ".join(problems) if problems else "ok"


def _counts(values: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts
