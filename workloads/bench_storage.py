"""Micro-benchmark of the durable log: persist() calls/s and entries/s per fsync policy.

Run: ``.venv/bin/python -m workloads.bench_storage [--entries-per-call 64] [--calls 2000]``.
It writes into a temporary directory (or --dir) and prints one line per policy; it records
nothing under results/. Each call is what the runtime does per Ready: one persist() with a
batch of entries and a hard state, so the `always` line is the price of group commit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cluster.storage import FsyncPolicy, open_store
from protocols.types import Command, Entry, HardState, Op


def bench(data_dir: Path, policy: FsyncPolicy, calls: int, per_call: int, value_bytes: int) -> str:
    value = "x" * value_bytes
    latencies: list[float] = []
    with open_store(data_dir, policy) as store:
        index = store.last_index
        started = time.perf_counter()
        for call in range(calls):
            entries = [
                Entry(
                    1,
                    index + offset,
                    Command(Op.PUT, f"key{index + offset}", value, None, "c", call),
                )
                for offset in range(1, per_call + 1)
            ]
            index += per_call
            before = time.perf_counter()
            store.persist(HardState(1, "n1", index - per_call), None, entries)
            latencies.append(time.perf_counter() - before)
        elapsed = time.perf_counter() - started
        persist_time = sum(latencies)
        file_bytes = store.file_bytes
        fsyncs, fsync_seconds = store.fsync_count, store.fsync_seconds
    opened = time.perf_counter()
    with open_store(data_dir, policy) as store:
        recovered = len(store.load().entries)
    reopen_seconds = time.perf_counter() - opened
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    fsync_share = f"{fsync_seconds / persist_time:.0%}" if fsyncs else "-"
    return (
        f"fsync={policy.value:<6} calls={calls} entries/call={per_call} value={value_bytes}B | "
        f"{calls / persist_time:,.0f} persist/s, {calls * per_call / persist_time:,.0f} entries/s "
        f"({calls * per_call / elapsed:,.0f} incl. building entries) | "
        f"persist p50 {statistics.median(latencies) * 1e3:.3f} ms p99 {p99 * 1e3:.3f} ms | "
        f"fsync share {fsync_share} | file {file_bytes / 1e6:.1f} MB | "
        f"reopen+load {recovered} entries in {reopen_seconds:.2f} s"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--entries-per-call", type=int, default=64)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--fsync", choices=["always", "never", "both"], default="both")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temporary folder)")
    args = parser.parse_args(argv)
    policies = list(FsyncPolicy) if args.fsync == "both" else [FsyncPolicy(args.fsync)]
    for policy in policies:
        with tempfile.TemporaryDirectory(prefix="bench-storage-", dir=args.dir) as folder:
            print(bench(Path(folder), policy, args.calls, args.entries_per_call, args.value_bytes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
