"""`raftbench node`: run one cluster member in this process (see cluster.node)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cluster.config import ConfigError, load_cluster_config
from cluster.node import EXIT_START, NodeOptions, main
from cluster.storage import FsyncPolicy
from protocols.engines import ENGINES


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
    parser.add_argument("--seed", type=int, help="seed of the node's randomness (default: OS)")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s {args.id} %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_cluster_config(args.config)
        config.member(args.id)
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
    )
    return main(options)
