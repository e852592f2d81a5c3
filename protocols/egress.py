"""What the runtime tells an engine about its capped outgoing pipes: a socket's send buffer.

A real sender feels a saturated link as back-pressure: the socket's buffer fills and the next
write waits. Our transport queues without limit instead (the link shaper schedules every frame),
so an engine that hands over everything it has builds a queue the link needs seconds to drain,
and every small message it sends later (a heartbeat, a position report, a long-poll answer)
waits behind it. An `EgressGauge` gives the engine that back-pressure as a reading, with no
clock and no socket: for a destination, each capped pipe a frame to it passes through, how many
seconds of bytes that pipe already holds beyond `now`, and its rate. The real node's link
shaper and the simulator's network both provide it from the same `SerialPipes` bookkeeping.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple, Protocol

from protocols.types import NodeId


class PipeLoad(NamedTuple):
    """One capped pipe on the way to a destination."""

    key: Hashable  # which pipe (pipes shared by several destinations have the same key)
    queued: float  # seconds of bytes it already holds beyond `now` (0: idle)
    rate: float  # bytes per second


class EgressGauge(Protocol):
    """The runtime's reading of this node's capped outgoing pipes."""

    def pipe_loads(self, dst: NodeId, now: float) -> Sequence[PipeLoad]:
        """The capped pipes a frame to `dst` passes through; empty when nothing caps it."""
        ...
