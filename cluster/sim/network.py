"""The simulated network: a latency matrix, loss, duplication, jitter and partitions.

Every message is charged its encoded size (the same codec as the real transport), per
directed link, whether or not it arrives: that is what a sender pays for. Jitter makes links
reorder messages, as UDP-like Raft transports may; the engines must cope with it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from protocols.codec import encoded_size
from protocols.messages import Envelope
from protocols.types import NodeId

Link = tuple[NodeId, NodeId]


@dataclass(slots=True)
class LinkStats:
    messages: int = 0
    bytes: int = 0
    dropped: int = 0


class SimNetwork:
    """Decides when (and whether) each message arrives, and counts what each link carries."""

    def __init__(
        self,
        rng: random.Random,
        one_way: dict[Link, float],
        default_delay: float,
        jitter: float = 0.0,
        loss: float = 0.0,
        duplicate: float = 0.0,
    ) -> None:
        self._rng = rng
        self._one_way = one_way
        self._default_delay = default_delay
        self.jitter = jitter
        self.loss = loss
        self.duplicate = duplicate
        self.blocked: set[Link] = set()  # directed: (a, b) blocks a -> b
        self.stats: dict[Link, LinkStats] = defaultdict(LinkStats)

    def delay(self, src: NodeId, dst: NodeId) -> float:
        return self._one_way.get((src, dst), self._default_delay)

    def arrivals(self, envelope: Envelope, now: float) -> list[float]:
        """Arrival times of `envelope` sent at `now`: none (lost), one, or two (duplicated)."""
        link = (envelope.src, envelope.dst)
        stats = self.stats[link]
        stats.messages += 1
        stats.bytes += encoded_size(envelope)
        if link in self.blocked or (self.loss and self._rng.random() < self.loss):
            stats.dropped += 1
            return []
        copies = 2 if self.duplicate and self._rng.random() < self.duplicate else 1
        base = self.delay(*link)
        return [now + base + self._rng.random() * self.jitter for _ in range(copies)]

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
