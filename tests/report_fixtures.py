"""Synthetic run folders for the report tests: three labels (push, pull, etcd), three trials
each, with differences between labels far larger than between trials, so that every ratio's
interval excludes 1.0 in a known direction.

Per label (relative to push): latency x1.3 for pull and x0.8 for etcd; leader CPU per write
x1.5 for pull and x0.5 for etcd; the same schedule of operations (same throughput). Trial t
scales latency by 1 + 0.02 t.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from run_builder import CRASH_NODES, Spec, crash_spec, latency_of, make_record

from workloads.results import write_run

LATENCY = {"push": 1.0, "pull": 1.3, "etcd": 0.8}
CPU = {"push": 1.0, "pull": 1.5, "etcd": 0.5}
TRIALS = 3


def scaled(factor: float) -> Callable[[int], float]:
    def latency(i: int) -> float:
        return latency_of(i) * factor

    return latency


def nodes_for(label: str, trial: int) -> dict[str, dict[str, Any]]:
    """The leader-crash node table with every node's CPU time scaled for `label`."""
    nodes: dict[str, dict[str, Any]] = {}
    for node, info in CRASH_NODES.items():
        cpu = float(str(info["cpu_seconds"])) * CPU[label] * (1 + 0.01 * trial)
        nodes[node] = {**info, "cpu_seconds": cpu}
    return nodes


def write_three_labels(results: Path, scenarios: tuple[str, ...] = ("steady",)) -> list[Path]:
    """`TRIALS` runs of push, pull and etcd for each scenario; returns the run folders."""
    folders = []
    for scenario in scenarios:
        for label, slowdown in LATENCY.items():
            for trial in range(TRIALS):
                factor = slowdown * (1 + 0.02 * trial)
                spec = crash_spec(
                    scenario=scenario,
                    label=label,
                    trial=trial,
                    count=1200,
                    latency=scaled(factor),
                    nodes=nodes_for(label, trial),
                )
                name = f"{scenario}-{label}-t{trial}"
                folders.append(write_run(make_record(spec), results, name))
    return folders


def write_two_trials(results: Path) -> list[Path]:
    """push and pull, two trials each: too few for an interval."""
    return [
        write_run(make_record(Spec(scenario="few", label=label, trial=t)), results, f"{label}{t}")
        for label in ("push", "pull")
        for t in range(2)
    ]
