"""The `raftbench` command: one subcommand per module in `raftbench.commands`.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`handler=function(args) -> int` (the exit code). Keeping one module per command keeps this
dispatcher free of any knowledge of what the commands do.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "raftbench.commands.calibrate",
    "raftbench.commands.check",
    "raftbench.commands.cluster",
    "raftbench.commands.kv",
    "raftbench.commands.node",
    "raftbench.commands.report",
    "raftbench.commands.run",
    "raftbench.commands.sim",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raftbench",
        description="Push-based Raft vs MongoDB-style pull replication, side by side.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
