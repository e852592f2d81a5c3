"""The report's section on memory over time (the `soak` scenario, and any long run or run with
log compaction): each node's resident memory per label, whether it stays flat after warm-up
(`workloads.memory_series` says exactly what that means), and the log each node held in memory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from workloads.aggregate import GroupStats, RunData
from workloads.memory_series import (
    BLOCKS,
    GROWS,
    MIB,
    TAIL,
    TOLERANCE_MIB,
    LogHeld,
    MemoryTrend,
    fit_span,
    has_log_counts,
    has_rss,
    label_verdict,
    log_held,
    memory_trend,
    node_series,
    nodes_of,
)
from workloads.plots import panel_grid
from workloads.report_doc import Document, Figure, Heading, Paragraph, Table

DPI = 100
LONG_RUN = 120.0  # seconds: a measured window this long gets the section even without compaction

FLAT_NOTE = (
    f"Flat means: over the last {TAIL:.0%} of the measured window (the warm-up and the first "
    f"{1 - TAIL:.0%} left out), the least-squares slope of the node's RSS, as MiB per 10 "
    f"minutes, has a 95% interval wholly below {TOLERANCE_MIB:g} MiB per 10 min. Wholly above "
    "it: grows (marked). Otherwise: unclear. The slope is fitted through the mean RSS of "
    f"{BLOCKS} consecutive equal blocks of that span, with a Student-t interval on "
    f"{BLOCKS - 2} degrees of freedom (batch means: 100 ms samples of RSS, which moves in "
    "lasting steps, are far from independent). A label grows when one of its nodes grows, "
    "and is flat when all are. The tolerance is what a 10-minute run can resolve, not a "
    "bound for days (just under it is still 6 MiB an hour)."
)
LOG_NOTE = (
    "Log held in memory: the entries after the node's latest snapshot (/status log_entries), "
    "over the same span; snapshots: distinct snapshot indexes the node reported during the "
    "whole run. etcd does not report either (its compaction settings are under 'Where these "
    "numbers come from', in the target's description)."
)


def wants_memory_section(groups: Sequence[GroupStats]) -> bool:
    """Runs with memory data that are long, or compact their log."""
    runs = [run for group in groups for run in group.runs]
    if not any(has_rss(run.record) or has_log_counts(run.record) for run in runs):
        return False
    return any(_compacts(run) or _window(run) >= LONG_RUN for run in runs)


def memory_section(
    doc: Document, folder: Path, scenario: str, groups: Sequence[GroupStats]
) -> list[str]:
    """Add the section to `doc`; return the figure files it wrote into `folder`."""
    if not wants_memory_section(groups):
        return []
    doc.add(Heading(3, "Memory over time"))
    lines = memory_lines(groups)
    if lines:
        doc.add(Paragraph("Resident memory after warm-up: " + "; ".join(lines) + "."))
    doc.add(Paragraph(FLAT_NOTE))
    rows: list[tuple[str, ...]] = []
    flagged: list[bool] = []
    for group in groups:
        for run in group.runs:
            for node in nodes_of(run.record):
                trend = memory_trend(run.record, node)
                held = log_held(run.record, node)
                if trend is None and held is None:
                    continue
                rows.append(_row(group.label, run, node, trend, held))
                flagged.append(trend is not None and trend.verdict == GROWS)
    if rows:
        doc.add(
            Table(
                (
                    "label",
                    "trial",
                    "node",
                    "RSS at span start / end (MiB, fitted)",
                    "peak (MiB)",
                    "growth (MiB per 10 min) [95%]",
                    "memory",
                    "log held in memory, max / mean (entries)",
                    "snapshots",
                ),
                tuple(rows),
                tuple(flagged),
                caption=LOG_NOTE,
            )
        )
    files = []
    for draw, title in (
        (draw_rss, "Resident memory per node"),
        (draw_log, "Log entries held in memory per node"),
    ):
        file = draw(scenario, groups, folder)
        if file is not None:
            doc.add(Heading(3, title), Figure(file, f"{scenario}: {title.lower()}"))
            files.append(file)
    return files


def label_verdicts(groups: Sequence[GroupStats]) -> dict[str, tuple[str, MemoryTrend]]:
    """Per label with RSS samples: its verdict and the trend of its fastest-growing node."""
    out: dict[str, tuple[str, MemoryTrend]] = {}
    for group in groups:
        trends = [
            trend
            for run in group.runs
            for node in nodes_of(run.record)
            if (trend := memory_trend(run.record, node)) is not None
        ]
        if trends:
            out[group.label] = (label_verdict(trends), max(trends, key=lambda t: t.growth))
    return out


def memory_lines(groups: Sequence[GroupStats]) -> list[str]:
    """One line per label: its verdict (GROWS in capitals) and its largest growth with the
    interval, for the report and the terminal summary."""
    lines = []
    for label, (verdict, trend) in label_verdicts(groups).items():
        interval = (
            f" [{trend.low:+.2f}, {trend.high:+.2f}]"
            if trend.low is not None and trend.high is not None
            else ""
        )
        shown = verdict.upper() if verdict == GROWS else verdict
        lines.append(
            f"{label}: {shown} (largest: {trend.node} {trend.growth:+.2f}{interval} MiB per 10 min)"
        )
    return lines


def memory_summary(groups: Sequence[GroupStats]) -> list[dict[str, Any]]:
    """Every number of the section, unrounded (for the report's summary.json)."""
    if not wants_memory_section(groups):
        return []
    out: list[dict[str, Any]] = []
    verdicts = label_verdicts(groups)
    for group in groups:
        nodes = []
        for run in group.runs:
            for node in nodes_of(run.record):
                trend = memory_trend(run.record, node)
                held = log_held(run.record, node)
                nodes.append(
                    {
                        "trial": run.summary.trial,
                        "node": node,
                        "rss": None if trend is None else trend.to_dict(),
                        "log": None if held is None else held.to_dict(),
                    }
                )
        verdict = verdicts.get(group.label)
        out.append(
            {
                "scenario": group.scenario,
                "label": group.label,
                "verdict": None if verdict is None else verdict[0],
                "tolerance_mib_per_10min": TOLERANCE_MIB,
                "nodes": nodes,
            }
        )
    return out


def _row(
    label: str, run: RunData, node: str, trend: MemoryTrend | None, held: LogHeld | None
) -> tuple[str, ...]:
    if trend is None:
        rss_cells = ("n/a (no RSS samples)", "n/a", "n/a", "n/a")
    else:
        interval = (
            f" [{trend.low:+.2f}, {trend.high:+.2f}]"
            if trend.low is not None and trend.high is not None
            else " (no interval)"
        )
        rss_cells = (
            f"{trend.start_mib:.1f} / {trend.end_mib:.1f}",
            f"{trend.peak_mib:.1f}",
            f"{trend.growth:+.2f}{interval}",
            trend.verdict.upper() if trend.verdict == GROWS else trend.verdict,
        )
    log_cells = (
        ("n/a", "n/a")
        if held is None
        else (f"{held.max_entries} / {held.mean_entries:.0f}", str(held.snapshots))
    )
    return (label, str(run.summary.trial), node, *rss_cells, *log_cells)


def draw_rss(scenario: str, groups: Sequence[GroupStats], folder: Path) -> str | None:
    """One panel per label and trial: every node's RSS, the fitted span and its lines."""
    panels = [(g.label, run) for g in groups for run in g.runs if has_rss(run.record)]
    if not panels:
        return None
    fig, axes = panel_grid(len(panels), 7, 3.4)
    for ax, (label, run) in zip(axes.flat, panels, strict=False):
        span = fit_span(run.record)
        ax.axvspan(0, span[0], color="#eee", label="warm-up (not fitted)")
        for node in nodes_of(run.record):
            t, rss = node_series(run.record, node, "rss")
            if t.size == 0:
                continue
            (line,) = ax.plot(t, rss / MIB, linewidth=1.0, label=node)
            trend = memory_trend(run.record, node)
            if trend is not None:
                ax.plot(
                    span,
                    (trend.start_mib, trend.end_mib),
                    color=line.get_color(),
                    linestyle="--",
                    linewidth=1.4,
                )
        found = label_verdicts([_only(label, run)]).get(label)
        verdict = found[0] if found is not None else ""
        ax.set_title(f"{label} (trial {run.summary.trial}): {verdict}")
        ax.set_xlabel("time since the run started (s)")
        ax.set_ylabel("RSS (MiB)")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{scenario}: resident memory per node (dashed: fitted slope)")
    return _save(fig, folder, scenario, "rss")


def draw_log(scenario: str, groups: Sequence[GroupStats], folder: Path) -> str | None:
    """One panel per label and trial: the entries each node held in memory over time."""
    panels = [(g.label, run) for g in groups for run in g.runs if has_log_counts(run.record)]
    if not panels:
        return None
    fig, axes = panel_grid(len(panels), 7, 3.0)
    for ax, (label, run) in zip(axes.flat, panels, strict=False):
        for node in nodes_of(run.record):
            t, entries = node_series(run.record, node, "log_entries")
            if t.size:
                ax.plot(t, entries, linewidth=0.8, label=node)
        ax.set_title(f"{label} (trial {run.summary.trial})")
        ax.set_xlabel("time since the run started (s)")
        ax.set_ylabel("entries in memory")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{scenario}: log entries held in memory per node")
    return _save(fig, folder, scenario, "log-held")


def _only(label: str, run: RunData) -> GroupStats:
    return GroupStats(str(run.record.metadata.get("scenario", "")), label, [run])


def _save(fig: Any, folder: Path, scenario: str, what: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", scenario) + f"-{what}.png"
    fig.savefig(folder / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def _compacts(run: RunData) -> bool:
    raw = run.record.metadata.get("scenario_raw")
    cluster = raw.get("cluster") if isinstance(raw, dict) else None
    if not isinstance(cluster, dict):
        return False
    return any(cluster.get(key) for key in ("snapshot_entries", "snapshot_bytes"))


def _window(run: RunData) -> float:
    start, end = fit_span(run.record)
    return (end - start) / TAIL


__all__ = [
    "label_verdicts",
    "memory_lines",
    "memory_section",
    "memory_summary",
    "wants_memory_section",
]
