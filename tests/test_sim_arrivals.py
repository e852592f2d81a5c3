"""Open-loop arrivals enter the simulator's event heap one per client, in the order they would
have had if every arrival had been scheduled at the start."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cluster.sim.clients import OpSource, SimClient
from cluster.sim.simulator import SimConfig, Simulator
from workloads.sim_load import WorkloadLoad, correctness_workload

# Per client: ties across clients, a tie within one client, one client out of order.
TIMES: list[list[float]] = [
    [0.010, 0.020, 0.020, 0.300],
    [0.020, 0.005, 0.150, 0.010],
    [0.020, 0.100, 0.100, 0.250],
]
ARRIVAL_KIND = 8  # the simulator's _ARRIVAL


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
        queued = sum(1 for event in self._heap if event[2] == ARRIVAL_KIND)
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
