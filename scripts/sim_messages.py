"""Messages by kind that push and pull send over `raftbench sim`'s seeds (no faults).

    .venv/bin/python scripts/sim_messages.py [--seeds 30]

Why: pull costs the simulator more per virtual second than push. This separates what the
protocol sends (messages per completed client operation, by kind) from what each engine does
per message. Same configuration as `raftbench sim` (5 nodes, 5 clients, 10 virtual s, no byte
counting), seeds 1..N.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
from collections.abc import Callable, Sequence

from cluster.sim.simulator import SimConfig, Simulator
from protocols.messages import Envelope
from workloads.sim_load import correctness_workload

Arrivals = Callable[[Envelope, float], list[float]]


def count(protocol: str, seeds: int) -> tuple[collections.Counter[str], int]:
    """Messages by kind over `seeds` seeds, and the client operations completed."""
    kinds: collections.Counter[str] = collections.Counter()
    completed = 0
    for seed in range(1, seeds + 1):
        config = SimConfig(seed=seed, protocol=protocol, count_bytes=False)
        config = dataclasses.replace(config, workload=correctness_workload(config.clients))
        simulator = Simulator(config)
        arrivals = simulator.network.arrivals

        def counted(envelope: Envelope, now: float, arrivals: Arrivals = arrivals) -> list[float]:
            kinds[type(envelope.message).__name__] += 1
            return arrivals(envelope, now)

        simulator.network.arrivals = counted  # type: ignore[method-assign]
        simulator.run()
        completed += simulator.stats.ops_ok
    return kinds, completed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=30)
    args = parser.parse_args(argv)
    totals = {}
    for protocol in ("push", "pull"):
        kinds, completed = count(protocol, args.seeds)
        total = sum(kinds.values())
        totals[protocol] = total / max(completed, 1)
        print(
            f"{protocol}: {total} messages, {completed} operations completed, "
            f"{totals[protocol]:.2f} messages per operation"
        )
        for kind, n in kinds.most_common():
            print(f"  {kind:<20} {n:>9} ({n / max(completed, 1):.2f} per operation)")
    print(f"pull/push messages per operation: {totals['pull'] / totals['push']:.2f}x")


if __name__ == "__main__":
    main()
