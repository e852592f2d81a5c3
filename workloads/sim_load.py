"""A workload as the simulator's clients consume it, and their records as the driver keeps them.

The simulator lives in the runtime layer and knows workloads only through the small
`ClientLoad` protocol; this adapter is where a `Workload` and its `OperationStream` are plugged
in, so that `cluster/` never imports `workloads/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cluster.sim.clients import ClientOp, OpSource
from workloads.generators import LoopMode, OperationStream, OpMix, Workload
from workloads.results import OpRecord


@dataclass(frozen=True, slots=True)
class WorkloadLoad:
    """A `Workload` seen through the simulator's `ClientLoad` protocol."""

    workload: Workload

    @property
    def clients(self) -> int:
        return self.workload.clients

    @property
    def open_loop(self) -> bool:
        return self.workload.loop is LoopMode.OPEN

    def arrivals(self, duration: float, seed: int, client: int) -> Sequence[float]:
        return [float(t) for t in self.workload.arrivals(duration, seed, client)]

    def stream(self, seed: int, client: int) -> OpSource:
        return OperationStream(self.workload, seed, client)


def correctness_workload(clients: int = 5) -> WorkloadLoad:
    """The default simulator workload: few keys, reads, writes and compare-and-set."""
    return WorkloadLoad(
        Workload(
            mix=OpMix(read=0.4, write=0.4, cas=0.2),
            key_count=3,
            value_size=16,
            clients=clients,
        )
    )


def op_record(op: ClientOp) -> OpRecord:
    """The driver's record of one simulated client operation."""
    return OpRecord(
        op.process,
        op.f,
        op.key,
        op.value,
        op.invoke,
        op.complete,
        op.outcome,
        op.consistency,
        op.intended,
    )
