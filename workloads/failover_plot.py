"""The failover timeline figure: one stacked horizontal bar per label, per scenario.

Each bar is the mean timeline of a label (`workloads.failover.mean_milestones`): its segments
are the stages from the fault (x = 0) to the rate being back at 50%, so the reader sees which
stage makes one label slower than another. Every fault's own milestones are drawn as dots on
the bar, so a mean pulled by one slow trial shows as such. A stage whose mean comes out
negative (the rate measure has 100 ms bins, so it can land before the first acknowledgement)
is drawn with no width.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from workloads.failover import STAGES, Timeline, mean_milestones

DPI = 100
COLOURS = ("#bdbdbd", "#9ecae1", "#3182bd", "#fd8d3c", "#e6550d", "#a1d99b", "#31a354")


def draw_failover_timeline(
    scenario: str, groups: Mapping[str, Sequence[Timeline]], path: Path
) -> Path | None:
    """Draw `scenario`'s timelines (label -> its faults' timelines) into `path` (PNG).

    Returns the path, or None when no label has a timeline to draw.
    """
    labels = [label for label, lines in groups.items() if lines]
    if not labels:
        return None
    fig, ax = plt.subplots(figsize=(9, 0.9 * len(labels) + 1.6), dpi=DPI)
    for row, label in enumerate(labels):
        lines = groups[label]
        means = mean_milestones(lines)
        left = 0.0
        for (name, stage), colour in zip(STAGES, COLOURS, strict=True):
            end = means[name]
            if end is None:
                continue
            width = max(0.0, end - left)
            ax.barh(
                row,
                width,
                left=left,
                color=colour,
                edgecolor="white",
                height=0.5,
                label=stage if row == 0 else None,
            )
            left = max(left, end)
        for i, line in enumerate(lines):
            offset = (i - (len(lines) - 1) / 2) * 0.08 / max(1, len(lines) - 1) * 2
            for (name, _), colour in zip(STAGES, COLOURS, strict=True):
                value = line.milestone(name)
                if value is not None:
                    ax.plot(value, row + offset, "o", ms=3.5, color=colour, mec="black", mew=0.5)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("seconds after the fault (bars: mean; dots: each fault)")
    ax.set_title(f"{scenario}: failover timeline")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
