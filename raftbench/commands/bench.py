"""`raftbench bench`: W=1 and W=64 closed-loop writes and idle CPU for push, pull and etcd, in
one interleaved run, with the ratios to etcd (see `workloads.bench`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from raftbench.commands.argtypes import non_negative_float, positive_float, positive_int
from raftbench.commands.run import _labels
from workloads.bench import BenchSettings, Block, format_table, profile_name, run_bench, to_json
from workloads.profiling import (
    ProfilerError,
    find_py_spy,
    format_shares,
    format_stages,
    stage_shares,
    summarise,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="the node's own cost against etcd: W=1 and W=64 writes, CPU per write, idle CPU",
        description="Start a fresh local cluster per label and round (rotated order), measure "
        "its idle CPU, then one and then many closed-loop writers; print writes/s, p50, p99, "
        "server CPU per acknowledged write, the load generators' CPU share and, per round, "
        "the ratios to etcd.",
    )
    parser.add_argument(
        "--protocols",
        type=_labels,
        default=["push", "pull", "etcd"],
        help="labels to measure, comma-separated (default: push,pull,etcd)",
    )
    parser.add_argument("--rounds", type=positive_int, default=3, help="interleaved rounds")
    parser.add_argument("--nodes", type=positive_int, default=3)
    parser.add_argument("--value-size", type=positive_int, default=100, help="bytes per value")
    parser.add_argument("--duration", type=positive_float, default=5.0, help="s per phase")
    parser.add_argument("--warmup", type=non_negative_float, default=1.0, help="s per phase")
    parser.add_argument("--idle", type=positive_float, default=3.0, help="s of idle CPU")
    parser.add_argument(
        "--widths",
        type=positive_int,
        nargs="+",
        default=[1, 64],
        help="closed-loop writers of each phase (default: 1 64)",
    )
    parser.add_argument(
        "--processes", type=positive_int, default=2, help="generator processes per wide phase"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--etcd-binary",
        type=Path,
        help="the etcd to run (default: the [etcd] extra's, else etcd on PATH)",
    )
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="sample each raftbench leader with py-spy during every phase; collapsed stacks "
        "and a per-function summary go to DIR (needs the [profile] extra)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = BenchSettings(
        labels=tuple(args.protocols),
        rounds=args.rounds,
        nodes=args.nodes,
        value_size=args.value_size,
        idle=args.idle,
        warmup=args.warmup,
        duration=args.duration,
        widths=tuple(args.widths),
        processes=args.processes,
        seed=args.seed,
        etcd_binary=args.etcd_binary,
        profile_dir=args.profile,
    )
    if args.profile is not None:
        try:
            find_py_spy()
        except ProfilerError as error:
            print(f"raftbench bench: error: {error}", file=sys.stderr)
            return 2
    blocks = run_bench(settings, progress=lambda text: print(f"# {text}", file=sys.stderr))
    print(format_table(blocks, settings))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(to_json(blocks, settings), indent=1) + "\n")
        print(f"# written to {args.json}")
    if args.profile is not None:
        _summarise_profiles(args.profile, blocks)
    return 0


def _summarise_profiles(directory: Path, blocks: list[Block]) -> None:
    """Per profile: the top functions (*.top) and the stages of a write (*.stages), with the
    leader's CPU per write split by stage; the stage tables are printed too."""
    for block in blocks:
        for phase in block.phases:
            path = directory / profile_name(block.label, block.round, phase.width)
            if not path.exists():
                continue
            path.with_suffix(".top").write_text(format_shares(summarise(path)) + "\n")
            stages = format_stages(stage_shares(path), phase.leader_cpu_per_write_ms)
            path.with_suffix(".stages").write_text(stages + "\n")
            print(
                f"\n{block.label}, round {block.round + 1}, W={phase.width}: leader CPU "
                f"{phase.leader_cpu_per_write_ms:.3f} ms per write, by stage\n{stages}"
            )
    print(f"# profiles (collapsed stacks *.txt, *.top, *.stages) in {directory}")
