"""Run scenarios: one trial into a results folder, or an interleaved push/pull comparison.

Trials of a comparison are interleaved (push, pull, push, pull, ...) so that slow drift of the
machine (thermal, background load, page cache) hits every protocol alike; trial t of every
label uses the same seed, so the simulator gives them the same workload.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.ssh import HostPool
from workloads.results import RunRecord, run_name, write_run
from workloads.scenario import Scenario, ScenarioError, parse_protocol_label
from workloads.summary import RunSummary, save_summary, summarize

ENGINES = ("real", "sim")


@dataclass(slots=True)
class TrialResult:
    label: str
    trial: int
    folder: Path
    summary: RunSummary


def command_line(argv: Sequence[str] | None = None) -> str:
    """The exact command that is running, for metadata and reports."""
    args = list(sys.argv if argv is None else argv)
    if args:
        args[0] = "raftbench"
    return shlex.join(args)


def run_trial(
    scenario: Scenario,
    label: str,
    engine: str,
    seed: int,
    trial: int,
    results_dir: Path,
    command: str,
    *,
    netns: bool = False,
    compress: bool = True,
    progress: Callable[[str], None] | None = None,
    etcd_binary: Path | None = None,
    hosts: HostPool | None = None,
) -> TrialResult:
    """Run one trial of `scenario` under `label` (push, pull, pull:<policy>, etcd) and save
    it. `etcd_binary`: the etcd to run for label etcd (default: the extra's, else PATH).
    `hosts`: run the nodes on these SSH hosts (real engine)."""
    if hosts is not None and engine != "real":
        raise ScenarioError("--hosts", "runs on the real engine only (--engine real)")
    protocol, policy = parse_protocol_label(label)
    record: RunRecord
    if engine == "sim" and protocol == "etcd":
        raise ScenarioError("--protocols", "etcd runs on the real engine only (--engine real)")
    if engine == "sim":
        from workloads.sim_driver import run_sim  # noqa: PLC0415

        record = run_sim(scenario, protocol, policy, seed, trial, label, command)
    elif engine == "real":
        from workloads.real_driver import run_real  # noqa: PLC0415

        record = run_real(
            scenario,
            protocol,
            policy,
            seed,
            trial,
            label,
            command,
            netns=netns,
            progress=progress,
            calibration=results_dir / "calibration.json",
            etcd_binary=etcd_binary,
            hosts=hosts,
        )
    else:
        raise ValueError(f"--engine: unknown engine {engine!r} ({', '.join(ENGINES)})")
    folder = write_run(record, results_dir, run_name(scenario.name, label, trial), compress)
    summary = summarize(record, run=folder.name)
    save_summary(summary, folder)
    return TrialResult(label, trial, folder, summary)


def compare_order(labels: Sequence[str], trials: int) -> list[tuple[int, str]]:
    """(trial, label) in the order to run them: interleaved."""
    return [(trial, label) for trial in range(trials) for label in labels]
