"""Who pulls from this node: the slots the `spread` sync-source policy hands out.

A source admits a puller when its first pull request arrives and keeps its slot while the
puller shows it still uses this node: every later pull request and every position report
(`UpdatePosition`, sent upstream at least every keep-alive period) refreshes it. A puller
that goes quiet for `expiry` seconds of the engine's clock (crashed, cut off, moved on with
its cancel lost) loses its slot; one that is refused or closes its stream loses it at once.
Only time passed in by the caller is used, so the table is as deterministic as the engine.

With a `limit`, a new puller beyond it is refused unless its request says it found no
source with a free slot (`overflow`): the cap steers the tree but never strands a member.
"""

from __future__ import annotations

import math

from protocols.errors import CallerError
from protocols.types import NodeId


class PullerSlots:
    """The members pulling from this node, each with when it was last heard pulling."""

    def __init__(self, limit: int | None, expiry: float) -> None:
        if limit is not None and limit < 1:
            raise CallerError(f"PullerSlots.limit: must be >= 1 or None, got {limit}")
        if not (math.isfinite(expiry) and expiry > 0):
            raise CallerError(f"PullerSlots.expiry: must be a finite number > 0, got {expiry}")
        self.limit = limit
        self._expiry = expiry
        self._heard: dict[NodeId, float] = {}  # puller -> last time heard pulling

    def admit(self, node: NodeId, now: float, *, overflow: bool = False) -> bool:
        """Take (or keep) a slot for `node`; False: the table is full and it may not exceed it."""
        self._expire(now)
        if node in self._heard or overflow or self.limit is None or len(self._heard) < self.limit:
            self._heard[node] = now
            return True
        return False

    def refresh(self, node: NodeId, now: float) -> None:
        """`node` showed it still pulls from us; a node without a slot does not get one."""
        if node in self._heard:
            self._heard[node] = max(self._heard[node], now)

    def release(self, node: NodeId) -> None:
        self._heard.pop(node, None)

    def holds(self, node: NodeId, now: float) -> bool:
        """Does `node` still hold a slot at `now`?"""
        self._expire(now)
        return node in self._heard

    def pullers(self, now: float) -> tuple[NodeId, ...]:
        """The members holding a slot at `now`, in the order they were admitted."""
        self._expire(now)
        return tuple(self._heard)

    def count(self, now: float) -> int:
        return len(self.pullers(now))

    def _expire(self, now: float) -> None:
        horizon = now - self._expiry
        for node in [n for n, heard in self._heard.items() if heard < horizon]:
            del self._heard[node]
