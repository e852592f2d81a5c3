"""How the simulator schedules client events: open-loop arrivals enter the event heap one per
client, in the order they would have had if every arrival had been scheduled at the start; the
replies of one Ready are one event, and the run is the same as with one event per reply."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from cluster.sim.clients import ClientSettings, OpSource, SimClient
from cluster.sim.simulator import _ARRIVAL, _CLIENT_REPLY, SimConfig, Simulator, _Node
from protocols.engine import ClientReply, Ready
from workloads.sim_load import WorkloadLoad, correctness_workload

# Per client: ties across clients, a tie within one client, one client out of order.
TIMES: list[list[float]] = [
    [0.010, 0.020, 0.020, 0.300],
    [0.020, 0.005, 0.150, 0.010],
    [0.020, 0.100, 0.100, 0.250],
]


@dataclass(frozen=True, slots=True)
class FixedArrivals:
    """A ClientLoad whose clients arrive at the given times and take ops from `ops`."""

    ops: WorkloadLoad
    times: list[list[float]]

    @property
    def clients(self) -> int:
        return len(self.times)

    @property
    def open_loop(self) -> bool:
        return True

    def arrivals(self, duration: float, seed: int, client: int) -> Sequence[float]:
        return self.times[client]

    def stream(self, seed: int, client: int) -> OpSource:
        return self.ops.stream(seed, client)


class RecordingSimulator(Simulator):
    """Notes each arrival as it fires, and how many arrivals the heap held at that moment."""

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.fired: list[tuple[float, int]] = []
        self.most_queued = 0

    def _on_arrival(self, client: SimClient, intended: float) -> None:
        queued = sum(1 for event in self._heap if event[2] == _ARRIVAL)
        self.most_queued = max(self.most_queued, queued)
        self.fired.append((intended, client.number))
        super()._on_arrival(client, intended)


def test_arrivals_fire_in_time_then_client_then_list_order() -> None:
    load = FixedArrivals(correctness_workload(len(TIMES)), TIMES)
    config = SimConfig(protocol="push", seed=3, faults="none", duration=0.5, nodes=3)
    config.workload = load
    sim = RecordingSimulator(config)
    sim.run()
    # All pushed at the start, client by client, they would pop by (time, client, position).
    expected = sorted(
        (time, client, position)
        for client, times in enumerate(TIMES)
        for position, time in enumerate(times)
    )
    assert sim.fired == [(time, client) for time, client, _ in expected]
    assert sim.most_queued <= len(TIMES)  # at most one pending arrival per client
    assert sum(len(c.ops) for c in sim.clients) == sum(len(t) for t in TIMES)


def test_an_open_loop_run_replays_exactly() -> None:
    load = FixedArrivals(correctness_workload(len(TIMES)), TIMES)
    runs = []
    for _ in range(2):
        config = SimConfig(protocol="pull", seed=5, faults="all", duration=0.5, nodes=3)
        config.workload = load
        sim = Simulator(config)
        sim.run()
        ops = [(op.invoke, op.outcome) for client in sim.clients for op in client.ops]
        runs.append((sim.stats.events, sim.stats.messages, ops))
    assert runs[0] == runs[1]


class OneEventPerReply(Simulator):
    """The reference: every client reply of a Ready scheduled as its own event."""

    def _finish(self, node: _Node, ready: Ready) -> None:
        replies, ready.replies = ready.replies, []
        super()._finish(node, ready)
        for reply in replies:
            client = self._request_owner.pop(reply.request_id, None)
            if client is not None:
                self._at(self.now + self.config.client_delay, _CLIENT_REPLY, client, reply)


class CountingBatches(Simulator):
    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.batched = 0

    def _on_client_replies(self, due: list[tuple[SimClient, ClientReply]], _: None) -> None:
        self.batched += 1
        super()._on_client_replies(due, _)


def _outcome(sim: Simulator) -> tuple[object, ...]:
    ops = [
        (op.process, op.f, op.key, op.value, op.invoke, op.complete, op.outcome)
        for client in sim.clients
        for op in client.ops
    ]
    return (sim.stats.events, sim.stats.messages, sim.stats.crashes, ops, sim.fault_log)


@pytest.mark.parametrize("protocol", ["push", "pull"])
def test_replies_of_one_ready_in_one_event_give_the_same_run(protocol: str) -> None:
    """Many clients without think time: Readies carry several replies (batched here)."""
    for seed in range(2):
        runs = []
        for kind in (OneEventPerReply, CountingBatches):
            config = SimConfig(protocol=protocol, seed=seed, faults="all", duration=2.0)
            config.workload = correctness_workload(12)
            config.client_settings = ClientSettings(think_time=0.0)
            sim = kind(config)
            sim.run()
            runs.append(_outcome(sim))
        assert isinstance(sim, CountingBatches) and sim.batched > 0
        assert runs[0] == runs[1]
