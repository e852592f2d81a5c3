"""Failover timelines: where the time goes between a fault and the rate being back.

For every scored fault of a run (see `workloads.summary`), the milestones below are read from
the engines' protocol events (`events.jsonl`, protocols/events.py), the operations and the
fault record, as seconds after the fault:

``last contact``   when the first candidate last heard from a leader (often a little before
                   the fault is recorded, or after it when the fault takes time to land);
``candidate``      the first election start (pre-vote or real) by a node other than the old
                   leader, for a term above the one that led at the fault;
``elected``        the first node to win such a term;
``catch-up end``   pull only: the new primary wrote its no-op (push: = elected);
``committed``      the new leader committed the first entry of its term;
``first ack``      the first write acknowledged after that commit;
``rate back``      the unavailability window of `workloads.summary` (rate >= 50% again).

The stages are the gaps between consecutive known milestones (`STAGES`): the fault landing
(up to the last contact, when that comes after the fault was recorded: a kill or a partition
that takes the runtime a while to apply), the election timer, the vote, catch-up, the first
commit, clients reaching the new leader, and the rate filling up. In the simulator every time
is exact virtual time, so the protocol's own delays can be told apart from the runtime's. Runs
made before events were recorded keep only the rate milestone. `failover_section` renders the
per-label means as Markdown for the report; `workloads.failover_plot.draw_failover_timeline`
draws them.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workloads.intervals import ratio_interval
from workloads.results import RunRecord, read_run
from workloads.run_series import measured_window
from workloads.summary import fault_impacts

ELECTION_STARTS = ("pre-vote", "candidate")
WRITES = ("write", "cas", "delete")

# (milestone attribute, stage name ending there), in timeline order.
STAGES: tuple[tuple[str, str], ...] = (
    ("landed", "fault lands"),
    ("candidate", "election timer"),
    ("elected", "vote"),
    ("catchup_end", "catch-up"),
    ("committed", "first commit"),
    ("first_ack", "clients reach leader"),
    ("rate_back", "rate to 50%"),
)
MILESTONES = tuple(name for name, _ in STAGES)


@dataclass(frozen=True, slots=True)
class Timeline:
    """One fault's milestones, in seconds after the fault (None: not seen)."""

    scenario: str
    label: str
    trial: int
    fault_t: float
    fault_kind: str
    old_leader: str | None
    new_leader: str | None
    new_term: int | None
    last_contact: float | None
    candidate: float | None
    elected: float | None
    catchup_start: float | None
    catchup_end: float | None
    committed: float | None
    first_ack: float | None
    rate_back: float | None
    recovered: bool

    def milestone(self, name: str) -> float | None:
        value: float | None = getattr(self, name)
        return value

    def stages(self) -> dict[str, float | None]:
        """Each stage's length: from the previous known milestone (or the fault) to its own.
        A milestone reached before the one ahead of it (the rate never fell below 50%: its
        score is 0) makes its stage 0 long, never negative."""
        out: dict[str, float | None] = {}
        previous = 0.0
        for name, stage in STAGES:
            value = self.milestone(name)
            if value is None:
                out[stage] = None
                continue
            out[stage] = max(0.0, value - previous)
            previous = max(previous, value)
        return out

    @property
    def landed(self) -> float | None:
        """When the fault took effect as the first candidate saw it (never before the fault)."""
        return None if self.last_contact is None else max(0.0, self.last_contact)

    @property
    def back_after_landing(self) -> float | None:
        """Time to 50% rate counted from when the fault took effect rather than from when the
        driver started applying it: a partition told to the nodes over HTTP lands up to a
        second or more later on a loaded machine, a delay of the runtime, not of either
        protocol (targets without events, such as etcd, count from the fault)."""
        if self.rate_back is None:
            return None
        return max(0.0, self.rate_back - (self.landed or 0.0))

    @property
    def catchup(self) -> float | None:
        """The catch-up stage alone (pull), from election won to the no-op."""
        if self.catchup_end is None or self.elected is None:
            return None
        return self.catchup_end - self.elected


def timelines(record: RunRecord) -> list[Timeline]:
    """The timeline of every scored fault of one run."""
    meta = record.metadata
    window = measured_window(record)
    impacts = fault_impacts(record, window)
    events = sorted(record.events, key=lambda e: float(e["t"]))
    later_faults = sorted(f.t for f in record.faults)
    out = []
    for impact in impacts:
        t0 = impact.t
        until = next((t for t in later_faults if t > t0), math.inf)
        old_term, old_leader = _leader_at(record, events, t0)
        out.append(
            _one(
                meta,
                record,
                events,
                t0,
                until,
                old_term,
                old_leader,
                impact.kind,
                impact.unavailable,
                impact.recovered,
            )
        )
    return out


def _one(
    meta: Mapping[str, Any],
    record: RunRecord,
    events: Sequence[Mapping[str, Any]],
    t0: float,
    until: float,
    old_term: int,
    old_leader: str | None,
    kind: str,
    unavailable: float | None,
    recovered: bool,
) -> Timeline:
    window = [e for e in events if t0 <= float(e["t"]) < until and int(e["term"]) > old_term]
    won = next((e for e in window if e["kind"] == "elected"), None)
    horizon = float(won["t"]) if won is not None else until
    start = next(
        (
            e
            for e in window
            if e["kind"] in ELECTION_STARTS and e["node"] != old_leader and float(e["t"]) <= horizon
        ),
        None,
    )
    mine = [
        e
        for e in window
        if won is not None and e["node"] == won["node"] and e["term"] == won["term"]
    ]
    catchup_start = _first(mine, "catchup-start")
    catchup_end = _first(mine, "catchup-end")
    committed = _first(mine, "term-committed")
    after = committed if committed is not None else (float(won["t"]) if won else None)
    first_ack = None
    if after is not None:
        acks = [
            op.complete
            for op in record.ops
            if op.f in WRITES
            and op.outcome == "ok"
            and op.complete is not None
            and after <= op.complete < until
        ]
        first_ack = min(acks) if acks else None
    contact = start.get("last_contact") if start is not None else None
    elected = float(won["t"]) if won is not None else None
    return Timeline(
        scenario=str(meta.get("scenario", "")),
        label=str(meta.get("label", "")),
        trial=int(meta.get("trial", 0)),
        fault_t=t0,
        fault_kind=kind,
        old_leader=old_leader,
        new_leader=str(won["node"]) if won is not None else None,
        new_term=int(won["term"]) if won is not None else None,
        last_contact=_rel(contact, t0),
        candidate=_rel(start["t"] if start is not None else None, t0),
        elected=_rel(elected, t0),
        catchup_start=_rel(catchup_start, t0),
        # Push has no catch-up: its no-op goes out as it wins.
        catchup_end=_rel(catchup_end if catchup_start is not None else elected, t0),
        committed=_rel(committed, t0),
        first_ack=_rel(first_ack, t0),
        rate_back=unavailable,
        recovered=recovered,
    )


def _first(events: Iterable[Mapping[str, Any]], kind: str) -> float | None:
    return next((float(e["t"]) for e in events if e["kind"] == kind), None)


def _rel(t: Any, t0: float) -> float | None:
    return None if t is None else float(t) - t0


def _leader_at(
    record: RunRecord, events: Sequence[Mapping[str, Any]], t: float
) -> tuple[int, str | None]:
    """(term, node) of the newest leader before `t`: from the events, else the samples."""
    best: tuple[int, str | None] = (0, None)
    for event in events:
        if float(event["t"]) > t:
            break
        if event["kind"] == "elected" and int(event["term"]) >= best[0]:
            best = (int(event["term"]), str(event["node"]))
    for row in record.timeseries:
        term = row.get("term")
        if (
            float(row["t"]) <= t
            and row.get("up")
            and row.get("role") == "leader"
            and isinstance(term, int)
            and term > best[0]
        ):
            best = (term, str(row["node"]))
    return best


# ---- across trials --------------------------------------------------------------------------


def by_label(records: Iterable[RunRecord]) -> dict[tuple[str, str], list[Timeline]]:
    """Timelines grouped by (scenario, label), in reading order (push first)."""
    groups: dict[tuple[str, str], list[Timeline]] = {}
    for record in records:
        for line in timelines(record):
            groups.setdefault((line.scenario, line.label), []).append(line)
    return dict(sorted(groups.items(), key=lambda item: (item[0][0], _label_rank(item[0][1]))))


def _label_rank(label: str) -> tuple[int, str]:
    return (0, "") if label == "push" else ((1, "") if label == "pull" else (2, label))


def mean_milestones(lines: Sequence[Timeline]) -> dict[str, float | None]:
    """The mean of each milestone over the timelines that reached it."""
    out: dict[str, float | None] = {}
    for name in ("last_contact", *MILESTONES):
        values = [v for line in lines if (v := line.milestone(name)) is not None]
        out[name] = float(np.mean(values)) if values else None
    return out


def mean_stages(lines: Sequence[Timeline]) -> dict[str, float | None]:
    """The mean length of each stage over the timelines that have it."""
    out: dict[str, float | None] = {}
    for _, stage in STAGES:
        values = [v for line in lines if (v := line.stages()[stage]) is not None]
        out[stage] = float(np.mean(values)) if values else None
    return out


def per_trial_rate_back(lines: Sequence[Timeline], *, from_landing: bool = False) -> list[float]:
    """Each trial's mean time to 50% rate over its faults (`from_landing`: counted from when
    the fault took effect): the units an interval is taken over (trials are independent;
    faults of one trial are not)."""
    trials: dict[int, list[float]] = {}
    for line in lines:
        value = line.back_after_landing if from_landing else line.rate_back
        if value is not None:
            trials.setdefault(line.trial, []).append(value)
    return [float(np.mean(values)) for _, values in sorted(trials.items())]


def failover_section(records: Iterable[RunRecord], figure: str | None = None) -> str:
    """Markdown: per scenario, each label's mean stages, the catch-up median and the ratio of
    time to 50% against push with a 95% log-scale t-interval over per-trial means. Empty when no
    run has a scored fault."""
    groups = by_label(records)
    if not groups:
        return ""
    lines = [
        "## Failover timeline",
        "",
        "Seconds after each fault (mean over faults; stages end at the milestone named in "
        "`workloads/failover.py`). Catch-up is pull's new primary learning a majority's "
        "positions and writing its no-op.",
        "",
    ]
    if figure:
        lines += [f"![failover timeline]({figure})", ""]
    stage_names = [stage for _, stage in STAGES]
    lines.append(
        "| scenario | label | faults | "
        + " | ".join(stage_names)
        + " | to 50% | ratio | landed to 50% | ratio |"
    )
    lines.append("|" + "---|" * (len(stage_names) + 7))
    for (scenario, label), group in groups.items():
        stages = mean_stages(group)
        cells = [_fmt(stages[name]) for name in stage_names]
        baseline = groups.get((scenario, "push"))
        for from_landing in (False, True):
            back = per_trial_rate_back(group, from_landing=from_landing)
            ratio = ""
            if baseline is not None and label != "push":
                base = per_trial_rate_back(baseline, from_landing=from_landing)
                if back and base:
                    est = ratio_interval(back, base, "trials")
                    ratio = _fmt_ratio(est.value, est.low, est.high)
            cells += [_fmt(float(np.mean(back))) if back else "-", ratio]
        lines.append(f"| {scenario} | {label} | {len(group)} | " + " | ".join(cells) + " |")
    catchups = {
        key: [c for line in group if (c := line.catchup) is not None]
        for key, group in groups.items()
    }
    medians = [
        f"{scenario} {label}: {np.median(values) * 1000:.1f} ms"
        for (scenario, label), values in catchups.items()
        if values and label != "push"
    ]
    if medians:
        lines += ["", "Catch-up stage, median: " + "; ".join(medians) + "."]
    return "\n".join(lines) + "\n"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _fmt_ratio(value: float | None, low: float | None, high: float | None) -> str:
    if value is None:
        return "-"
    if low is None or high is None:
        return f"{value:.2f}x"
    return f"{value:.2f}x [{low:.2f}, {high:.2f}]"


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m workloads.failover RUN_FOLDER...`: print the timeline table and each fault."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args(argv)
    records = [read_run(folder) for folder in args.folders]
    print(failover_section(records))
    for (scenario, label), group in by_label(records).items():
        for line in group:
            parts = [f"{name}={_fmt(line.milestone(name))}" for name in MILESTONES]
            print(
                f"{scenario} {label} t{line.trial}: last_contact={_fmt(line.last_contact)} "
                + " ".join(parts)
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
