"""`raftbench sim`: many seeded simulations of one protocol under faults."""

from __future__ import annotations

import argparse
import os
import sys
import time

from cluster.sim.nemesis import FAULT_MODES
from cluster.sim.simulator import SimConfig
from protocols.config import SyncSettings
from protocols.engines import ENGINES
from raftbench.commands.argtypes import positive_float, positive_int
from workloads.sim_runner import replay_command, run_seeds, seed_configs


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run seeded simulations under faults and check safety and linearizability",
        description="Run N seeded simulations; print one line per failing seed and a summary.",
    )
    parser.add_argument("--protocol", required=True, choices=sorted(ENGINES))
    parser.add_argument("--seeds", type=positive_int, default=100)
    parser.add_argument("--start-seed", type=int, default=0)
    parser.add_argument("--nodes", type=positive_int, default=5)
    parser.add_argument("--duration", type=positive_float, default=10.0, help="virtual seconds")
    parser.add_argument("--faults", choices=FAULT_MODES, default="all")
    parser.add_argument("--clients", type=positive_int, default=5)
    parser.add_argument(
        "--sync-policy",
        choices=SyncSettings.POLICIES,
        default="nearest",
        help="pull only: sync-source policy (fixed uses a binary tree rooted at n1)",
    )
    parser.add_argument(
        "--snapshot-entries",
        type=int,
        default=0,
        metavar="N",
        help="snapshot and compact the log every N applied entries (0: off)",
    )
    parser.add_argument(
        "--snapshot-bytes",
        type=int,
        default=0,
        metavar="B",
        help="snapshot once the log holds B payload bytes (0: off)",
    )
    parser.add_argument(
        "--snapshot-chunk-bytes",
        type=positive_int,
        default=None,
        metavar="B",
        help="bytes per snapshot chunk (default: the engine's)",
    )
    parser.add_argument(
        "--max-pullers",
        type=positive_int,
        default=SyncSettings().max_pullers,
        help="pull, spread: members one source serves before it refuses more (default 2)",
    )
    parser.add_argument(
        "--trace", type=int, default=0, metavar="N", help="dump the last N events of failing seeds"
    )
    parser.add_argument("--budget", type=positive_float, default=10.0, help="checker budget (s)")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        metavar="N",
        help=f"simulate seeds in N processes (this machine has {os.cpu_count()} cores)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per seed")
    parser.set_defaults(handler=run)


def sync_settings(policy: str, nodes: int, max_pullers: int = 2) -> SyncSettings:
    """The policy's settings; `fixed` gets a binary tree rooted at n1 (n2, n3 <- n1, ...)."""
    tree = tuple((f"n{i}", f"n{i // 2}") for i in range(2, nodes + 1)) if policy == "fixed" else ()
    return SyncSettings(policy=policy, fixed_tree=tree, max_pullers=max_pullers)


def _overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {
        "sync": sync_settings(args.sync_policy, args.nodes, args.max_pullers)
    }
    if args.snapshot_entries < 0 or args.snapshot_bytes < 0:
        raise SystemExit("raftbench sim: --snapshot-entries/--snapshot-bytes must be >= 0")
    overrides["snapshot_entries"] = args.snapshot_entries
    overrides["snapshot_bytes"] = args.snapshot_bytes
    if args.snapshot_chunk_bytes is not None:
        overrides["snapshot_chunk_bytes"] = args.snapshot_chunk_bytes
    return overrides


def run(args: argparse.Namespace) -> int:
    base = SimConfig(
        protocol=args.protocol,
        nodes=args.nodes,
        duration=args.duration,
        faults=args.faults,
        clients=args.clients,
        trace=args.trace,
        count_bytes=False,  # this command judges safety; scenarios measure bytes
        config_overrides=_overrides(args),
    )
    violations = nonlinearizable = 0
    virtual = sim_wall = sim_cpu = 0.0
    ops = changes = 0
    started = time.perf_counter()
    configs = seed_configs(base, args.seeds, args.start_seed)
    for config, result in zip(configs, run_seeds(configs, args.budget, args.jobs), strict=True):
        virtual += result.virtual_seconds
        sim_wall += result.wall_seconds
        sim_cpu += result.cpu_seconds
        ops += result.ops_ok + result.ops_fail
        changes += result.config_changes
        violations += len(result.violations)
        nonlinearizable += result.verdict != "linearizable"
        if args.verbose or result.failed:
            print(
                f"seed={result.seed} violations={len(result.violations)} "
                f"history={result.verdict} ops={result.ops_ok + result.ops_fail} "
                f"unknown={result.ops_unknown} elections={result.elections} "
                f"crashes={result.crashes} changes={result.config_changes} "
                f"events={result.events} digest={result.digest}"
            )
        if result.failed:
            for violation in result.violations[:5]:
                print(f"  violation: {violation}")
            if result.verdict != "linearizable":
                print(f"  history: {result.verdict}: {result.check_detail}")
            print(f"  replay: {replay_command(config)}")
            if result.trace:
                print(result.trace)
        sys.stdout.flush()
    wall = time.perf_counter() - started
    print(
        f"# {args.seeds} seeds in {wall:.1f} wall s with {args.jobs} job(s): "
        f"{args.seeds / wall:.2f} seeds/s, {args.seeds * args.duration / wall:.1f}x real time "
        f"end to end (simulation and checking); {ops} client operations completed"
        + (f", {changes} membership changes committed" if changes else "")
    )
    print(
        f"# per core, simulation alone: {virtual:.0f} virtual s in {sim_wall:.1f} wall s = "
        f"{virtual / max(sim_wall, 1e-9):.1f} virtual s per wall s "
        f"({virtual / max(sim_cpu, 1e-9):.1f} per CPU s)"
    )
    print(f"seeds={args.seeds} violations={violations} nonlinearizable={nonlinearizable}")
    return 1 if violations or nonlinearizable else 0
