"""What the peer transport counts and measures per peer, for /metrics and for reports.

Message and byte counts are of codec-encoded envelopes (what the simulator charges a link), so
real runs and simulated runs compare; the `wire_*` counts add framing, MACs, handshakes and
pings. Measured round trips are kept per peer so a report can show the achieved RTT matrix next
to the one the scenario asked for.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields


@dataclass(slots=True)
class PeerCounters:
    """Monotonic counters of one peer; `snapshot()` gives a copy that no longer changes."""

    messages_sent: int = 0
    bytes_sent: int = 0  # sum of encoded envelope sizes written to the peer
    messages_received: int = 0
    bytes_received: int = 0  # sum of encoded envelope sizes accepted from the peer
    data_frames_sent: int = 0  # batches: messages_sent / data_frames_sent is the batching factor
    data_frames_received: int = 0
    wire_bytes_sent: int = 0  # everything written on this peer's connections
    wire_bytes_received: int = 0
    dropped_partition: int = 0  # messages refused by the shaper: link partitioned
    dropped_loss: int = 0  # messages lost by the shaper's loss probability
    dropped_overflow: int = 0  # in-flight limit reached: oldest queued message dropped
    dropped_disconnect: int = 0  # lost with a connection that broke, or a peer removed
    dropped_oversize: int = 0  # a single message larger than the frame limit
    rejected_mac: int = 0  # frame MAC did not verify (forged, replayed or corrupted)
    rejected_decode: int = 0  # authenticated frame whose content does not decode
    rejected_spoofed: int = 0  # envelope src is not the authenticated peer
    rejected_misaddressed: int = 0  # envelope dst is not this node
    connects: int = 0  # successful outbound connections (handshake done)
    connect_failures: int = 0  # dials or handshakes that failed
    disconnects: int = 0  # outbound connections lost after being established
    accepts: int = 0  # authenticated inbound connections from this peer
    pings_sent: int = 0
    pongs_received: int = 0

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)

    def snapshot(self) -> PeerCounters:
        return PeerCounters(**{f.name: getattr(self, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, int]:
        values = {f.name: int(getattr(self, f.name)) for f in fields(self)}
        values["reconnects"] = self.reconnects
        return values


@dataclass(frozen=True, slots=True)
class RttSummary:
    """Round trips measured on one link, in seconds, over the last `window` samples."""

    count: int  # samples ever taken
    window: int  # samples the statistics below are computed from
    minimum: float
    median: float
    p99: float
    maximum: float
    last: float


def _nearest_rank(ordered: list[float], quantile: float) -> float:
    rank = max(1, math.ceil(quantile * len(ordered)))
    return ordered[rank - 1]


class RttTracker:
    """Recent RTT samples of one link (bounded), summarised on demand."""

    def __init__(self, keep: int = 1024) -> None:
        self._samples: deque[float] = deque(maxlen=keep)
        self.count = 0

    def add(self, rtt: float) -> None:
        self._samples.append(rtt)
        self.count += 1

    def summary(self) -> RttSummary | None:
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        return RttSummary(
            count=self.count,
            window=len(ordered),
            minimum=ordered[0],
            median=_nearest_rank(ordered, 0.5),
            p99=_nearest_rank(ordered, 0.99),
            maximum=ordered[-1],
            last=self._samples[-1],
        )
