"""`raftbench calibrate`: the load generator's own ceiling against a null server.

Measures every combination of the given `--processes`, `--workers` and `--batch` values,
prints a table and merges the results into the calibration file, which real runs read to show
the ceiling next to their throughput.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from raftbench.commands.argtypes import non_negative_float, positive_float, positive_int
from workloads.calibrate import (
    DEFAULT_CALIBRATION,
    CalibrationFileError,
    calibrate,
    format_table,
    save_calibration,
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="measure the load generator's ceiling against a null server",
        description="Drive a server that does nothing with the real load generator (closed-loop "
        "writes) and record the operations per second it reaches and its CPU share.",
    )
    parser.add_argument("--seconds", type=positive_float, default=5.0, help="measured window")
    parser.add_argument("--warmup", type=non_negative_float, default=1.0)
    parser.add_argument(
        "--processes", type=positive_int, nargs="+", default=[2], help="generator processes"
    )
    parser.add_argument(
        "--workers", type=positive_int, nargs="+", default=[32], help="concurrent workers"
    )
    parser.add_argument(
        "--batch",
        type=positive_int,
        nargs="+",
        default=[1, 16],
        help="operations per request (1: one request each)",
    )
    parser.add_argument(
        "--server-processes", type=positive_int, default=1, help="null-server processes"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=DEFAULT_CALIBRATION,
        help=f"calibration file to merge into (default: {DEFAULT_CALIBRATION})",
    )
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    points = []
    for processes in args.processes:
        for workers in args.workers:
            for batch in args.batch:
                print(
                    f"# {processes} processes, {workers} workers, batch {batch}: "
                    f"{args.warmup:g} s warm-up + {args.seconds:g} s",
                    file=sys.stderr,
                    flush=True,
                )
                points.append(
                    calibrate(
                        processes=processes,
                        workers=workers,
                        batch=batch,
                        seconds=args.seconds,
                        warmup=args.warmup,
                        server_processes=args.server_processes,
                    )
                )
    print(format_table(points))
    if not args.no_save:
        try:
            save_calibration(args.output, points)
        except CalibrationFileError as error:
            print(f"raftbench calibrate: error: {error}", file=sys.stderr)
            return 1
        print(f"# written to {args.output}")
    return 0
