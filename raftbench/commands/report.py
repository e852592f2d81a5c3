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
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from raftbench.commands.argtypes import positive_float
from workloads.aggregate import METRIC_BY_KEY, GroupStats, RatioStats
from workloads.checker import LINEARIZABLE, NOT_LINEARIZABLE
from workloads.report import (
    ReportError,
    find_run_folders,
    format_estimate,
    format_ratio,
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
    """The command that regenerates this report, with every option spelled out."""
    words = ["raftbench", "report", *(str(p) for p in args.results)]
    words += ["--results-dir", str(args.results_dir), "--reports-dir", str(args.reports_dir)]
    if args.name is not None:
        words += ["--name", args.name]
    if args.budget != 10.0:
        words += ["--budget", f"{args.budget:g}"]
    return shlex.join(words)


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
    """The report's summary (and pull/push ratios) in the terminal; failing groups in red.

    Each cell shows the point estimate with its 95% bootstrap interval on the line below.
    """
    out = console or Console()
    table = Table(title="Summary (95% bootstrap CI below each value)", show_lines=True)
    for header in ("scenario", "label", "n", "correct", *SHORT.values(), "CI over"):
        table.add_column(header, overflow="fold")
    for group in groups:
        cells = [group.scenario, group.label, str(group.trials), correctness(group)]
        for key in SHORT:
            metric = METRIC_BY_KEY[key]
            cells.append(_stacked(format_estimate(group.estimates[key], metric.scale)))
        cells.append(f"{group.trials} trials" if group.trials > 1 else "ops, 1-s\nwindows")
        table.add_row(*cells, style=None if group.correct else "bold red")
    out.print(table)
    if ratios:
        ratio_table = Table(title="pull / push (95% bootstrap CI below)", show_lines=True)
        for header in ("scenario", "ratio", *SHORT.values()):
            ratio_table.add_column(header, overflow="fold")
        for ratio in ratios:
            ratio_table.add_row(
                ratio.scenario,
                f"{ratio.label} / {ratio.baseline}",
                *(_stacked(format_ratio(ratio.estimates[key])) for key in SHORT),
            )
        out.print(ratio_table)


SHORT = {
    "median": "p50 ms",
    "p99": "p99 ms",
    "throughput": "ops/s",
    "failover": "failover s",
    "bytes_per_write": "leader B/write",
}


def correctness(group: GroupStats) -> str:
    """ "ok", or what is wrong: verdicts other than linearizable, acknowledged writes lost."""
    problems = [f"{n} {v}" for v, n in _counts(group.verdicts).items() if v != LINEARIZABLE]
    if group.lost is None:
        problems.append("lost: cannot tell")
    elif group.lost:
        problems.append(f"{group.lost} acked writes LOST")
    return "\n".join(problems) if problems else "ok"


def _counts(values: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _stacked(text: str) -> str:
    """`1.2 [1.0, 1.4]` as two short lines: `1.2` over `[1.0,1.4]`."""
    value, _, interval = text.partition(" [")
    return f"{value}\n[{interval.replace(', ', ',')}" if interval else value
