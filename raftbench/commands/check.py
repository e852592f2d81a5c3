"""`raftbench check FILE...`: decide whether recorded histories are linearizable.

Prints one line per file (`FILE: verdict (seconds)`, with an indented explanation under a
failure), then a total line. Exit status: 0 if every file is linearizable, 1 if any is not,
otherwise 2 (a verdict is unknown or a file could not be read).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from raftbench.commands.argtypes import non_negative_float
from workloads.checker import (
    FORMATS,
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    UNKNOWN,
    CheckResult,
    HistoryError,
    check_operations,
    read_history,
)

EXIT_OK, EXIT_NOT_LINEARIZABLE, EXIT_UNDECIDED = 0, 1, 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check",
        help="check histories for linearizability",
        description="Decide whether each history file is linearizable (per-key register model).",
        epilog="Exit status: 0 all linearizable, 1 some history is not linearizable, "
        "2 otherwise (a verdict unknown within the budget, or an unreadable file).",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument(
        "--format", choices=FORMATS, default=None, help="history format (default: inferred)"
    )
    parser.add_argument(
        "--budget",
        type=non_negative_float,
        default=10.0,
        metavar="SECONDS",
        help="search time per file before the verdict is 'unknown' (default: 10)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        default=None,
        metavar="N",
        help="also stop after N search steps per file (deterministic, unlike time)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BrokenPipeError:  # e.g. piped into `head`: the reader has seen enough
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (silences the flush at exit)
        return EXIT_UNDECIDED


def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    counts = {LINEARIZABLE: 0, NOT_LINEARIZABLE: 0, UNKNOWN: 0}
    unreadable = 0
    for path in args.files:
        try:
            ops = read_history(path, args.format)
        except HistoryError as error:
            unreadable += 1
            print(f"{path}: unreadable", flush=True)
            print(f"    {error}", file=sys.stderr, flush=True)
            continue
        result = check_operations(ops, budget=args.budget, max_steps=args.max_steps)
        counts[result.verdict] += 1
        print(f"{path}: {result.verdict} ({result.elapsed:.3f} s)", flush=True)
        if result.verdict != LINEARIZABLE:
            print(f"    {_explanation(result)}", flush=True)
    elapsed = time.monotonic() - started
    total = (
        f"total: {len(args.files)} files, {counts[LINEARIZABLE]} linearizable, "
        f"{counts[NOT_LINEARIZABLE]} not-linearizable, {counts[UNKNOWN]} unknown"
    )
    if unreadable:
        total += f", {unreadable} unreadable"
    print(f"{total} in {elapsed:.2f} s")
    if counts[NOT_LINEARIZABLE]:
        return EXIT_NOT_LINEARIZABLE
    if counts[UNKNOWN] or unreadable:
        return EXIT_UNDECIDED
    return EXIT_OK


def _explanation(result: CheckResult) -> str:
    """The first failing (or undecided) key's explanation, and how many more there are."""
    bad = [k for k in result.keys if k.verdict == result.verdict]
    if not bad:
        return result.detail
    more = f" (and {len(bad) - 1} more keys)" if len(bad) > 1 else ""
    return bad[0].detail + more
