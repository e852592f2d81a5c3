"""A comparison report regenerated from run folders alone: `reports/<name>/`.

`build_report` reads every run folder (`workloads.results.read_run`), summarizes it again
(`workloads.summary`), groups the runs by (scenario, label) with 95% intervals and ratios
(`workloads.aggregate`, `workloads.intervals`), draws the figures (`workloads.plots`) and
writes:

- `report.md`: the report, figures embedded by relative path;
- `index.html`: the same content in one self-contained page (figures as data URIs);
- one PNG per figure and scenario, and `ratios.png` (every ratio with its interval);
- `summary.json`: every number of the tables, unrounded.

Correctness comes first: a run whose history is not linearizable, or that lost acknowledged
writes, is the first thing in the report. Then what it found (`workloads.findings`): the
verdict per pair of labels and the ratio chart, before any table. The per-run correctness
table is folded when every run is clean. The report also says where the numbers come from:
the commands that make it again (`workloads.provenance`), the machine, its limits, versions,
and links to the raw folders.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import Progress

from protocols.errors import RaftbenchError
from workloads.aggregate import (
    METRICS,
    GroupStats,
    RatioStats,
    RunData,
    aggregate,
)
from workloads.bandwidth_report import bandwidth_section
from workloads.catchup_report import catchup_section, catchup_summary
from workloads.checker import LINEARIZABLE, NOT_LINEARIZABLE
from workloads.etcd_absence import etcd_absence_note
from workloads.failover import STAGES as FAILOVER_STAGES
from workloads.failover import mean_stages, per_trial_rate_back, timelines
from workloads.failover_plot import draw_failover_timeline
from workloads.findings import RULE, etcd_sentence, verdict, verdict_lines
from workloads.intervals import (
    BOOTSTRAP_METHOD,
    LOG_RATIO_METHOD,
    MIN_TRIALS,
    TOO_FEW,
    Estimate,
    mean_interval,
    ratio_interval,
)
from workloads.memory_report import memory_section, memory_summary
from workloads.provenance import regenerate
from workloads.report_doc import (
    Alert,
    Bullets,
    Code,
    Details,
    Document,
    Figure,
    Heading,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from workloads.results import read_run, versions
from workloads.summary import RunSummary, summarize

T = TypeVar("T")
CEILING_WARNING = 0.8  # throughput at this fraction of the load generator's ceiling is flagged


class ReportError(RaftbenchError, ValueError):
    """No report can be made (no readable run folder, a bad name)."""


@dataclass(slots=True)
class Report:
    folder: Path
    groups: list[GroupStats]
    ratios: list[RatioStats]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    forest: str | None = None  # the figure of every ratio with its interval

    @property
    def runs(self) -> list[RunData]:
        return [run for group in self.groups for run in group.runs]


def is_run_folder(path: Path) -> bool:
    names = ("run.npz.xz", "ops.jsonl", "ops.jsonl.gz")  # compact, plain, old gzipped
    ops = any((path / name).is_file() for name in names)
    return (path / "metadata.json").is_file() and ops


def find_run_folders(paths: Iterable[Path]) -> list[Path]:
    """Run folders among `paths`: each is a run folder or a parent holding some (any depth)."""
    found: list[Path] = []
    for path in paths:
        if is_run_folder(path):
            found.append(path)
        elif path.is_dir():
            found += sorted(
                p.parent for p in path.rglob("metadata.json") if is_run_folder(p.parent)
            )
    unique: dict[Path, None] = {}
    for folder in found:
        unique.setdefault(folder.resolve(), None)
    return list(unique)


def load_run(folder: Path, budget: float) -> RunData:
    """Read and summarize one folder; a malformed one raises ReportError naming it."""
    try:
        record = read_run(folder)
        summary = summarize(record, budget=budget, run=folder.name)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise ReportError(f"{folder}: not a readable run folder: {error}") from None
    return RunData(folder, record, summary)


def build_report(
    run_folders: Sequence[Path],
    reports_dir: Path,
    name: str | None,
    command: str,
    budget: float = 10.0,
    progress: bool = False,
) -> Path:
    """Write the report of `run_folders` into `reports_dir/name/`; returns that folder."""
    return generate_report(run_folders, reports_dir, name, command, budget, progress).folder


def generate_report(
    run_folders: Sequence[Path],
    reports_dir: Path,
    name: str | None,
    command: str,
    budget: float = 10.0,
    progress: bool = False,
) -> Report:
    """As `build_report`, returning the groups and ratios too (for a summary table)."""
    # matplotlib and seaborn take a second to import: only when a report is drawn, not on
    # every `raftbench` command (the CLI imports all command modules).
    from workloads import plots  # noqa: PLC0415

    with _Steps(progress) as steps:
        runs: list[RunData] = []
        skipped: list[tuple[Path, str]] = []
        for folder in steps.track(run_folders, "reading and checking runs"):
            try:
                runs.append(load_run(folder, budget))
            except ReportError as error:
                skipped.append((folder, str(error)))
        if not runs:
            reasons = "; ".join(reason for _, reason in skipped) or "no run folders given"
            raise ReportError(f"no readable run folder: {reasons}")
        groups, ratios = aggregate(runs)
        folder = reports_dir / _report_name(name, groups)
        folder.mkdir(parents=True, exist_ok=True)
        report = Report(folder, groups, ratios, skipped)
        scenarios = _scenarios(groups)
        jobs = [(s, title, plot) for s in scenarios for title, plot in plots.PLOTS]
        drawn: dict[str, list[tuple[str, str]]] = {s: [] for s in scenarios}
        for scenario, title, plot in steps.track(jobs, "drawing figures"):
            file = plot(scenario, [g for g in groups if g.scenario == scenario], folder)
            if file is not None:
                drawn[scenario].append((title, file))
                report.figures.append(file)
        report.forest = plots.ratio_forest(ratios, folder)
        if report.forest is not None:
            report.figures.insert(0, report.forest)
    doc = _document(report, drawn, command)
    (folder / "report.md").write_text(to_markdown(doc), encoding="utf-8")
    (folder / "index.html").write_text(to_html(doc, folder), encoding="utf-8")
    (folder / "summary.json").write_text(
        json.dumps(_summary_json(report, command), indent=1, sort_keys=True, default=str) + "\n"
    )
    return report


# ---- formatting ---------------------------------------------------------------------------------


def format_number(value: float | None) -> str:
    """Three significant digits; whole numbers from 100 up (no thousands separators: they would
    read as list commas inside "[low, high]")."""
    if value is None:
        return "n/a"
    rounded = float(f"{value:.3g}")
    size = abs(rounded)
    if size >= 100 or rounded == 0:
        return f"{value:.0f}"
    if size < 1e-4:
        return f"{rounded:.2e}"
    decimals = 2 - math.floor(math.log10(size))
    return f"{rounded:.{decimals}f}"


def format_estimate(estimate: Estimate, scale: float = 1.0, trials: int | None = None) -> str:
    """`12.3 [11.9, 12.8]`, `12.3 (too few trials)`, or just the value when there is no
    interval; ` n=4` is added when fewer of the `trials` than all had a value."""
    if estimate.value is None:
        return "n/a"
    text = format_number(estimate.value * scale)
    if estimate.low is not None and estimate.high is not None:
        text += f" [{format_number(estimate.low * scale)}, {format_number(estimate.high * scale)}]"
    elif estimate.too_few:
        text += f" ({TOO_FEW})"
    if trials is not None and trials > 1 and estimate.n != trials:
        text += f" n={estimate.n}"
    return text


def format_ratio(estimate: Estimate) -> str:
    if estimate.value is None:
        return "n/a"
    text = f"{estimate.value:.2f}x"
    if estimate.low is not None and estimate.high is not None:
        text += f" [{estimate.low:.2f}, {estimate.high:.2f}]"
    elif estimate.too_few:
        text += f" ({TOO_FEW})"
    return text


def format_lost(lost: int | None) -> str:
    return "cannot tell" if lost is None else str(lost)


def summary_rows(groups: Sequence[GroupStats]) -> list[list[str]]:
    """The summary table's rows (shared by the report and the terminal table)."""
    rows = []
    for group in groups:
        cells = [group.scenario, group.label, str(group.trials), _verdicts(group)]
        cells.append(format_lost(group.lost))
        for metric in METRICS:
            estimate = group.estimates[metric.key]
            cells.append(format_estimate(estimate, metric.scale, group.trials))
        cells.append(group.basis())
        rows.append(cells)
    return rows


def summary_headers() -> list[str]:
    heads = ["scenario", "label", "trials", "verdicts", "acked lost"]
    heads += [f"{m.title} ({m.unit})" for m in METRICS]
    return [*heads, "95% interval: method, n"]


def ratio_rows(ratios: Sequence[RatioStats]) -> list[list[str]]:
    rows = []
    for r in ratios:
        cells = [r.scenario, r.pair, _ratio_n(r)]
        for m in METRICS:
            estimate = r.estimates[m.key]
            words = verdict(estimate, m.key, r.label)
            text = format_ratio(estimate)
            cells.append(f"{text}: {words}" if words and words != TOO_FEW else text)
        rows.append(cells)
    return rows


def ratio_headers() -> list[str]:
    return ["scenario", "ratio", "trials", *(m.title for m in METRICS)]


def _ratio_n(ratio: RatioStats) -> str:
    return f"{ratio.trials[0]} / {ratio.trials[1]}"


def _verdicts(group: GroupStats) -> str:
    counts: dict[str, int] = {}
    for word in group.verdicts:
        counts[word] = counts.get(word, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))


# ---- the document -------------------------------------------------------------------------------


def _document(report: Report, drawn: dict[str, list[tuple[str, str]]], command: str) -> Document:
    scenarios = _scenarios(report.groups)
    names = ", ".join(scenarios) if len(scenarios) <= 3 else f"{len(scenarios)} scenarios"
    doc = Document(f"raftbench report: {names}")
    _correctness_headline(doc, report)
    _findings(doc, report)
    _summary(doc, report)
    _correctness(doc, report)
    _provenance(doc, report, command)
    for scenario in _scenarios(report.groups):
        _scenario_section(doc, report, scenario, drawn.get(scenario, []))
    _raw_links(doc, report)
    return doc


def _correctness_headline(doc: Document, report: Report) -> None:
    """A red box per failing run, or one line saying that every run is correct."""
    runs = report.runs
    bad = [r for r in runs if _is_bad(r.summary)]
    for run in bad:
        s = run.summary
        where = f"run `{run.folder.name}` ({s.scenario}, {s.label}, trial {s.trial})"
        if s.verdict == NOT_LINEARIZABLE:
            doc.add(Alert(f"NOT LINEARIZABLE: {where}: {s.verdict_detail}"))
        if s.acked_lost:
            doc.add(Alert(f"ACKNOWLEDGED WRITES LOST: {s.acked_lost} in {where}: {s.lost_detail}"))
    undecided = [r for r in runs if r.summary.verdict not in (LINEARIZABLE, NOT_LINEARIZABLE)]
    if not bad and not undecided:
        doc.add(
            Paragraph(
                f"**Correctness: all {len(runs)} runs linearizable; no acknowledged write lost.**"
            )
        )
    elif undecided:
        doc.add(
            Paragraph(
                f"**{len(undecided)} of {len(runs)} runs have no verdict** (the checker's "
                "budget ran out): their correctness is not established."
            )
        )


def _findings(doc: Document, report: Report) -> None:
    """What the report found, first: the verdict per pair of labels, the ratio chart."""
    if not report.ratios:
        return
    doc.add(
        Paragraph(f"**Verdict** (95% intervals over trials). {RULE}", anchor="verdict"),
        Bullets(tuple(verdict_lines(report.ratios)), anchor="verdict-lines"),
    )
    sentence = etcd_sentence(report.ratios)
    if sentence is not None:
        doc.add(Paragraph(sentence, anchor="etcd"))
    if report.forest is not None:
        doc.add(
            Figure(
                report.forest,
                "every ratio with its 95% interval",
                "Each ratio (label / baseline) per scenario and measure, log scale; 1.0 (dotted) "
                "is no difference. Bar: 95% interval over trials (log-ratio t, delta method, "
                f"Welch df), drawn only with at least {MIN_TRIALS} trials per label; diamond: the "
                "ratio of the means; small dots: each trial's own ratio (trial t of the label "
                "over trial t of the baseline: same seed, run back to back). Filled diamond: "
                "the interval excludes 1.0.",
                anchor="ratios",
            )
        )


def _correctness(doc: Document, report: Report) -> None:
    runs = report.runs
    doc.add(Heading(2, "Correctness"))
    rows, flagged = [], []
    for run in runs:
        s = run.summary
        detail = s.verdict_detail or s.lost_detail
        rows.append(
            (
                run.folder.name,
                s.scenario,
                s.label,
                str(s.trial),
                s.verdict,
                format_lost(s.acked_lost),
                f"{s.ok_ops}/{s.failed_ops}/{s.unknown_ops}",
                detail,
            )
        )
        flagged.append(_is_bad(run.summary))
    table = Table(
        (
            "run",
            "scenario",
            "label",
            "trial",
            "linearizable?",
            "acked writes lost",
            "ops ok/fail/unknown (window)",
            "detail",
        ),
        tuple(rows),
        tuple(flagged),
    )
    clean = all(r.summary.verdict == LINEARIZABLE and r.summary.acked_lost == 0 for r in runs)
    problems = sum(flagged)
    summary = (
        f"Every run: {len(runs)} runs, all linearizable, no acknowledged write lost"
        if clean
        else f"Every run: {len(runs)} runs, {problems} failing, "
        f"{sum(r.summary.verdict not in (LINEARIZABLE, NOT_LINEARIZABLE) for r in runs)} "
        "without a verdict"
    )
    doc.add(Details(summary, (table,), open=not clean))
    if report.skipped:
        doc.add(Paragraph("**Folders skipped (unreadable):**"))
        doc.add(Bullets(tuple(f"`{path}`: {reason}" for path, reason in report.skipped)))


def _is_bad(summary: RunSummary) -> bool:
    return summary.verdict == NOT_LINEARIZABLE or bool(summary.acked_lost)


def _summary(doc: Document, report: Report) -> None:
    doc.add(Heading(2, "Summary"))
    doc.add(
        Table(
            tuple(summary_headers()),
            tuple(tuple(row) for row in summary_rows(report.groups)),
            tuple(any(_is_bad(run.summary) for run in group.runs) for group in report.groups),
            caption=(
                f"Point estimate and 95% interval [low, high]; the last column gives the method "
                f"and n. With {MIN_TRIALS} or more trials: the mean of the per-trial values and "
                f'a Student-t interval (mean ± t * s/√n). With 2 trials: "{TOO_FEW}", no '
                f"interval. With 1 trial: a {BOOTSTRAP_METHOD} interval within it, over its "
                "operations (latency), whole 1-s windows (throughput) and faults (failover) — "
                "that trial's own noise, not the spread between runs. `n=4`: only 4 trials had "
                "a value. Latency: ok operations meant to start in the measured window (open "
                "loop: from the scheduled start). Failover: mean time, over the scored faults, "
                "until operations complete at >= 50% of the pre-fault rate. Bytes: leader "
                "egress per committed write. CPU: leader CPU time per committed write."
            ),
        )
    )
    if report.ratios:
        doc.add(
            Table(
                tuple(ratio_headers()),
                tuple(tuple(row) for row in ratio_rows(report.ratios)),
                caption=(
                    "Ratios label / baseline of the means, with 95% intervals "
                    f"({LOG_RATIO_METHOD}: log of the ratio of the means ± t * its delta-method "
                    "standard error, so 0.5x and 2x are symmetric); trials: of the label / of "
                    f"the baseline; {MIN_TRIALS} of each needed. Below 1: the label is lower — "
                    "better for latency, failover, bytes and CPU, worse for throughput. " + RULE
                ),
            )
        )
    elif len({g.label for g in report.groups}) > 1:
        doc.add(Paragraph("No ratio: a scenario lacks its `push` (or `etcd`) baseline."))
    _load_generator(doc, report)


def _load_generator(doc: Document, report: Report) -> None:
    """The load generator's ceiling and CPU share, next to the results they bound."""
    doc.add(Heading(3, "Load generator"))
    rows = []
    for group in report.groups:
        throughput = group.mean_of(lambda s: s.throughput)
        ceiling = group.mean_of(lambda s: s.driver_ceiling)
        share = group.mean_of(lambda s: s.driver_cpu_share)
        use = f"{throughput / ceiling:.0%}" if throughput and ceiling else "n/a"
        rows.append(
            (
                group.scenario,
                group.label,
                format_number(throughput),
                format_number(ceiling) if ceiling else "not calibrated",
                use,
                f"{share:.0%}" if share is not None else "not measured",
            )
        )
    doc.add(
        Table(
            (
                "scenario",
                "label",
                "throughput (ops/s)",
                "load generator ceiling (ops/s)",
                "throughput / ceiling",
                "load generator CPU (share of the machine)",
            ),
            tuple(rows),
            caption="Mean over trials. Near the ceiling, the client and not the cluster may "
            "be what limits throughput.",
        )
    )
    for group in report.groups:
        throughput = group.mean_of(lambda s: s.throughput)
        ceiling = group.mean_of(lambda s: s.driver_ceiling)
        if throughput and ceiling and throughput >= CEILING_WARNING * ceiling:
            doc.add(
                Paragraph(
                    f"**{group.scenario} / {group.label}: throughput is at "
                    f"{throughput / ceiling:.0%} of the load generator's ceiling; the client "
                    "may be the bottleneck.**"
                )
            )


def _provenance(doc: Document, report: Report, command: str) -> None:
    runs = report.runs
    doc.add(Heading(2, "Where these numbers come from"))
    run_commands = sorted({str(r.record.metadata.get("command", "?")) for r in runs})
    doc.add(
        Paragraph(
            "To make the runs and this report again, from the repository root (after the "
            "README's first command, which installs `.venv`):"
        ),
        Code("\n".join(regenerate(run_commands, command))),
    )
    machines = _unique(r.record.metadata.get("machine") for r in runs)
    doc.add(Paragraph("**Machine:** " + "; ".join(_machine(m) for m in machines)))
    hosts = [line for r in runs for line in host_lines(r.folder.name, r.record.metadata)]
    if hosts:
        doc.add(Paragraph("**Hosts (SSH):**"), Bullets(tuple(hosts)))
    doc.add(Paragraph("**Limits of these measurements:**"), Bullets(tuple(_limits(report))))
    doc.add(Heading(3, "Versions"))
    found = _unique(r.record.metadata.get("versions") for r in runs)
    items = [f"runs: {_pairs(v)}" for v in found]
    items.append(
        f"this report: {_pairs(versions(('raftbench', 'numpy', 'seaborn', 'matplotlib')))}"
    )
    doc.add(Bullets(tuple(items)))


def host_lines(run: str, metadata: dict[str, Any]) -> list[str]:
    """A run on SSH hosts: each node's host and measured clock offset, then the RTT matrix the
    nodes measured (empty for a local run)."""
    target = metadata.get("target")
    if not isinstance(target, dict) or not isinstance(target.get("hosts"), list):
        return []
    parts = []
    for host in target["hosts"]:
        clock = host.get("clock") or {}
        offset = clock.get("offset_ms")
        shown = "clock not measured"
        if isinstance(offset, int | float):
            shown = f"clock {offset:+.3f} ms (residual {clock.get('residual_ms', 0):.3f} ms)"
        parts.append(
            f"{host.get('node')} on {host.get('host')} ({host.get('address')}, "
            f"region {host.get('region')}): {shown}"
        )
    lines = [f"`{run}`: " + "; ".join(parts)]
    rtt = target.get("rtt_matrix_ms") or {}
    pairs = [
        f"{a}->{b} {value:.2f}"
        for a, row in sorted(rtt.items())
        for b, value in sorted(row.items())
        if isinstance(value, int | float)
    ]
    if pairs:
        lines.append(f"`{run}` measured RTT, ms (no emulated delay): " + ", ".join(pairs))
    return lines


def _limits(report: Report) -> list[str]:
    runs = report.runs
    engines = sorted({r.summary.engine for r in runs})
    machine: Any = next((m for m in (r.record.metadata.get("machine") for r in runs) if m), {})
    cores = machine.get("cores", "?") if isinstance(machine, dict) else "?"
    nodes = sorted({len(r.record.nodes) or len(r.record.regions) for r in runs})
    node_text = "/".join(str(n) for n in nodes)
    out = []
    if "real" in engines:
        netns = any(
            isinstance(r.record.metadata.get("real"), dict)
            and r.record.metadata["real"].get("netns")
            for r in runs
        )
        network = (
            "each node in its own network namespace on this host"
            if netns
            else "loopback network; WAN delays, loss and partitions are applied by the link "
            "shaper in the peer transport"
        )
        on_hosts = any(
            isinstance(r.record.metadata.get("real"), dict)
            and r.record.metadata["real"].get("hosts")
            for r in runs
        )
        if on_hosts:
            out.append(
                f"Real cluster on SSH hosts: {node_text} nodes, one per host (see Hosts above); "
                f"the load generator ran on the control machine ({cores} cores)."
            )
        else:
            out.append(
                f"Real cluster: all {node_text} nodes and the load generator share one host "
                f"with {cores} cores ({network}). They compete for the same cores and disk, so "
                "absolute numbers are this machine's, not a deployment's."
            )
    if "sim" in engines:
        out.append(
            "Simulator: virtual time in a simulator, no CPU/disk contention modelled; latency "
            "and throughput come from the modelled network and disk delays, and leader CPU is "
            "not measured."
        )
    shares = [r.summary.driver_cpu_share for r in runs if r.summary.driver_cpu_share is not None]
    ceilings = [r.summary.driver_ceiling for r in runs if r.summary.driver_ceiling is not None]
    driver = "Load generator: "
    driver += (
        f"{_span(shares, lambda x: f'{x:.0%}')} of the machine's CPU"
        if shares
        else "CPU share not measured"
    )
    driver += (
        f"; calibrated ceiling {_span(ceilings, format_number)} ops/s"
        if ceilings
        else "; ceiling not calibrated"
    )
    out.append(driver + " (per group in the load generator table above).")
    fsync = sorted({_fsync(r.record.metadata) for r in runs})
    out.append(f"fsync policy: {', '.join(fsync)}.")
    windows = sorted({round(r.summary.window[1] - r.summary.window[0], 3) for r in runs})
    out.append(
        f"Measured window: {', '.join(f'{w:g} s' for w in windows)} per run (warm-up and "
        "cool-down excluded from rates and latencies; the whole history is checked)."
    )
    return out


def _span(values: Sequence[float], show: Callable[[float], str]) -> str:
    low, high = show(min(values)), show(max(values))
    return low if low == high else f"{low} to {high}"


def _fsync(metadata: dict[str, Any]) -> str:
    if "fsync" in metadata:
        return str(metadata["fsync"])
    raw = metadata.get("scenario_raw")
    if isinstance(raw, dict) and isinstance(raw.get("cluster"), dict):
        return str(raw["cluster"].get("fsync", "always"))
    return "unknown"


def _machine(machine: Any) -> str:
    if not isinstance(machine, dict):
        return "unknown"
    parts = [f"{machine.get('cores', '?')} cores", str(machine.get("cpu", "CPU unknown"))]
    if isinstance(machine.get("memory_kib"), int):
        parts.append(f"{machine['memory_kib'] / 2**20:.1f} GiB memory")
    if machine.get("platform"):
        parts.append(str(machine["platform"]))
    return ", ".join(parts)


def _pairs(value: Any) -> str:
    if not isinstance(value, dict):
        return "unknown"
    return ", ".join(f"{k} {v}" for k, v in sorted(value.items()))


def _unique(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def _scenario_section(
    doc: Document, report: Report, scenario: str, figures: list[tuple[str, str]]
) -> None:
    groups = [g for g in report.groups if g.scenario == scenario]
    doc.add(Heading(2, f"Scenario {scenario}"))
    raw = groups[0].runs[0].record.metadata.get("scenario_raw")
    if isinstance(raw, dict) and raw.get("description"):
        doc.add(Paragraph(str(raw["description"])))
    etcd_note = etcd_absence_note(
        [g.label for g in report.groups],
        [g.label for g in groups],
        raw if isinstance(raw, dict) else None,
    )
    if etcd_note is not None:
        doc.add(Paragraph(etcd_note))
    for group in groups:
        if group.not_applied:
            doc.add(
                Alert(
                    f"{group.label} did not run this scenario as written, so its numbers are "
                    "not comparable with the other labels' and its ratios are left out. Not "
                    "applied: " + "; ".join(group.not_applied)
                )
            )
    runs = [run for g in groups for run in g.runs]
    doc.add(Heading(3, "Latency by operation kind (ms)"))
    rows = []
    for run in runs:
        for kind, stats in sorted(run.summary.latency.items()):
            rows.append(
                (
                    run.summary.label,
                    str(run.summary.trial),
                    kind,
                    str(stats.count),
                    *(format_number(x * 1e3) for x in (stats.p50, stats.p90, stats.p99, stats.max)),
                )
            )
    doc.add(Table(("label", "trial", "kind", "ok ops", "p50", "p90", "p99", "max"), tuple(rows)))
    fault_rows = [
        (
            run.summary.label,
            str(run.summary.trial),
            f"{f.kind} {','.join(f.nodes)}".strip(),
            format_number(f.t),
            format_number(f.pre_rate),
            _unavailable_text(f.unavailable, f.recovered),
            format_number(f.election) if f.election is not None else "no new leader",
            f.new_leader or "",
        )
        for run in runs
        for f in run.summary.faults
    ]
    if fault_rows:
        doc.add(Heading(3, "Faults"))
        doc.add(
            Table(
                (
                    "label",
                    "trial",
                    "fault",
                    "at (s)",
                    "pre-fault rate (ops/s)",
                    "unavailable (s)",
                    "election (s)",
                    "new leader",
                ),
                tuple(fault_rows),
            )
        )
    doc.add(Heading(3, "Leader cost and replication traffic"))
    doc.add(
        Table(
            (
                "label",
                "trial",
                "acked writes",
                "leader CPU (% of a core)",
                "leader CPU per write (µs)",
                "leader egress (B/write)",
                "cross-region (B/write)",
                "all links (B/write)",
                "commit lag mean / p99 / max (entries)",
            ),
            tuple(
                (
                    run.summary.label,
                    str(run.summary.trial),
                    str(run.summary.acked_writes),
                    _scaled(run.summary.leader_cpu, 100),
                    _scaled(run.summary.leader_cpu_per_write, 1e6),
                    format_number(run.summary.leader_egress_per_write),
                    format_number(run.summary.cross_region_per_write),
                    format_number(run.summary.link_bytes_per_write),
                    "; ".join(
                        f"{lag.node}: {format_number(lag.mean)} / {format_number(lag.p99)} / "
                        f"{lag.max}"
                        for lag in run.summary.commit_lag
                    )
                    or "n/a",
                )
                for run in runs
            ),
        )
    )
    for title, file in figures:
        doc.add(Heading(3, title), Figure(file, f"{scenario}: {title}"))
    report.figures.extend(bandwidth_section(doc, report.folder, scenario, groups))
    report.figures.extend(memory_section(doc, report.folder, scenario, groups))
    catchup_section(doc, groups)
    _failover(doc, report, scenario, groups)


def _failover(doc: Document, report: Report, scenario: str, groups: list[GroupStats]) -> None:
    """Where each label's failover time goes, stage by stage (workloads/failover.py): the mean
    per stage, time to 50% rate with its t-interval, and its ratio to push per fault."""
    lines = {g.label: [t for run in g.runs for t in timelines(run.record)] for g in groups}
    if not any(lines.values()):
        return
    stage_names = [stage for _, stage in FAILOVER_STAGES]
    push_lines = lines.get("push", [])
    push_back = {
        landing: per_trial_rate_back(push_lines, from_landing=landing) for landing in (False, True)
    }
    rows = []
    for label, found in lines.items():
        if not found:
            continue
        stages = mean_stages(found)
        cells: list[str] = []
        for from_landing in (False, True):
            push = push_back[from_landing]
            back = per_trial_rate_back(found, from_landing=from_landing)
            ratio = ratio_interval(back, push) if push and label != "push" else None
            cells += [format_estimate(mean_interval(back)), format_ratio(ratio) if ratio else ""]
        rows.append(
            (
                label,
                str(len(found)),
                *(format_number(stages[name]) for name in stage_names),
                *cells,
            )
        )
    doc.add(
        Heading(3, "Failover timeline"),
        Table(
            (
                "label",
                "faults",
                *stage_names,
                "to 50% rate (s)",
                "to 50% / push",
                "landed to 50% (s)",
                "landed to 50% / push",
            ),
            tuple(rows),
            caption="Mean seconds per stage over every fault, from the engines' own events "
            "(etcd exposes none, so its stages stay empty). Time to 50% rate: the mean of "
            "per-trial means with a 95% Student-t interval over trials; its ratio to push: "
            "log-ratio t-interval (delta method); none below 3 trials. 'Landed to 50%' counts "
            "from when the fault took effect (the first candidate's last contact with the old "
            "leader): it leaves out the runtime's delay in applying the fault, which is the "
            "same machinery for every label but varies from run to run (etcd: from the fault).",
        ),
    )
    file = draw_failover_timeline(scenario, lines, report.folder / _figure_file(scenario))
    if file is not None:
        report.figures.append(file.name)
        doc.add(Figure(file.name, f"{scenario}: failover timeline"))


def _figure_file(scenario: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", scenario) + "-failover-timeline.png"


def _unavailable_text(value: float | None, recovered: bool) -> str:
    if value is None:
        return "n/a (no load before the fault)"
    return format_number(value) if recovered else f">= {format_number(value)} (never recovered)"


def _scaled(value: float | None, scale: float) -> str:
    return format_number(None if value is None else value * scale)


def _raw_links(doc: Document, report: Report) -> None:
    doc.add(Heading(2, "Raw results"))
    items = []
    for run in report.runs:
        target = Path(os.path.relpath(run.folder, report.folder)).as_posix()
        items.append(f"[{run.folder.name}]({target}/)")
    doc.add(Bullets(tuple(items)))
    doc.add(Paragraph("Unrounded numbers: `summary.json` next to this report."))


# ---- helpers ------------------------------------------------------------------------------------


def _scenarios(groups: Sequence[GroupStats]) -> list[str]:
    return list(dict.fromkeys(g.scenario for g in groups))


def _report_name(name: str | None, groups: Sequence[GroupStats]) -> str:
    if name is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        name = f"{stamp}-{'+'.join(_scenarios(groups))}"[:120]
    if not name or name in (".", "..") or not re.fullmatch(r"[A-Za-z0-9_.+:=@-]+", name):
        raise ReportError(f"report name {name!r}: use letters, digits and _ . + : = @ - only")
    return name


def _summary_json(report: Report, command: str) -> dict[str, Any]:
    return {
        "command": command,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": [{"folder": str(run.folder), **run.summary.to_dict()} for run in report.runs],
        "groups": [group.to_dict() for group in report.groups],
        "ratios": [ratio.to_dict() for ratio in report.ratios],
        "memory": [
            entry
            for scenario in _scenarios(report.groups)
            for entry in memory_summary([g for g in report.groups if g.scenario == scenario])
        ],
        "catchup": [
            entry
            for scenario in _scenarios(report.groups)
            for entry in catchup_summary([g for g in report.groups if g.scenario == scenario])
        ],
        "skipped": [{"folder": str(p), "reason": r} for p, r in report.skipped],
        "figures": report.figures,
    }


class _Steps:
    """Rich progress bars for the long steps, or nothing (library use, tests)."""

    def __init__(self, show: bool) -> None:
        self._progress: Any = None
        if show:
            self._progress = Progress(console=Console(stderr=True), transient=False)

    def __enter__(self) -> _Steps:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def track(self, items: Sequence[T], what: str) -> Iterable[T]:
        if self._progress is None:
            return items
        tracked: Iterable[T] = self._progress.track(items, total=len(items), description=what)
        return tracked
