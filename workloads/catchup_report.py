"""The report's "Catch-up" section (scenarios that add members: add-node, replace-node,
bootstrap): per label and newcomer, the catch-up time, what it received and from whom, and the
primary's CPU and egress during catch-up against the same length of time before the add, each
a mean over trials with its 95% interval (`workloads.intervals`). `workloads.catchup` defines
every figure; a target that cannot change membership (etcd) gets a line saying why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workloads.aggregate import GroupStats
from workloads.catchup import CatchUp, catch_ups, skipped_reason
from workloads.intervals import Estimate, mean_interval
from workloads.report_doc import Document, Heading, Paragraph, Table

MB = 1e6
DEFINITIONS = (
    "Catch-up time: from the add (the request at the leader) until the newcomer has applied "
    "the configuration entry that added it, i.e. everything committed before the add. It "
    "joins as a learner and is promoted afterwards, so the window holds no vote of its own. "
    "Received: peer bytes into the newcomer during catch-up; served by: the sender of most "
    "of them (trials that agree / trials). Entries: applied beyond the snapshot it installed "
    "(snapshot index: what came as a snapshot; 0: none). Primary: the leader at the add; "
    "its CPU (seconds per second) and peer egress (MB/s) during catch-up, read at both ends, "
    "against the same length of time just before the add, from the 100 ms time series. "
    "Means over trials with 95% intervals (Student t); the simulator has no CPU (n/a)."
)


@dataclass(frozen=True, slots=True)
class NewcomerStats:
    """One label's catch-ups of one newcomer, over trials."""

    label: str
    node: str
    trials: int
    caught: int  # trials in which it caught up
    seconds: Estimate
    received: Estimate  # bytes
    entries: Estimate
    snapshot_index: Estimate
    served_by: list[tuple[str, int]]  # (member, trials), most first
    cpu_before: Estimate
    cpu_during: Estimate
    egress_before: Estimate  # bytes/s
    egress_during: Estimate
    extra_egress: Estimate

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "node": self.node,
            "trials": self.trials,
            "caught_up": self.caught,
            "seconds": self.seconds.to_dict(),
            "received_bytes": self.received.to_dict(),
            "entries": self.entries.to_dict(),
            "snapshot_index": self.snapshot_index.to_dict(),
            "served_by": dict(self.served_by),
            "primary_cpu_before": self.cpu_before.to_dict(),
            "primary_cpu_during": self.cpu_during.to_dict(),
            "primary_egress_before": self.egress_before.to_dict(),
            "primary_egress_during": self.egress_during.to_dict(),
            "primary_extra_egress": self.extra_egress.to_dict(),
        }


def newcomer_stats(groups: Sequence[GroupStats]) -> list[NewcomerStats]:
    """Per label and newcomer (in the order they were added), over the label's trials."""
    out = []
    for group in groups:
        per_node: dict[str, list[CatchUp]] = {}
        for run in group.runs:
            record = run.record
            for catch_up in catch_ups(record.metadata, record.timeseries):
                per_node.setdefault(catch_up.node, []).append(catch_up)
        for node, found in per_node.items():
            out.append(_stats(group.label, node, len(group.runs), found))
    return out


def _stats(label: str, node: str, trials: int, found: list[CatchUp]) -> NewcomerStats:
    caught = [c for c in found if c.caught_up]

    def mean(values: list[float | None]) -> Estimate:
        return mean_interval([v for v in values if v is not None])

    served = Counter(c.served_by for c in caught if c.served_by is not None)
    return NewcomerStats(
        label=label,
        node=node,
        trials=trials,
        caught=len(caught),
        seconds=mean([c.seconds for c in caught]),
        received=mean([float(c.bytes_received) for c in caught]),
        entries=mean([float(c.entries) for c in caught]),
        snapshot_index=mean([float(c.snapshot_index) for c in caught]),
        served_by=sorted(served.items(), key=lambda item: (-item[1], item[0])),
        cpu_before=mean([c.primary_cpu_before for c in found]),
        cpu_during=mean([c.primary_cpu_during for c in found]),
        egress_before=mean([c.primary_egress_before for c in found]),
        egress_during=mean([c.primary_egress_during for c in found]),
        extra_egress=mean([c.extra_egress for c in found]),
    )


def not_runnable(groups: Sequence[GroupStats]) -> dict[str, str]:
    """Labels whose target skipped the membership actions -> the reason it gave."""
    out = {}
    for group in groups:
        for run in group.runs:
            reason = skipped_reason(run.record.faults)
            if reason is not None:
                out[group.label] = reason
                break
    return out


def wants_catchup_section(groups: Sequence[GroupStats]) -> bool:
    return bool(newcomer_stats(groups) or not_runnable(groups))


def catchup_section(doc: Document, groups: Sequence[GroupStats]) -> None:
    if not wants_catchup_section(groups):
        return
    doc.add(Heading(3, "Catch-up"))
    doc.add(Paragraph(DEFINITIONS))
    stats = newcomer_stats(groups)
    if stats:
        doc.add(
            Table(
                (
                    "label",
                    "newcomer",
                    "caught up",
                    "catch-up (s)",
                    "received (MB)",
                    "entries after snapshot",
                    "snapshot index",
                    "served by",
                    "primary CPU before / during (s/s)",
                    "primary egress before / during (MB/s)",
                    "primary extra egress (MB/s)",
                ),
                tuple(_row(s) for s in stats),
                tuple(s.caught < s.trials for s in stats),
            )
        )
    for label, reason in not_runnable(groups).items():
        doc.add(Paragraph(f"{label}: {reason}."))


def _row(stats: NewcomerStats) -> tuple[str, ...]:
    return (
        stats.label,
        stats.node,
        f"{stats.caught}/{stats.trials}",
        estimate_text(stats.seconds),
        estimate_text(stats.received, 1 / MB),
        estimate_text(stats.entries),
        estimate_text(stats.snapshot_index),
        served_text(stats),
        f"{estimate_text(stats.cpu_before)} / {estimate_text(stats.cpu_during)}",
        f"{estimate_text(stats.egress_before, 1 / MB)} / "
        f"{estimate_text(stats.egress_during, 1 / MB)}",
        estimate_text(stats.extra_egress, 1 / MB),
    )


def served_text(stats: NewcomerStats) -> str:
    if not stats.served_by:
        return "n/a"
    return ", ".join(f"{node} ({count}/{stats.caught})" for node, count in stats.served_by)


def estimate_text(estimate: Estimate, scale: float = 1.0) -> str:
    """`0.412 [0.30, 0.52]`; the value alone below 3 trials; n/a without data."""
    if estimate.value is None:
        return "n/a"
    text = _number(estimate.value * scale)
    if estimate.low is not None and estimate.high is not None:
        text += f" [{_number(estimate.low * scale)}, {_number(estimate.high * scale)}]"
    return text


def _number(value: float) -> str:
    if value == 0 or abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def catchup_lines(groups: Sequence[GroupStats]) -> list[str]:
    """One terminal line per label and newcomer, and one per label that could not run it."""
    lines = []
    for stats in newcomer_stats(groups):
        lines.append(
            f"{stats.label} {stats.node}: caught up {stats.caught}/{stats.trials}, "
            f"{estimate_text(stats.seconds)} s, served by {served_text(stats)}, "
            f"primary egress {estimate_text(stats.egress_before, 1 / MB)} -> "
            f"{estimate_text(stats.egress_during, 1 / MB)} MB/s, CPU "
            f"{estimate_text(stats.cpu_before)} -> {estimate_text(stats.cpu_during)} s/s"
        )
    for label, reason in not_runnable(groups).items():
        lines.append(f"{label}: {reason}")
    return lines


def catchup_summary(groups: Sequence[GroupStats]) -> list[dict[str, Any]]:
    """summary.json's entries: every label and newcomer, and the labels that could not run."""
    out = [{"scenario": _scenario(groups), **s.to_dict()} for s in newcomer_stats(groups)]
    out += [
        {"scenario": _scenario(groups), "label": label, "not_runnable": reason}
        for label, reason in not_runnable(groups).items()
    ]
    return out


def _scenario(groups: Sequence[GroupStats]) -> str:
    return groups[0].scenario if groups else ""


__all__ = [
    "NewcomerStats",
    "catchup_lines",
    "catchup_section",
    "catchup_summary",
    "newcomer_stats",
    "not_runnable",
    "wants_catchup_section",
]
