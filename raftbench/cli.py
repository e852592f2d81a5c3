"""The `raftbench` command: one subcommand per module in `raftbench.commands`.

Each command module exposes `register(subparsers)`, which adds its parser and sets
`handler=function(args) -> int` (the exit code). Keeping one module per command keeps this
dispatcher free of any knowledge of what the commands do. Only the module of the command being
run is imported (all of them for `--help`), so a node starts fast and one command's heavy
imports never weigh on another.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS = {
    "bench": "raftbench.commands.bench",
    "calibrate": "raftbench.commands.calibrate",
    "check": "raftbench.commands.check",
    "cluster": "raftbench.commands.cluster",
    "compare": "raftbench.commands.run",
    "hosts": "raftbench.commands.hosts",
    "kv": "raftbench.commands.kv",
    "node": "raftbench.commands.node",
    "report": "raftbench.commands.report",
    "run": "raftbench.commands.run",
    "sim": "raftbench.commands.sim",
}
COMMAND_MODULES = tuple(sorted(set(COMMANDS.values())))


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for `command` only, or for every command when it is None or unknown."""
    parser = argparse.ArgumentParser(
        prog="raftbench",
        description="Push-based Raft vs MongoDB-style pull replication, side by side.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else COMMAND_MODULES
    for name in modules:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments[0] if arguments else None)
    args = parser.parse_args(arguments)
    try:
        code: int = args.handler(args)
    except BrokenPipeError:  # `raftbench ... | head`: the reader went away, nothing to report
        sys.stderr.close()
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
