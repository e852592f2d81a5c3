"""The simulated network: a latency matrix, loss, duplication, jitter and partitions.

Every message is charged its encoded size (the same codec as the real transport), per
directed link, whether or not it arrives: that is what a sender pays for. Jitter makes links
reorder messages, as UDP-like Raft transports may; the engines must cope with it.

Egress caps (a node's uplink, its share of a WAN pipe) are the real link shaper's own
`cluster.shaper.EgressCaps` scheduled by its `SerialPipes`: a message leaves its sender when
every pipe on its path is free, then travels the link's delay. Same caps, same frames, same
schedule as on real processes.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from cluster.shaper import EgressCaps, SerialPipes
from protocols.codec import WireSizer
from protocols.egress import PipeLoad
from protocols.messages import Envelope
from protocols.types import NodeId

Link = tuple[NodeId, NodeId]


@dataclass(slots=True)
class LinkStats:
    messages: int = 0
    bytes: int = 0
    dropped: int = 0


class SimNetwork:
    """Decides when (and whether) each message arrives, and counts what each link carries.

    Each directed link has a base (delay, jitter, loss), from the scenario's matrix or the
    defaults; a slow-link fault adds to it until it is cleared.
    """

    def __init__(
        self,
        rng: random.Random,
        links: dict[Link, tuple[float, float, float]],
        default_delay: float,
        jitter: float = 0.0,
        loss: float = 0.0,
        duplicate: float = 0.0,
        egress: dict[NodeId, EgressCaps] | None = None,
    ) -> None:
        self._rng = rng
        self.egress = {n: caps for n, caps in (egress or {}).items() if not caps.is_unlimited}
        self._pipes: dict[NodeId, SerialPipes] = {n: SerialPipes() for n in self.egress}
        self._links = links
        self._default = (default_delay, jitter, loss)
        self.duplicate = duplicate
        self.blocked: set[Link] = set()  # directed: (a, b) blocks a -> b
        self.slowed: dict[Link, tuple[float, float, float]] = {}  # added by slow-link faults
        self.count_bytes = True  # encoding every message costs; correctness runs skip it
        self._sizer = WireSizer()  # exact sizes, each entry sized once for all its copies
        self.fifo = False  # True: each link delivers in order (TCP); False: jitter reorders
        self._last_arrival: dict[Link, float] = {}
        self.stats: dict[Link, LinkStats] = defaultdict(LinkStats)

    def link(self, src: NodeId, dst: NodeId) -> tuple[float, float, float]:
        """(delay, jitter, loss) of the directed link now, slow-link faults included."""
        delay, jitter, loss = self._links.get((src, dst), self._default)
        extra = self.slowed.get((src, dst))
        if extra is not None:
            delay, jitter, loss = delay + extra[0], jitter + extra[1], max(loss, extra[2])
        return delay, jitter, loss

    def delay(self, src: NodeId, dst: NodeId) -> float:
        return self.link(src, dst)[0]

    def arrivals(self, envelope: Envelope, now: float) -> list[float]:
        """Arrival times of `envelope` sent at `now`: none (lost), one, or two (duplicated)."""
        link = (envelope.src, envelope.dst)
        stats = self.stats[link]
        stats.messages += 1
        caps = self.egress.get(envelope.src)
        size = self._sizer.size(envelope) if self.count_bytes or caps is not None else 0
        if self.count_bytes:
            stats.bytes += size
        if self.slowed:
            delay, jitter, loss = self.link(*link)
        else:
            delay, jitter, loss = self._links.get(link, self._default)
        random = self._rng.random
        if link in self.blocked or (loss and random() < loss):
            stats.dropped += 1
            return []
        sent = now
        if caps is not None:  # like the real shaper: only what is not lost takes the pipe
            sent = self._pipes[envelope.src].pass_through(caps.path(envelope.dst), size, now)
        sent += delay
        if self.duplicate and random() < self.duplicate:
            times = [sent + random() * jitter, sent + random() * jitter]
        else:
            times = [sent + random() * jitter]
        if self.fifo:
            # Like TCP and the real link shaper: jitter delays, it never reorders a link.
            last = self._last_arrival.get(link, 0.0)
            times = [t if t >= last else last for t in times]
            self._last_arrival[link] = max(times)
        return times

    def pipe_loads(self, src: NodeId, dst: NodeId, now: float) -> list[PipeLoad]:
        """The capped pipes from `src` towards `dst` and what they hold beyond `now`."""
        caps = self.egress.get(src)
        if caps is None:
            return []
        return self._pipes[src].loads(caps.path(dst), now)

    def gauge(self, src: NodeId) -> SimGauge:
        """`src`'s reading of its own pipes, for its engine (`protocols.egress.EgressGauge`)."""
        return SimGauge(self, src)

    def partition(self, groups: list[list[NodeId]]) -> None:
        """Symmetric partition: nodes talk only within their group."""
        self.blocked = {
            (a, b)
            for group in groups
            for a in group
            for other in groups
            if other is not group
            for b in other
        }

    def block_one_way(self, src: NodeId, dst: NodeId) -> None:
        self.blocked.add((src, dst))

    def heal(self) -> None:
        self.blocked = set()

    def reachable(self, src: NodeId, dst: NodeId) -> bool:
        return (src, dst) not in self.blocked


@dataclass(frozen=True, slots=True)
class SimGauge:
    """One node's view of its capped pipes in the simulated network."""

    network: SimNetwork
    node: NodeId

    def pipe_loads(self, dst: NodeId, now: float) -> list[PipeLoad]:
        return self.network.pipe_loads(self.node, dst, now)
