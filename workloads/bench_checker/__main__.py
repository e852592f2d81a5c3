"""Time the checker on every shared history, a 50-client key-value pair and failing mutants.

Run: ``.venv/bin/python -m workloads.bench_checker [DATA_DIR] [--budget SECONDS]``. DATA_DIR is
the folder holding etcd/ and kv/ (default: the repository's tests/data/linearizability).
Prints one line per history (verdict, expected verdict, seconds), the ten slowest, totals and
the number of `unknown` verdicts. Exit status 1 if any verdict is unknown or differs from the
expected one.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from workloads.bench_checker.mutants import future_read, stale_read, unwritten_read
from workloads.bench_checker.synthetic import kv_history
from workloads.checker import (
    LINEARIZABLE,
    NOT_LINEARIZABLE,
    UNKNOWN,
    Operation,
    check_operations,
    read_history,
)

REPO = Path(__file__).resolve().parents[2]
SYNTHETIC_CLIENTS, SYNTHETIC_KEYS, SYNTHETIC_OPS, SYNTHETIC_SEED = 50, 5, 20, 1
MUTANTS: dict[str, Callable[[list[Operation]], list[Operation] | None]] = {
    "unwritten-read": unwritten_read,
    "stale-read": stale_read,
    "future-read": future_read,
}


@dataclass(frozen=True)
class Case:
    """One history to time and the verdict it must get."""

    name: str
    ops: list[Operation]
    expected: str
    shared: bool


@dataclass(frozen=True)
class Timing:
    case: Case
    verdict: str
    seconds: float
    cpu_seconds: float


def default_data_dir() -> Path:
    """The repository's own copy of the Jepsen histories: nothing outside the clone is read."""
    return REPO / "tests" / "data" / "linearizability"


def shared_cases(data: Path) -> list[Case]:
    """The Jepsen histories with their verdicts (EXPECTED.tsv for etcd, the name for kv)."""
    table = data / "etcd" / "EXPECTED.tsv"
    with table.open(newline="") as rows:
        expected = {row["file"]: row["expected"] for row in csv.DictReader(rows, delimiter="\t")}
    cases = [
        Case(f"etcd/{name}", read_history(data / "etcd" / name), verdict, True)
        for name, verdict in sorted(expected.items())
    ]
    for path in sorted((data / "kv").glob("*.txt")):
        verdict = LINEARIZABLE if path.stem.endswith("-ok") else NOT_LINEARIZABLE
        cases.append(Case(f"kv/{path.name}", read_history(path), verdict, True))
    return cases


def generated_cases(shared: Sequence[Case]) -> list[Case]:
    """The 50-client history, then every mutant of every linearizable history."""
    many = kv_history(SYNTHETIC_CLIENTS, SYNTHETIC_KEYS, SYNTHETIC_OPS, SYNTHETIC_SEED)
    cases = [Case(f"synthetic/c{SYNTHETIC_CLIENTS}-ok", many, LINEARIZABLE, False)]
    for case in [*shared, *cases]:
        if case.expected != LINEARIZABLE:
            continue
        for label, mutate in MUTANTS.items():
            mutant = mutate(case.ops)
            if mutant is not None:
                cases.append(Case(f"{case.name}~{label}", mutant, NOT_LINEARIZABLE, False))
    return cases


def time_case(case: Case, budget: float) -> Timing:
    started, cpu_started = time.perf_counter(), time.process_time()
    result = check_operations(case.ops, budget=budget)
    cpu = time.process_time() - cpu_started
    return Timing(case, result.verdict, time.perf_counter() - started, cpu)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workloads.bench_checker", description=__doc__)
    parser.add_argument("data", nargs="?", type=Path, default=None, metavar="DATA_DIR")
    parser.add_argument("--budget", type=float, default=10.0, metavar="SECONDS")
    args = parser.parse_args(argv)
    data = args.data or default_data_dir()
    if not (data / "etcd" / "EXPECTED.tsv").is_file():
        print(f"no histories under {data} (expected etcd/EXPECTED.tsv and kv/)", file=sys.stderr)
        return 2
    shared = shared_cases(data)
    cases = [*shared, *generated_cases(shared)]
    timings = []
    for case in cases:
        timing = time_case(case, args.budget)
        timings.append(timing)
        mark = "" if timing.verdict == case.expected else f"  <-- expected {case.expected}"
        print(f"{case.name:<40} {timing.verdict:<17} {timing.seconds:8.3f} s{mark}", flush=True)
    print("\nslowest ten:")
    for timing in sorted(timings, key=lambda t: t.seconds, reverse=True)[:10]:
        print(f"  {timing.case.name:<40} {timing.verdict:<17} {timing.seconds:8.3f} s")
    _print_totals(timings)
    unknown = sum(t.verdict == UNKNOWN for t in timings)
    wrong = sum(t.verdict not in (UNKNOWN, t.case.expected) for t in timings)
    print(f"unknown: {unknown}   wrong verdicts: {wrong}")
    return 1 if unknown or wrong else 0


def _print_totals(timings: Sequence[Timing]) -> None:
    groups = {
        "shared etcd": [t for t in timings if t.case.shared and t.case.name.startswith("etcd/")],
        "shared kv": [t for t in timings if t.case.shared and t.case.name.startswith("kv/")],
        "generated": [t for t in timings if not t.case.shared],
        "all": list(timings),
    }
    print("\ntotals (wall; cpu is this process's own time, steadier on a busy machine):")
    for label, group in groups.items():
        failing = sum(t.case.expected == NOT_LINEARIZABLE for t in group)
        seconds = sum(t.seconds for t in group)
        cpu = sum(t.cpu_seconds for t in group)
        print(
            f"  {label:<12} {len(group):4d} histories ({failing} failing) {seconds:8.3f} s "
            f"({cpu:.3f} s cpu)"
        )


if __name__ == "__main__":
    sys.exit(main())
