"""`raftbench node`: run one cluster member in this process (see cluster.node)."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from cluster.config import ClusterConfig, ConfigError, load_cluster_config
from cluster.node import EXIT_START, NodeOptions, main
from cluster.storage import FsyncPolicy
from protocols.config import SyncSettings
from protocols.engines import ENGINES
from protocols.errors import CallerError
from raftbench.commands.argtypes import positive_int


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "node",
        help="run one node of a cluster (engine, storage, peer transport, HTTP API)",
        description=(
            "Run one member of the cluster described by --config. Prints "
            "'ready <id> peer=<host:port> client=<url>' once listening; SIGTERM or SIGINT "
            "stops it cleanly (exit 0). Exit 1: the node had to stop (invariant, disk); "
            "exit 2: it could not start (configuration, data directory, address in use)."
        ),
    )
    parser.add_argument("--config", required=True, type=Path, help="the cluster.toml file")
    parser.add_argument("--id", required=True, help="this node's member id")
    parser.add_argument("--protocol", required=True, choices=sorted(ENGINES))
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where the log lives (default: data/<id> next to the config file)",
    )
    parser.add_argument(
        "--fsync",
        choices=[p.value for p in FsyncPolicy],
        help="override the cluster file's fsync policy",
    )
    parser.add_argument(
        "--snapshot-entries",
        type=int,
        metavar="N",
        help="override the cluster file: snapshot and compact every N applied entries (0: off)",
    )
    parser.add_argument(
        "--snapshot-bytes",
        type=int,
        metavar="B",
        help="override the cluster file: snapshot once the log holds B payload bytes (0: off)",
    )
    parser.add_argument(
        "--sync-policy",
        choices=SyncSettings.POLICIES,
        help="pull engine: override the cluster file's sync-source policy",
    )
    parser.add_argument(
        "--max-pullers",
        type=positive_int,
        help="pull engine, spread: override the cluster file's sync.max_pullers",
    )
    start = parser.add_mutually_exclusive_group()
    start.add_argument(
        "--bootstrap",
        action="store_const",
        const="bootstrap",
        dest="start_as",
        help="form a cluster of one (this node) that takes the others in by membership changes",
    )
    start.add_argument(
        "--join",
        action="store_const",
        const="join",
        dest="start_as",
        help="start with no configuration and wait to be added by the leader",
    )
    parser.add_argument("--seed", type=int, help="seed of the node's randomness (default: OS)")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    parser.set_defaults(handler=run)


def _with_sync_overrides(
    config: ClusterConfig, policy: str | None, max_pullers: int | None
) -> ClusterConfig:
    """The cluster file's settings with the command line's sync overrides applied.

    A source enforces its own `max_pullers`, so every member should be given the same.
    """
    sync = config.sync
    if policy is not None:
        sync = replace(sync, policy=policy)
    if max_pullers is not None:
        sync = replace(sync, max_pullers=max_pullers)
    try:
        sync.validate(config.member_ids)
    except CallerError as error:
        raise ConfigError(str(error)) from None
    return replace(config, sync=sync)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {args.id} %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_cluster_config(args.config)
        config.member(args.id)
        config = _with_sync_overrides(config, args.sync_policy, args.max_pullers)
    except ConfigError as error:
        print(f"raftbench node: error: {error}", file=sys.stderr)
        return EXIT_START
    data_dir = args.data_dir or args.config.parent / "data" / args.id
    options = NodeOptions(
        config=config,
        node_id=args.id,
        protocol=args.protocol,
        data_dir=data_dir,
        fsync=FsyncPolicy(args.fsync) if args.fsync else None,
        snapshot_entries=args.snapshot_entries,
        snapshot_bytes=args.snapshot_bytes,
        seed=args.seed,
        config_path=args.config,
        start_as=args.start_as,
    )
    return main(options)
