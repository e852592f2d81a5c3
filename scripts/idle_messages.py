"""Messages per second a cluster at rest sends, by type (simulator harness, zero latency).

    .venv/bin/python scripts/idle_messages.py [--nodes 3 5] [--seconds 10]

For push and for pull under every sync-source policy (`spread` with max_pullers 1, so that
chains form; `fixed` with the tree n2 <- n1, n3 <- n2, n4 <- n1, n5 <- n4): elect n1, let the
cluster settle for 2 s, then count every message the engines hand out for `--seconds`, per
type. Prints one line per label with the total per second, the ratio to push's and the sync
sources at the end.
"""

from __future__ import annotations

import argparse
import collections
from typing import Any

from cluster.sim.harness import Harness
from protocols.config import SyncSettings
from protocols.types import NodeId


class CountingHarness(Harness):
    """The harness, counting what each Ready hands out while `counting` is set."""

    counting = False
    counts: collections.Counter[str]

    def _process(self, node: NodeId) -> None:
        engine = self.engines[node]
        while engine.has_ready():
            ready = engine.ready()
            if self.counting:
                for envelope in ready.messages:
                    self.counts[type(envelope.message).__name__] += 1
            if ready.snapshot is not None:
                self.stores[node].save_snapshot(ready.snapshot)
            self.stores[node].persist(ready.hard_state, ready.truncate_after, ready.entries)
            self.inflight.extend(ready.messages)
            self.applied[node].extend(ready.committed)
            self.replies.extend(ready.replies)
            engine.advance(ready)


def measure(protocol: str, nodes: int, seconds: float, **config: Any) -> tuple[float, str]:
    harness = CountingHarness.create(protocol, nodes, seed=1, **config)
    harness.counts = collections.Counter()
    harness.elect("n1")
    harness.settle(2.0, step=0.01)
    harness.counting = True
    harness.settle(seconds, step=0.01)
    rates = {kind: count / seconds for kind, count in sorted(harness.counts.items())}
    sources = " ".join(f"{n}<-{e.sync_source}" for n, e in harness.engines.items() if n != "n1")
    detail = ", ".join(f"{kind} {rate:.1f}" for kind, rate in rates.items())
    return sum(rates.values()), f"{detail}  [{sources}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    for nodes in args.nodes:
        push, detail = measure("push", nodes, args.seconds)
        print(f"{nodes} nodes push: {push:.1f}/s  ({detail})")
        ids = [f"n{i + 1}" for i in range(nodes)]
        tree = tuple((ids[i], ids[i - 1] if i % 2 == 0 else ids[0]) for i in range(1, nodes))
        for policy in SyncSettings.POLICIES:
            sync = SyncSettings(policy=policy, max_pullers=1, fixed_tree=tree)
            total, detail = measure("pull", nodes, args.seconds, sync=sync)
            print(f"{nodes} nodes pull:{policy}: {total:.1f}/s = {total / push:.2f}x  ({detail})")


if __name__ == "__main__":
    main()
