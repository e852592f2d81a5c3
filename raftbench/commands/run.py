"""`raftbench run` and `raftbench compare`: scenarios against protocols, into results/reports."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cluster.ssh import HostError, HostPool
from protocols.errors import RaftbenchError
from raftbench.commands.argtypes import positive_float, positive_int
from raftbench.commands.hosts import add_hosts_arguments, check_hosts, open_hosts
from raftbench.commands.report import print_summary_table
from workloads.provenance import repo_command
from workloads.runner import ENGINES, TrialResult, command_line, compare_order, run_trial
from workloads.scenario import catalogue, load_scenario, parse_protocol_label
from workloads.summary import RunSummary


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    names = ", ".join(catalogue())
    run = subparsers.add_parser(
        "run",
        help="run one scenario against one protocol into results/",
        description=f"Run a scenario (catalogue: {names}) once and save its raw data.",
    )
    _common(run)
    run.add_argument(
        "--protocol", required=True, help="push, pull, pull:<sync policy> or etcd", type=_label
    )
    run.set_defaults(handler=handle_run)
    compare = subparsers.add_parser(
        "compare",
        help="run a scenario for several protocols, interleaved, then write the report",
        description=f"Run a scenario (catalogue: {names}) for each protocol N times, "
        "interleaved, and write a comparative report.",
    )
    _common(compare)
    compare.add_argument(
        "--trials",
        type=positive_int,
        default=5,
        help="trials per protocol (default: 5; intervals need at least 3)",
    )
    compare.add_argument(
        "--protocols",
        default="push,pull",
        type=_labels,
        help="comma-separated: push, pull, pull:<sync policy>, etcd (default: push,pull)",
    )
    compare.add_argument("--name", help="report folder name (default: derived)")
    compare.set_defaults(handler=handle_compare)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scenario", required=True, help="catalogue name or TOML file")
    parser.add_argument("--engine", choices=ENGINES, default="real")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--duration",
        type=positive_float,
        help="measured seconds, instead of the scenario's [run] duration (a shorter soak)",
    )
    parser.add_argument("--netns", action="store_true", help="real engine: one netns per node")
    add_hosts_arguments(parser, "real engine: run the nodes on these SSH hosts (hosts.toml)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument(
        "--compress",
        action="store_true",
        default=True,
        help="store ops, time series and final state in one compact run.npz.xz (the default)",
    )
    parser.add_argument(
        "--plain",
        dest="compress",
        action="store_false",
        help="store plain JSON-lines files (ops, time series, history.jsonl) instead",
    )
    parser.add_argument("--reports-dir", type=Path, default=Path("reports"))
    parser.add_argument(
        "--etcd-binary",
        type=Path,
        help="label etcd: the etcd to run (default: the [etcd] extra's, else etcd on PATH)",
    )


def _label(text: str) -> str:
    try:
        parse_protocol_label(text)
    except RaftbenchError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--protocols: ")) from None
    return text


def _labels(text: str) -> list[str]:
    labels = [_label(part.strip()) for part in text.split(",") if part.strip()]
    if not labels:
        raise argparse.ArgumentTypeError("give at least one protocol")
    if len(set(labels)) != len(labels):
        raise argparse.ArgumentTypeError("a protocol is listed twice")
    return labels


def _run_all(args: argparse.Namespace, labels: list[str], trials: int) -> list[TrialResult]:
    with open_hosts(args) as hosts:
        if hosts is not None:
            if args.netns:
                raise HostError("--hosts and --netns: give one of them")
            if args.engine != "real":
                raise HostError("--hosts runs on the real engine only (--engine real)")
            if "etcd" in labels:
                raise HostError("--hosts: the etcd label does not run on hosts (push, pull)")
        return _run_trials(args, labels, trials, hosts)


def _run_trials(
    args: argparse.Namespace, labels: list[str], trials: int, hosts: HostPool | None
) -> list[TrialResult]:
    console = Console()
    scenario = load_scenario(args.scenario)  # validated before anything starts
    if args.duration is not None:
        scenario = scenario.with_duration(args.duration)
    if hosts is not None:
        check_hosts(hosts, scenario.nodes)
    order = compare_order(labels, trials)
    command = repo_command(shlex.split(command_line()))
    results: list[TrialResult] = []
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"{scenario.name} on {args.engine}", total=len(order))
        for trial, label in order:
            progress.update(task, description=f"{scenario.name}: {label} trial {trial + 1}")
            result = run_trial(
                scenario,
                label,
                args.engine,
                args.seed + trial,
                trial,
                args.results_dir,
                command,
                netns=args.netns,
                compress=args.compress,
                progress=lambda text: progress.update(task, description=text),
                etcd_binary=args.etcd_binary,
                hosts=hosts,
            )
            results.append(result)
            s = result.summary
            diverged = f", members diverge on {s.member_divergence} keys" if _diverged(s) else ""
            ceiling = (
                f" (ceiling {s.ceiling.predicted:,.0f} writes/s)"
                if s.ceiling is not None and s.ceiling.predicted
                else ""
            )
            progress.console.print(
                f"  {label} t{trial}: {s.throughput:,.0f} ops/s{ceiling}, "
                f"history {s.verdict}, acked writes lost {s.acked_lost}{diverged}"
                f"  -> {result.folder}"
            )
            progress.advance(task)
    return results


def handle_run(args: argparse.Namespace) -> int:
    try:
        results = _run_all(args, [args.protocol], 1)
    except RaftbenchError as error:
        Console(stderr=True).print(f"[red]error:[/red] {error}")
        return 2
    summary = results[0].summary
    return 0 if _clean(summary) else 1


def handle_compare(args: argparse.Namespace) -> int:
    from workloads.report import generate_report  # noqa: PLC0415

    try:
        results = _run_all(args, args.protocols, args.trials)
        command = repo_command(shlex.split(command_line()))
        report = generate_report(
            [r.folder for r in results], args.reports_dir, args.name, command, progress=True
        )
    except RaftbenchError as error:
        Console(stderr=True).print(f"[red]error:[/red] {error}")
        return 2
    print_summary_table(report.groups, report.ratios)
    Console().print(f"report: {report.folder / 'index.html'} (and report.md)")
    return 0 if all(_clean(r.summary) for r in results) else 1


def _diverged(summary: RunSummary) -> bool:
    return bool(summary.member_divergence)


def _clean(summary: RunSummary) -> bool:
    """Linearizable, nothing acknowledged lost, no member whose own state differs."""
    return summary.verdict == "linearizable" and not summary.acked_lost and not _diverged(summary)
