"""The report's section for bandwidth-capped scenarios (`leader-uplink`, `geo-bandwidth`, any
scenario with egress caps): throughput against the ceiling per label, the leader's egress over
time against its cap, and replication delay by depth in the sync tree. The per-link byte
heatmap is the report's usual "Bytes per link" figure. Nothing here for uncapped scenarios.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np

from workloads.aggregate import GroupStats, RunData
from workloads.bandwidth_series import egress_series, replication_delays
from workloads.ceiling import UPLINK, leader_of, pipes_of, scenario_of, tree_depths
from workloads.plots import panel_grid
from workloads.report_doc import Document, Figure, Heading, Paragraph, Table

DPI = 100


def has_ceiling(groups: Sequence[GroupStats]) -> bool:
    return any(run.summary.ceiling is not None for g in groups for run in g.runs)


def bandwidth_section(
    doc: Document, folder: Path, scenario: str, groups: Sequence[GroupStats]
) -> list[str]:
    """Add the section to `doc`; return the figure files it wrote into `folder`."""
    if not has_ceiling(groups):
        return []
    doc.add(Heading(3, "Bandwidth: throughput against the ceiling"))
    doc.add(Paragraph(CEILING_NOTE))
    rows = []
    for group in groups:
        for run in group.runs:
            rows.append(_ceiling_row(run))
    doc.add(
        Table(
            (
                "label",
                "trial",
                "acked writes/s",
                "predicted ceiling (writes/s)",
                "bottleneck, copies x B/copy",
                "writes/s / predicted",
                "observed ceiling (writes/s)",
                "bottleneck, B/write through it",
                "sync tree (member<-source; depth)",
            ),
            tuple(rows),
        )
    )
    delay_rows = []
    for group in groups:
        for run in group.runs:
            ceiling = run.summary.ceiling
            leader = leader_of(run.record)
            if ceiling is None or leader is None:
                continue
            for d in replication_delays(run.record, leader, tree_depths(ceiling.tree)):
                delay_rows.append(
                    (
                        group.label,
                        str(run.summary.trial),
                        str(d.depth),
                        ", ".join(d.members),
                        str(d.samples),
                        f"{d.p50 * 1e3:.0f}",
                        f"{d.p90 * 1e3:.0f}",
                    )
                )
    if delay_rows:
        doc.add(Heading(3, "Replication delay by depth in the sync tree"))
        doc.add(
            Table(
                ("label", "trial", "depth", "members", "samples", "p50 (ms)", "p90 (ms)"),
                tuple(delay_rows),
                caption=DELAY_NOTE,
            )
        )
    file = draw_leader_egress(scenario, groups, folder)
    if file is None:
        return []
    doc.add(
        Heading(3, "Leader egress over time against its cap"),
        Figure(file, f"{scenario}: leader egress against its cap", EGRESS_NOTE),
    )
    return [file]


CEILING_NOTE = (
    "Ceiling: the acked writes/s the egress caps allow (workloads/ceiling.py). A pipe that "
    "carries c copies of each write passes at most rate / (c x bytes per copy) writes/s; a "
    "member receives no faster than the slowest pipe on its chain from the leader, and a write "
    "commits once a majority holds it, so the ceiling is the majority-th fastest member's rate. "
    "Predicted: copies from the sync tree the samples show (push: every copy from the leader), "
    "bytes per copy from the codec (one more entry in an AppendEntries: perfect batching). "
    "Observed: the bytes each pipe really carried per acked write in the window (headers, "
    "acknowledgements, heartbeats and pull requests included), so writes/s / observed is the "
    "bottleneck pipe's utilisation."
)
DELAY_NOTE = (
    "How long after the leader had an entry the members at each depth had it (their last log "
    "index, interpolated between 100 ms samples), over the measured window. Depth 1 pulls or "
    "is pushed to straight from the leader; each further hop adds its source's delay."
)
EGRESS_NOTE = (
    "Bytes/s the leader sent to its peers, from its cumulative counters (real nodes read them "
    "every 0.5 s), against the cap of its uplink, or, without one, the sum of its capped pipes "
    "(links inside its own region then go uncapped). The simulator counts a message when it "
    "is handed to the pipe, so its bursts above the cap are queueing, not leaks."
)


def _ceiling_row(run: RunData) -> tuple[str, ...]:
    summary = run.summary
    ceiling = summary.ceiling
    if ceiling is None:
        return (summary.label, str(summary.trial), _n(summary.write_throughput), *["n/a"] * 6)
    depths = tree_depths(ceiling.tree)
    tree = ", ".join(
        f"{member}<-{source}; {depths.get(member)}"
        for member, source in sorted(ceiling.tree.items())
        if source is not None
    )
    fraction = f"{summary.write_throughput / ceiling.predicted:.2f}" if ceiling.predicted else "n/a"
    return (
        summary.label,
        str(summary.trial),
        _n(summary.write_throughput),
        _n(ceiling.predicted),
        f"{ceiling.predicted_pipe}, {ceiling.copies} x {ceiling.bytes_per_copy}",
        fraction,
        _n(ceiling.observed),
        f"{ceiling.observed_pipe}, {_n(ceiling.observed_bytes_per_write)}",
        tree,
    )


def _n(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def draw_leader_egress(scenario: str, groups: Sequence[GroupStats], folder: Path) -> str | None:
    """One panel per label (its first trial): the leader's egress rate and its cap."""
    panels = []
    for group in groups:
        run = group.runs[0]
        leader = leader_of(run.record)
        plan = scenario_of(run.record)
        if leader is None or plan is None:
            continue
        times, rates = egress_series(run.record, leader)
        if times.size == 0:
            continue
        pipes = [p for p in pipes_of(plan.node_ids, plan.egress_caps()) if p.node == leader]
        uplink = [p.rate for p in pipes if p.name == UPLINK]
        cap = uplink[0] if uplink else sum(p.rate for p in pipes)
        what = "uplink cap" if uplink else "sum of its capped pipes"
        panels.append((group.label, run.summary.trial, leader, times, rates, cap, what))
    if not panels:
        return None
    fig, axes = panel_grid(len(panels), 7, 3.4)
    top = max(max(float(np.max(p[4])), p[5]) for p in panels) * 1.1 / 1e6
    for ax, (label, trial, leader, times, rates, cap, what) in zip(axes.flat, panels, strict=False):
        ax.plot(times, rates / 1e6, linewidth=1.2, label=f"{leader} egress")
        ax.axhline(cap / 1e6, color="#d62728", linestyle="--", linewidth=1.2, label=what)
        ax.set_ylim(0, top)
        ax.set_xlabel("time since the run started (s)")
        ax.set_ylabel("MB/s")
        ax.set_title(f"{label} (trial {trial}): leader {leader}")
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{scenario}: leader egress against its cap")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", scenario) + "-leader-egress.png"
    fig.savefig(folder / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


__all__ = ["bandwidth_section", "draw_leader_egress", "has_ceiling"]
