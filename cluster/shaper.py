"""The link shaper: WAN delay, jitter, loss, bandwidth and partitions, applied by the sender.

These machines' kernels have no netem, so a node emulates the network on its own outgoing
links: before a frame is written to a peer, the shaper decides whether the link loses it and,
if not, when it may leave. Doing it in the transport works the same on loopback and in network
namespaces. Each node shapes only its outgoing direction, so an asymmetric matrix or a one-way
partition is simply a different setting on each side.

A link keeps FIFO order like a real one, even with jitter: a frame is delivered at
``max(previous delivery, serialisation done + delay + jitter)``, where serialisation models the
bandwidth cap (the link is busy ``size / bandwidth`` seconds per frame). Delay is one-way;
jitter is uniform in ``[-jitter, +jitter]`` and never makes the delay negative.

The shaper is pure bookkeeping: it takes `now` from the caller and draws from an injected
`random.Random`, so its decisions replay exactly in a test.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from protocols.errors import CallerError
from protocols.types import NodeId


@dataclass(frozen=True, slots=True)
class LinkSpec:
    """How one outgoing link behaves. The default is a perfect link."""

    delay: float = 0.0  # one-way, seconds
    jitter: float = 0.0  # seconds, uniform +/- around `delay`
    loss: float = 0.0  # probability that a frame is dropped
    bandwidth: float | None = None  # bytes per second; None: unlimited
    partitioned: bool = False  # drop everything on this link

    def __post_init__(self) -> None:
        if self.delay < 0 or self.jitter < 0:
            raise CallerError("delay and jitter must be >= 0")
        if not 0.0 <= self.loss <= 1.0:
            raise CallerError(f"loss must be a probability, got {self.loss}")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise CallerError("bandwidth must be > 0 bytes/s (or None for unlimited)")

    @property
    def is_perfect(self) -> bool:
        return self == PERFECT


PERFECT = LinkSpec()


class Drop(Enum):
    """Why the shaper refused a frame."""

    PARTITION = "partition"
    LOSS = "loss"


class LinkShaper:
    """Per-destination link settings and the FIFO delivery clock of each link.

    Settings can change at any time (the nemesis does it mid-run); frames already scheduled
    keep their delivery time, and the caller re-checks `is_partitioned` when a frame is about
    to leave, so a partition also cuts what is still "on the wire".
    """

    def __init__(self, rng: random.Random, links: Mapping[NodeId, LinkSpec] | None = None) -> None:
        self._rng = rng
        self._links: dict[NodeId, LinkSpec] = dict(links or {})
        self._last_delivery: dict[NodeId, float] = {}
        self._busy_until: dict[NodeId, float] = {}

    def link(self, dst: NodeId) -> LinkSpec:
        return self._links.get(dst, PERFECT)

    def links(self) -> dict[NodeId, LinkSpec]:
        return dict(self._links)

    def set_link(self, dst: NodeId, spec: LinkSpec) -> None:
        if spec.is_perfect:
            self._links.pop(dst, None)
        else:
            self._links[dst] = spec

    def update_link(self, dst: NodeId, **changes: Any) -> LinkSpec:
        """Change some fields of one link, e.g. ``update_link("n2", partitioned=True)``."""
        try:
            spec = replace(self.link(dst), **changes)
        except TypeError as error:
            raise CallerError(f"unknown link setting: {error}") from error
        self.set_link(dst, spec)
        return spec

    def configure(self, links: Mapping[NodeId, LinkSpec]) -> None:
        """Replace every link's settings at once (a latency-matrix row for this node)."""
        self._links = {dst: spec for dst, spec in links.items() if not spec.is_perfect}

    def is_partitioned(self, dst: NodeId) -> bool:
        return self.link(dst).partitioned

    def schedule(self, dst: NodeId, size: int, now: float) -> float | Drop:
        """When a frame of `size` bytes handed over at `now` is delivered, or why it is lost."""
        spec = self._links.get(dst)
        if spec is None:  # perfect link: keep FIFO with anything still delayed
            at = max(now, self._last_delivery.get(dst, now))
            self._last_delivery[dst] = at
            return at
        if spec.partitioned:
            return Drop.PARTITION
        if spec.loss > 0.0 and self._rng.random() < spec.loss:
            return Drop.LOSS
        sent = now
        if spec.bandwidth is not None:
            sent = max(now, self._busy_until.get(dst, now)) + size / spec.bandwidth
            self._busy_until[dst] = sent
        delay = spec.delay
        if spec.jitter > 0.0:
            delay = max(0.0, delay + self._rng.uniform(-spec.jitter, spec.jitter))
        at = max(sent + delay, self._last_delivery.get(dst, now))
        self._last_delivery[dst] = at
        return at

    def forget(self, dst: NodeId) -> None:
        """Drop a removed member's link state."""
        self._links.pop(dst, None)
        self._last_delivery.pop(dst, None)
        self._busy_until.pop(dst, None)
