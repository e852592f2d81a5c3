"""The report's figures: one PNG per figure and scenario, drawn with seaborn on the Agg backend.

Every function takes the groups of one scenario (see `workloads.aggregate`) and the report
folder, saves its PNG there and returns the file name (None when the runs hold nothing to
draw, e.g. no faults). Each label keeps its colour across all figures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import matplotlib.transforms as mtransforms
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter

from workloads.aggregate import METRICS, GroupStats, RatioStats, RunData
from workloads.intervals import MIN_TRIALS, t_errorbar
from workloads.results import SAMPLE_INTERVAL, RunRecord
from workloads.run_series import commit_lag_series, link_matrix, throughput_series
from workloads.summary import window_latencies

DPI = 100
THROUGHPUT_BIN = 0.25  # seconds per point of the throughput-over-time curve
SYMLOG_ABOVE = 100  # commit lag (entries) above which the lag axis turns logarithmic

Plot = Callable[[str, Sequence[GroupStats], Path], str | None]


def palette(labels: Sequence[str]) -> dict[str, Any]:
    colours = sns.color_palette("colorblind", max(len(labels), 3))
    return {label: colours[i] for i, label in enumerate(labels)}


def _labels(groups: Sequence[GroupStats]) -> list[str]:
    return [g.label for g in groups]


def _save(fig: Any, folder: Path, name: str) -> str:
    fig.savefig(folder / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def _file(scenario: str, kind: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", scenario)
    return f"{safe}-{kind}.png"


def panel_grid(count: int, width: float, height: float) -> tuple[Any, Any]:
    """A figure of `count` panels, two to a row (`width` x `height` inches each); the unused
    last cell is hidden. Returns the figure and its 2-D array of axes."""
    columns = min(count, 2)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False, layout="constrained"
    )
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, axes


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _mark_faults(ax: Any, records: Sequence[RunRecord]) -> None:
    """A dashed vertical line per fault (merged across runs by kind and time), labelled."""
    seen: dict[tuple[str, float], set[str]] = {}
    for record in records:
        for fault in record.faults:
            seen.setdefault((fault.kind, round(fault.t, 1)), set()).update(fault.nodes)
    top = ax.get_ylim()[1]
    for (kind, t), nodes in sorted(seen.items(), key=lambda item: item[0][1]):
        ax.axvline(t, color="#c00", linestyle="--", linewidth=1)
        text = f"{kind} {'/'.join(sorted(nodes))}".strip()
        ax.text(t, top, f" {text}", rotation=90, va="top", ha="left", fontsize=8, color="#900")


# ---- the figures --------------------------------------------------------------------------------


def latency_ecdf(scenario: str, groups: Sequence[GroupStats], folder: Path) -> str | None:
    frames = []
    for group in groups:
        for run in group.runs:
            values = window_latencies(run.record, run.summary.window)["all"] * 1e3
            frames.append(pd.DataFrame({"latency (ms)": values, "label": group.label}))
    data = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if data.empty:
        return None
    data["latency (ms)"] = data["latency (ms)"].clip(lower=1e-3)
    fig, ax = plt.subplots(figsize=(9, 4.8))
    labels = [label for label in _labels(groups) if (data["label"] == label).any()]
    sns.ecdfplot(
        data=data,
        x="latency (ms)",
        hue="label",
        hue_order=labels,
        palette=palette(_labels(groups)),
        log_scale=True,
        ax=ax,
    )
    for level in (0.5, 0.99):
        ax.axhline(level, color="#999", linestyle=":", linewidth=1)
        ax.text(1.005, level, f"p{level * 100:g}", va="center", fontsize=8, transform=blend(ax))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.set_xlabel("latency (ms, log scale)")
    ax.set_ylabel("fraction of operations")
    ax.set_title(f"{scenario}: latency ECDF (ok operations in the measured window, all trials)")
    return _save(fig, folder, _file(scenario, "latency-ecdf"))


def throughput_over_time(scenario: str, groups: Sequence[GroupStats], folder: Path) -> str | None:
    rows = []
    for group in groups:
        for run in group.runs:
            times, rates = throughput_series(run.record, THROUGHPUT_BIN)
            rows += [
                {"t": t, "ops/s": r, "label": group.label, "trial": run.summary.trial}
                for t, r in zip(times, rates, strict=True)
            ]
    if not rows:
        return None
    data = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    first = groups[0].runs[0].summary.window
    ax.axvspan(first[0], first[1], color="#888", alpha=0.08, label="measured window")
    sns.lineplot(
        data=data,
        x="t",
        y="ops/s",
        hue="label",
        hue_order=[label for label in _labels(groups) if (data["label"] == label).any()],
        units="trial",
        estimator=None,
        palette=palette(_labels(groups)),
        linewidth=1.2,
        ax=ax,
    )
    ax.set_ylim(bottom=0)
    _mark_faults(ax, [run.record for g in groups for run in g.runs])
    ax.set_xlabel("time since the run started (s)")
    ax.set_ylabel(f"ok operations/s ({THROUGHPUT_BIN * 1000:g} ms bins)")
    ax.set_title(f"{scenario}: throughput over time (one line per trial; dashed: faults)")
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, folder, _file(scenario, "throughput"))


def unavailability(scenario: str, groups: Sequence[GroupStats], folder: Path) -> str | None:
    rows = []
    for group in groups:
        for run in group.runs:
            for i, fault in enumerate(run.summary.faults):
                rows.append(
                    {
                        "fault": f"#{i + 1} {fault.kind}",
                        "label": group.label,
                        "unavailable (s)": fault.unavailable,
                        "election (s)": fault.election,
                    }
                )
    if not rows:
        return None
    data = pd.DataFrame(rows)
    many = any(g.trials > 1 for g in groups)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, column in zip(axes, ("unavailable (s)", "election (s)"), strict=True):
        present = data.dropna(subset=[column])
        if present.empty:
            _empty(ax, "no new leader was elected" if column.startswith("election") else "no data")
        else:
            sns.barplot(
                data=present,
                x="fault",
                y=column,
                hue="label",
                hue_order=[lb for lb in _labels(groups) if (present["label"] == lb).any()],
                palette=palette(_labels(groups)),
                errorbar=t_errorbar if many else None,
                ax=ax,
            )
            if many:
                _trial_points(ax, present, "fault", column, groups)
            ax.set_xlabel("fault (in order)")
        ax.set_title(column.split(" (")[0])
    fig.suptitle(
        f"{scenario}: time until ops run at >= 50% of the pre-fault rate, and election\n"
        + (MEAN_NOTE.strip(" ()") if many else "1 trial")
    )
    return _save(fig, folder, _file(scenario, "unavailability"))


def leader_costs(scenario: str, groups: Sequence[GroupStats], folder: Path) -> str | None:
    cpu_rows, byte_rows = [], []
    for group in groups:
        for run in group.runs:
            s = run.summary
            if s.leader_cpu is not None:
                cpu_rows.append(
                    {"label": group.label, "leader CPU (% of a core)": 100 * s.leader_cpu}
                )
            for name, value in (
                ("leader egress", s.leader_egress_per_write),
                ("cross-region", s.cross_region_per_write),
                ("all peer links", s.link_bytes_per_write),
            ):
                if value is not None:
                    byte_rows.append({"label": group.label, "traffic": name, "bytes/write": value})
    if not cpu_rows and not byte_rows:
        return None
    many = any(g.trials > 1 for g in groups)
    errorbar = t_errorbar if many else None
    colours = palette(_labels(groups))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5), width_ratios=(1, 2))
    if cpu_rows:
        cpu = pd.DataFrame(cpu_rows)
        order = [lb for lb in _labels(groups) if (cpu["label"] == lb).any()]
        sns.barplot(
            data=cpu,
            x="label",
            y="leader CPU (% of a core)",
            hue="label",
            order=order,
            hue_order=order,
            palette=colours,
            errorbar=errorbar,
            legend=False,
            ax=left,
        )
        if many:
            _trial_points(left, cpu, "label", "leader CPU (% of a core)", groups, dodge=False)
        left.set_title("leader CPU")
    else:
        _empty(left, "leader CPU not measured\n(simulator: no CPU model)")
        left.set_title("leader CPU")
    if byte_rows:
        data = pd.DataFrame(byte_rows)
        sns.barplot(
            data=data,
            x="traffic",
            y="bytes/write",
            hue="label",
            hue_order=[lb for lb in _labels(groups) if (data["label"] == lb).any()],
            palette=colours,
            errorbar=errorbar,
            ax=right,
        )
        if many:
            _trial_points(right, data, "traffic", "bytes/write", groups)
        right.set_xlabel("")
        right.set_ylabel("bytes per committed write")
        right.set_title("replication bytes per committed write (measured window)")
    else:
        _empty(right, "no committed writes")
    fig.suptitle(f"{scenario}: leader cost" + (MEAN_NOTE if many else " (1 trial)"))
    return _save(fig, folder, _file(scenario, "leader-cost"))


def link_heatmaps(scenario: str, groups: Sequence[GroupStats], folder: Path) -> str | None:
    if not any(run.record.links for g in groups for run in g.runs):
        return None
    fig, axes = panel_grid(len(groups), 6.6, 5.4)
    panels = []
    for group in groups:
        regions: dict[str, str] = {}
        for run in group.runs:
            regions.update(run.record.regions)
            for link in run.record.links:
                for end in ("src", "dst"):
                    regions.setdefault(str(link.get(end)), "?")
        nodes = ordered_nodes(regions)
        matrix = np.mean([link_matrix(run.record.links, nodes) for run in group.runs], axis=0)
        panels.append((group, regions, nodes, matrix))
    # one colour scale for every label, so that push and pull compare at a glance
    largest = max(float(matrix.max()) for *_, matrix in panels)
    scale, unit = byte_unit(largest)
    for ax, (group, regions, nodes, matrix) in zip(axes.flat, panels, strict=False):
        sns.heatmap(
            matrix / scale,
            mask=np.eye(len(nodes), dtype=bool),
            vmin=0.0,
            vmax=max(largest / scale, 1e-9),
            annot=len(nodes) <= 9,
            fmt=".0f" if largest / scale >= 100 else ".1f",
            cmap="rocket_r",
            square=True,
            linewidths=0.5,
            xticklabels=[f"{n}\n{regions[n]}" for n in nodes],
            yticklabels=[f"{n} ({regions[n]})" for n in nodes],
            cbar_kws={"label": f"{unit} sent (window)"},
            ax=ax,
        )
        for boundary in region_boundaries(nodes, regions):
            ax.axhline(boundary, color="#1f77b4", linewidth=2.5)
            ax.axvline(boundary, color="#1f77b4", linewidth=2.5)
        ax.set_xlabel("to")
        ax.set_ylabel("from")
        trials = f"mean of {group.trials} trials" if group.trials > 1 else "1 trial"
        ax.set_title(f"{group.label}: bytes per link ({unit}, {trials})")
    fig.suptitle(f"{scenario}: bytes sent per link in the window (blue lines separate regions)")
    return _save(fig, folder, _file(scenario, "links"))


def commit_lag(scenario: str, groups: Sequence[GroupStats], folder: Path) -> str | None:
    series = []
    for group in groups:
        run = group.runs[0]
        series.append((group, run, commit_lag_series(run.record)))
    if not any(points for _, _, points in series):
        return None
    fig, axes = panel_grid(len(series), 7, 3.8)
    for ax, (group, run, points) in zip(axes.flat, series, strict=False):
        title = f"{group.label} (trial {run.summary.trial})"
        if not points:
            _empty(ax, "no samples with a leader")
            ax.set_title(title)
            continue
        data = pd.DataFrame(points, columns=["t", "follower", "lag (entries)"])
        followers = sorted(data["follower"].unique(), key=natural_key)
        colours = sns.color_palette("tab10", max(len(followers), 3))
        for colour, follower in zip(colours, followers, strict=False):
            times, lags = with_gaps(data[data["follower"] == follower])
            ax.plot(times, lags, color=colour, linewidth=1.2, label=follower)
        ax.set_ylim(bottom=min(0, float(data["lag (entries)"].min())))
        if float(data["lag (entries)"].max()) > SYMLOG_ABOVE:
            # a node catching up after a restart trails by thousands: keep the rest readable
            ax.set_yscale("symlog", linthresh=10)
            ax.set_ylabel("lag (entries, log above 10)")
        else:
            ax.set_ylabel("lag (entries)")
        _mark_faults(ax, [run.record])
        ax.set_xlabel("time since the run started (s)")
        ax.set_title(title)
        ax.legend(fontsize=8, title="follower", title_fontsize=8)
    fig.suptitle(f"{scenario}: commit-index lag per follower (leader commit - follower commit)")
    return _save(fig, folder, _file(scenario, "commit-lag"))


PLOTS: tuple[tuple[str, Plot], ...] = (
    ("Latency ECDF", latency_ecdf),
    ("Throughput over time", throughput_over_time),
    ("Unavailability after each fault", unavailability),
    ("Leader CPU and bytes per committed write", leader_costs),
    ("Bytes per link", link_heatmaps),
    ("Commit-index lag per follower", commit_lag),
)


MEAN_NOTE = f" (bar: mean; line: 95% t-interval over trials, none below {MIN_TRIALS}; dots: trials)"


def _trial_points(
    ax: Any, data: pd.DataFrame, x: str, y: str, groups: Sequence[GroupStats], dodge: bool = True
) -> None:
    """Each trial's value as a dot over its bar (the bars are means over trials)."""
    order = [lb for lb in _labels(groups) if (data["label"] == lb).any()]
    sns.stripplot(
        data=data,
        x=x,
        y=y,
        hue="label",
        hue_order=order,
        dodge=dodge,
        palette=dict.fromkeys(order, "#222"),
        size=3,
        jitter=False,
        legend=False,
        ax=ax,
    )


# ---- the ratio chart at the top of the report ---------------------------------------------------

FOREST_ROW = 0.24  # inches per scenario row; each pair of labels beyond the first adds 40%
FOREST_WIDTH = 11.0
RATIO_TICKS = (0.01, 0.1, 0.25, 0.5, 0.8, 1.0, 1.25, 2.0, 4.0, 10.0, 100.0)


def ratio_forest(ratios: Sequence[RatioStats], folder: Path) -> str | None:
    """Every ratio with its 95% interval and its trials: one panel per measure, one row per
    scenario (pairs of labels side by side in the row), log x axis, 1.0 marked."""
    measures = [m for m in METRICS if any(r.estimates[m.key].value for r in ratios)]
    if not measures:
        return None
    scenarios = list(dict.fromkeys(r.scenario for r in ratios))
    pairs = list(dict.fromkeys(r.pair for r in ratios))
    colours = dict(zip(pairs, sns.color_palette("colorblind", max(len(pairs), 3)), strict=False))
    rows = len(scenarios) * (1 + 0.4 * (len(pairs) - 1))
    fig, axes = plt.subplots(
        1,
        len(measures),
        figsize=(FOREST_WIDTH, 1.5 + FOREST_ROW * max(rows, 2.5)),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    step = 0.7 / len(pairs)
    for ax, metric in zip(axes[0], measures, strict=True):
        for ratio in ratios:
            y = (
                scenarios.index(ratio.scenario)
                + (pairs.index(ratio.pair) - (len(pairs) - 1) / 2) * step
            )
            _forest_row(ax, ratio, metric.key, y, colours[ratio.pair])
        ax.axvline(1.0, color="#444", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        _symmetric_limits(ax, ratios, metric.key)
        low, high = ax.get_xlim()
        ticks = [t for t in RATIO_TICKS if low <= t <= high]
        if 2.0 in ticks:  # a wide axis: 0.8x and 1.25x would crowd 1x
            ticks = [t for t in ticks if t not in (0.8, 1.25)]
        ax.set_xticks(ticks)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}x"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda value, _: ""))
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(f"{metric.title}\n({metric.better} is better)", fontsize=9)
        ax.grid(axis="y", color="#eee")
    first = axes[0][0]
    first.set_yticks(range(len(scenarios)), scenarios, fontsize=9)
    first.set_ylim(len(scenarios) - 0.5, -0.5)
    handles = [Line2D([], [], color=colours[p], marker="D", linestyle="-", label=p) for p in pairs]
    handles.append(
        Line2D([], [], color="#666", marker="o", markersize=3, linestyle="", label="trials")
    )
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=9)
    trials = sorted({n for r in ratios for n in r.trials})
    fig.supxlabel(
        f"ratio label / baseline (log scale; bars: 95% interval over trials, none below "
        f"{MIN_TRIALS}; trials per label: {', '.join(map(str, trials))})",
        fontsize=9,
    )
    return _save(fig, folder, "ratios.png")


def _forest_row(ax: Any, ratio: RatioStats, key: str, y: float, colour: Any) -> None:
    estimate = ratio.estimates[key]
    if estimate.value is None or estimate.value <= 0:
        return
    if estimate.low is not None and estimate.high is not None and estimate.low > 0:
        ax.plot([estimate.low, estimate.high], [y, y], color=colour, linewidth=2.2)
    filled = estimate.excludes(1.0)
    ax.plot(
        [estimate.value],
        [y],
        marker="D",
        markersize=6,
        color=colour,
        markerfacecolor=colour if filled else "white",
        linestyle="",
    )
    points = [v for v in ratio.trial_ratios.get(key, []) if v > 0]
    if points:
        ax.plot(points, [y - 0.18] * len(points), "o", markersize=3, color=colour, alpha=0.6)


def _symmetric_limits(ax: Any, ratios: Sequence[RatioStats], key: str) -> None:
    """x limits symmetric around 1.0 on the log scale (0.5x and 2x at equal distances), wide
    enough for every interval and trial point."""
    values = [math.log(1.25)]
    for ratio in ratios:
        estimate = ratio.estimates[key]
        shown = [estimate.value, estimate.low, estimate.high, *ratio.trial_ratios.get(key, [])]
        values += [abs(math.log(v)) for v in shown if v is not None and v > 0]
    reach = max(values) * 1.15
    ax.set_xlim(math.exp(-reach), math.exp(reach))


# ---- helpers ------------------------------------------------------------------------------------


def natural_key(name: str) -> tuple[Any, ...]:
    """n2 before n10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def ordered_nodes(regions: dict[str, str]) -> list[str]:
    """Nodes grouped by region (regions in order of their first node), then by name."""
    first: dict[str, tuple[Any, ...]] = {}
    for node in sorted(regions, key=natural_key):
        first.setdefault(regions[node], natural_key(node))
    return sorted(regions, key=lambda n: (first[regions[n]], natural_key(n)))


def with_gaps(frame: pd.DataFrame, gap: float = 1.5 * SAMPLE_INTERVAL) -> tuple[Any, Any]:
    """(times, lags) with a NaN wherever samples are missing, so the line breaks there
    (no leader, or the follower was down) instead of bridging the hole."""
    ordered = frame.sort_values("t")
    times = ordered["t"].to_numpy(dtype=float)
    lags = ordered["lag (entries)"].to_numpy(dtype=float)
    breaks = np.nonzero(np.diff(times) > gap)[0] + 1
    return np.insert(times, breaks, np.nan), np.insert(lags, breaks, np.nan)


def blend(ax: Any) -> Any:
    """x in axes fraction, y in data units: labels just right of the plot area."""
    return mtransforms.blended_transform_factory(ax.transAxes, ax.transData)


def region_boundaries(nodes: Sequence[str], regions: dict[str, str]) -> list[int]:
    return [i for i in range(1, len(nodes)) if regions[nodes[i]] != regions[nodes[i - 1]]]


def byte_unit(largest: float) -> tuple[float, str]:
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if largest >= scale:
            return float(scale), unit
    return 1.0, "bytes"


def draw_all(
    scenario: str, groups: Sequence[GroupStats], folder: Path
) -> list[tuple[str, str | None]]:
    """Every figure of one scenario: (title, file or None)."""
    return [(title, plot(scenario, groups, folder)) for title, plot in PLOTS]


def runs_of(groups: Sequence[GroupStats]) -> list[RunData]:
    return [run for group in groups for run in group.runs]
