"""The link shaper: WAN delay, jitter, loss, bandwidth and partitions, applied by the sender.

These machines' kernels have no netem, so a node emulates the network on its own outgoing
links: before a frame is written to a peer, the shaper decides whether the link loses it and,
if not, when it may leave. Doing it in the transport works the same on loopback and in network
namespaces. Each node shapes only its outgoing direction, so an asymmetric matrix or a one-way
partition is simply a different setting on each side.

A link keeps FIFO order like a real one, even with jitter: a frame is delivered at
``max(previous delivery, serialisation done + delay + jitter)``, where serialisation models the
bandwidth caps. Delay is one-way; jitter is uniform in ``[-jitter, +jitter]`` and never makes
the delay negative.

Bandwidth is capped at up to three places a frame passes through, each a serialiser busy
``size / rate`` seconds per frame: the link's own `bandwidth`, the node's share of a WAN pipe
towards the peer's region (`EgressCaps.pipes`), and the node's whole uplink
(`EgressCaps.total`, shared by all its links, like a NIC). A frame waits until every pipe on
its path is free and then occupies each for its own ``size / rate``; so no pipe ever carries
more than its rate, and frames of all links share a node's pipes in the order they were handed
over. `SerialPipes` is that bookkeeping alone; the simulator's network uses it too, so both
engines see the same schedule for the same frames.

The shaper is pure bookkeeping: it takes `now` from the caller and draws from an injected
`random.Random`, so its decisions replay exactly in a test.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from protocols.egress import PipeLoad
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


@dataclass(frozen=True, slots=True)
class EgressCaps:
    """A node's shared outgoing pipes, in bytes per second of encoded envelopes.

    `total` caps everything the node sends to its peers; `pipes` names each shared pipe
    (e.g. "the WAN towards us-west") with its rate, and `pipe_of` says which pipe each peer's
    link goes through. A peer in no pipe is capped by `total` alone.
    """

    total: float | None = None
    pipes: Mapping[str, float] = field(default_factory=dict)
    pipe_of: Mapping[NodeId, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.total is not None and not self.total > 0:
            raise CallerError("egress total must be > 0 bytes/s (or None for unlimited)")
        for name, rate in self.pipes.items():
            if not rate > 0:
                raise CallerError(f"egress pipe {name!r} must be > 0 bytes/s")
        for peer, name in self.pipe_of.items():
            if name not in self.pipes:
                raise CallerError(f"peer {peer!r} goes through unknown egress pipe {name!r}")

    @property
    def is_unlimited(self) -> bool:
        return self.total is None and not self.pipe_of

    def path(self, dst: NodeId) -> list[tuple[Hashable, float]]:
        """The shared pipes a frame to `dst` passes through, as (key, bytes/s)."""
        path: list[tuple[Hashable, float]] = []
        name = self.pipe_of.get(dst)
        if name is not None:
            path.append((("pipe", name), self.pipes[name]))
        if self.total is not None:
            path.append((("total",), self.total))
        return path


UNLIMITED = EgressCaps()


class SerialPipes:
    """When each serialiser (link, WAN pipe, uplink) is next free; pure bookkeeping."""

    def __init__(self) -> None:
        self._busy_until: dict[Hashable, float] = {}

    def pass_through(self, path: Sequence[tuple[Hashable, float]], size: int, now: float) -> float:
        """When a frame of `size` bytes handed over at `now` has left every pipe of `path`."""
        if not path:
            return now
        start = max([now, *(self._busy_until.get(key, now) for key, _ in path)])
        done = start
        for key, rate in path:
            finish = start + size / rate
            self._busy_until[key] = finish
            done = max(done, finish)
        return done

    def busy_until(self, key: Hashable) -> float | None:
        return self._busy_until.get(key)

    def loads(self, path: Sequence[tuple[Hashable, float]], now: float) -> list[PipeLoad]:
        """How much each pipe of `path` still holds beyond `now` (an engine's back-pressure)."""
        return [
            PipeLoad(key, max(0.0, self._busy_until.get(key, now) - now), rate)
            for key, rate in path
        ]

    def forget(self, key: Hashable) -> None:
        self._busy_until.pop(key, None)


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

    def __init__(
        self,
        rng: random.Random,
        links: Mapping[NodeId, LinkSpec] | None = None,
        egress: EgressCaps = UNLIMITED,
    ) -> None:
        self._rng = rng
        self._links: dict[NodeId, LinkSpec] = dict(links or {})
        self._egress = egress
        self._last_delivery: dict[NodeId, float] = {}
        self._pipes = SerialPipes()

    @property
    def egress(self) -> EgressCaps:
        return self._egress

    def set_egress(self, caps: EgressCaps) -> None:
        """Replace the node's shared egress caps (frames already scheduled keep their times)."""
        self._egress = caps

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
        egress = self._egress
        if spec is None and egress.is_unlimited:  # keep FIFO with anything still delayed
            at = max(now, self._last_delivery.get(dst, now))
            self._last_delivery[dst] = at
            return at
        if spec is None:
            spec = PERFECT
        if spec.partitioned:
            return Drop.PARTITION
        if spec.loss > 0.0 and self._rng.random() < spec.loss:
            return Drop.LOSS
        path = egress.path(dst)
        if spec.bandwidth is not None:
            path.insert(0, (("link", dst), spec.bandwidth))
        sent = self._pipes.pass_through(path, size, now)
        delay = spec.delay
        if spec.jitter > 0.0:
            delay = max(0.0, delay + self._rng.uniform(-spec.jitter, spec.jitter))
        at = max(sent + delay, self._last_delivery.get(dst, now))
        self._last_delivery[dst] = at
        return at

    def pipe_loads(self, dst: NodeId, now: float) -> list[PipeLoad]:
        """The capped pipes towards `dst` and what they hold (`protocols.egress.EgressGauge`)."""
        spec = self._links.get(dst)
        path = self._egress.path(dst)
        if spec is not None and spec.bandwidth is not None:
            path.insert(0, (("link", dst), spec.bandwidth))
        return self._pipes.loads(path, now)

    def forget(self, dst: NodeId) -> None:
        """Drop a removed member's link state."""
        self._links.pop(dst, None)
        self._last_delivery.pop(dst, None)
        self._pipes.forget(("link", dst))
