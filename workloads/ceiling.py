"""The throughput a bandwidth-capped scenario allows, per label: its theoretical ceiling.

When a scenario caps egress (`[network] egress_bytes_per_s`, `bandwidth` on a topology link;
see `cluster.shaper.EgressCaps`), a pipe that carries `copies` copies of every write passes at
most ``rate / (copies x bytes per copy)`` writes per second. A member receives writes no
faster than the slowest pipe on its path from the leader (its chain of sync sources), and a
write commits once a majority holds it, so the ceiling is the majority-th fastest member's
rate (the leader's own is unlimited). Members outside that majority may fall behind without
slowing commits: in `geo-bandwidth` a chained pull tree commits through us-west while eu-west
lags. The bottleneck is the pipe that limits that member. Two figures, both per run:

- **predicted**: copies from the label's replication tree, bytes per copy from the codec.
  push sends every copy from the leader (N-1, split over its pipes); every pull label uses the
  tree the run's samples show (each member's most frequent `sync_source` over the measured
  window; under `pull:primary` that is a star like push's, under `nearest` or `spread` the
  chains the run actually formed). Bytes per copy is what one more entry of the scenario's
  write (its key and `value_size`) adds to an encoded AppendEntries: the codec's own figure,
  headers amortised away, so this ceiling is what perfect batching would reach.
- **observed**: the same pipe rates divided by the bytes each pipe really carried per acked
  write in the measured window (`links.json`: requests, acknowledgements, heartbeats and
  message headers included). Throughput / observed ceiling is the busiest pipe's utilisation:
  1.0 means the pipe, not the CPU or the clients, was the limit.

Everything here is a pure function of a run's record; etcd runs have no ceiling (the link
shaper is raftbench's, not etcd's).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cluster.shaper import EgressCaps
from protocols.codec import encoded_size
from protocols.messages import AppendEntries, Envelope
from protocols.types import Command, Entry, NodeId, Op
from workloads.generators import key_name
from workloads.results import RunRecord
from workloads.run_series import measured_window
from workloads.scenario import Scenario, ScenarioError, parse_scenario

UPLINK = "uplink"  # the name of a node's whole-egress pipe


@dataclass(frozen=True, slots=True)
class Pipe:
    """One capped pipe of one node: `peers` share its `rate` (bytes/s)."""

    node: NodeId
    name: str  # UPLINK, or the far side of a topology link (a region or member)
    rate: float
    peers: frozenset[NodeId]

    def describe(self) -> str:
        return f"{self.node} {self.name}" if self.name == UPLINK else f"{self.node}->{self.name}"


@dataclass(frozen=True, slots=True)
class Ceiling:
    """The predicted and observed ceilings of one run, in acked writes per second."""

    predicted: float | None
    predicted_pipe: str  # the bottleneck pipe of the prediction, e.g. "n1 uplink"
    copies: int  # copies per write through that pipe
    bytes_per_copy: int
    observed: float | None
    observed_pipe: str
    observed_bytes_per_write: float | None  # through the observed bottleneck pipe
    cap: float  # bytes/s of the observed bottleneck pipe (else the predicted one)
    tree: dict[NodeId, NodeId | None]  # member -> the source it replicated from

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted": self.predicted,
            "predicted_pipe": self.predicted_pipe,
            "copies": self.copies,
            "bytes_per_copy": self.bytes_per_copy,
            "observed": self.observed,
            "observed_pipe": self.observed_pipe,
            "observed_bytes_per_write": self.observed_bytes_per_write,
            "cap": self.cap,
            "tree": dict(self.tree),
        }


def pipes_of(node_ids: Sequence[NodeId], caps: Mapping[NodeId, EgressCaps]) -> list[Pipe]:
    """Every capped pipe of every node."""
    out: list[Pipe] = []
    for node in node_ids:
        node_caps = caps.get(node)
        if node_caps is None:
            continue
        others = frozenset(n for n in node_ids if n != node)
        if node_caps.total is not None:
            out.append(Pipe(node, UPLINK, node_caps.total, others))
        for name, rate in sorted(node_caps.pipes.items()):
            peers = frozenset(p for p, pipe in node_caps.pipe_of.items() if pipe == name)
            out.append(Pipe(node, name, rate, peers & others))
    return out


def bytes_per_copy(scenario: Scenario) -> int:
    """Bytes one more write entry adds to an encoded AppendEntries (the codec's own count)."""
    workload = scenario.workload
    command = Command(
        Op.PUT,
        key=key_name(0, workload.key_count),
        value="." * workload.value_size,
        client_id="w0-0000000000000000",
        seq=1_000_000,
    )

    def size(count: int) -> int:
        entries = tuple(Entry(term=5, index=1_000_000 + i, command=command) for i in range(count))
        message = AppendEntries(term=5, prev_index=999_999, prev_term=5, entries=entries, commit=0)
        return encoded_size(Envelope("n1", "n2", message))

    return size(2) - size(1)


def replication_tree(record: RunRecord, label: str) -> dict[NodeId, NodeId | None]:
    """Who each member replicated from: the leader for push, the samples' sync source for pull.

    The leader is the member that led longest in the window; a pull member with no sync
    source in the samples is taken to pull from the leader.
    """
    nodes = sorted(record.regions) or sorted(str(n) for n in record.nodes)
    leader = leader_of(record)
    tree: dict[NodeId, NodeId | None] = {n: (None if n == leader else leader) for n in nodes}
    if not label.startswith("pull"):
        return tree
    start, end = measured_window(record)
    sources: dict[NodeId, Counter[str]] = {n: Counter() for n in nodes}
    for row in record.timeseries:
        node, source, t = row.get("node"), row.get("sync_source"), row.get("t")
        if not (node in sources and isinstance(source, str) and isinstance(t, int | float)):
            continue
        if start <= t < end and row.get("up", True):
            sources[node][source] += 1
    for node, seen in sources.items():
        if node != leader and seen:
            tree[node] = seen.most_common(1)[0][0]
    return tree


def leader_of(record: RunRecord) -> NodeId | None:
    """The member that led longest in the measured window (nodes.json `leader_time`)."""
    best: tuple[float, NodeId] | None = None
    for node, info in record.nodes.items():
        led = info.get("leader_time") if isinstance(info, dict) else None
        if isinstance(led, int | float) and led > 0 and (best is None or led > best[0]):
            best = (float(led), str(node))
    return None if best is None else best[1]


def tree_depths(tree: Mapping[NodeId, NodeId | None]) -> dict[NodeId, int | None]:
    """Hops from the leader per member (None: its chain never reaches the leader)."""
    depths: dict[NodeId, int | None] = {}
    for node in tree:
        depth, current, seen = 0, node, set()
        while True:
            source = tree.get(current)
            if source is None:
                depths[node] = depth if current in tree else None
                break
            if current in seen:
                depths[node] = None
                break
            seen.add(current)
            depth, current = depth + 1, source
    return depths


def scenario_of(record: RunRecord) -> Scenario | None:
    raw = record.metadata.get("scenario_raw")
    if not isinstance(raw, Mapping):
        return None
    try:
        return parse_scenario(raw, default_name=str(record.metadata.get("scenario", "scenario")))
    except ScenarioError:
        return None


def member_rates(
    tree: Mapping[NodeId, NodeId | None], pipes: Sequence[Pipe], cost: Mapping[Pipe, float]
) -> dict[NodeId, tuple[float, Pipe | None]]:
    """Writes/s each member can receive along its chain from the leader, and the pipe that
    limits it. `cost` is the bytes each pipe carries per write (absent or 0: free)."""
    limit: dict[tuple[NodeId, NodeId], tuple[float, Pipe | None]] = {}
    for pipe in pipes:
        bytes_per_write = cost.get(pipe, 0.0)
        if bytes_per_write <= 0:
            continue
        rate = pipe.rate / bytes_per_write
        for peer in pipe.peers:
            if (pipe.node, peer) not in limit or rate < limit[(pipe.node, peer)][0]:
                limit[(pipe.node, peer)] = (rate, pipe)
    out: dict[NodeId, tuple[float, Pipe | None]] = {}
    depths = tree_depths(tree)
    for member in tree:
        if depths.get(member) is None:
            out[member] = (0.0, None)  # never reaches the leader
            continue
        best: tuple[float, Pipe | None] = (math.inf, None)
        current = member
        while (source := tree.get(current)) is not None:
            step = limit.get((source, current))
            if step is not None and step[0] < best[0]:
                best = step
            current = source
        out[member] = best
    return out


def quorum_ceiling(
    tree: Mapping[NodeId, NodeId | None], pipes: Sequence[Pipe], cost: Mapping[Pipe, float]
) -> tuple[float, Pipe | None]:
    """The majority-th fastest member's rate and its limiting pipe (inf: nothing limits)."""
    rates = sorted(member_rates(tree, pipes, cost).values(), key=lambda r: -r[0])
    if not rates:
        return math.inf, None
    return rates[len(rates) // 2]  # the (n // 2 + 1)-th fastest: a majority holds the write


def run_ceiling(record: RunRecord, acked_writes: int) -> Ceiling | None:
    """The ceilings of one run (None: the scenario caps nothing, or the label is etcd's)."""
    label = str(record.metadata.get("label", record.metadata.get("protocol", "")))
    if label.startswith("etcd"):
        return None
    scenario = scenario_of(record)
    if scenario is None:
        return None
    pipes = pipes_of(scenario.node_ids, scenario.egress_caps())
    if not pipes:
        return None
    tree = replication_tree(record, label)
    per_copy = bytes_per_copy(scenario)
    copies = {
        pipe: sum(1 for m, source in tree.items() if source == pipe.node and m in pipe.peers)
        for pipe in pipes
    }
    predicted, predicted_pipe = quorum_ceiling(
        tree, pipes, {pipe: n * per_copy for pipe, n in copies.items()}
    )
    carried: dict[tuple[NodeId, NodeId], float] = {}
    for link in record.links:
        value = link.get("bytes")
        if isinstance(value, int | float):
            key = (str(link.get("src")), str(link.get("dst")))
            carried[key] = carried.get(key, 0.0) + float(value)
    observed: float | None = None
    observed_pipe: Pipe | None = None
    through: dict[Pipe, float] = {}
    if acked_writes > 0 and carried:
        through = {
            pipe: sum(carried.get((pipe.node, peer), 0.0) for peer in pipe.peers) / acked_writes
            for pipe in pipes
        }
        observed, observed_pipe = quorum_ceiling(tree, pipes, through)
    main = observed_pipe or predicted_pipe
    return Ceiling(
        predicted=None if math.isinf(predicted) else predicted,
        predicted_pipe="" if predicted_pipe is None else predicted_pipe.describe(),
        copies=0 if predicted_pipe is None else copies[predicted_pipe],
        bytes_per_copy=per_copy,
        observed=None if observed is None or math.isinf(observed) else observed,
        observed_pipe="" if observed_pipe is None else observed_pipe.describe(),
        observed_bytes_per_write=None if observed_pipe is None else through[observed_pipe],
        cap=main.rate if main is not None else pipes[0].rate,
        tree=tree,
    )


__all__ = [
    "UPLINK",
    "Ceiling",
    "Pipe",
    "bytes_per_copy",
    "leader_of",
    "member_rates",
    "pipes_of",
    "quorum_ceiling",
    "replication_tree",
    "run_ceiling",
    "scenario_of",
    "tree_depths",
]
