"""A scenario's membership actions on real processes, and what they show (`workloads.catchup`).

`add-node` adds the node as a learner at the leader (the launcher retries while there is no
leader or it is not ready), polls the newcomer's /status every `POLL` seconds until it has
applied the entry that added it, reads every node's peer counters at both ends (what the
newcomer received, from whom), then promotes it unless the scenario says `voter = false`.
`remove-node` removes a member and stops its process. Both block in a worker thread (the
launcher's client is synchronous), so the run's clock and sampler keep going.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import httpx

from cluster.nemesis import NemesisError
from cluster.target import Target
from protocols.types import NodeId
from workloads.catchup import CatchUpObservation
from workloads.node_sampler import NodeSampler, NodeTotals
from workloads.results import FaultRecord
from workloads.scenario import FaultAction, FaultSpec

POLL = 0.02  # seconds between looks at a newcomer's /status


class RealMembership:
    """Runs add-node/remove-node on `cluster`; `catchups` and `changes` are what it saw."""

    def __init__(self, cluster: Target, sampler: NodeSampler, clock: Callable[[], float]) -> None:
        self.cluster = cluster
        self.sampler = sampler
        self.clock = clock
        self.catchups: list[CatchUpObservation] = []
        self.changes: list[dict[str, Any]] = []

    def metadata(self) -> dict[str, Any]:
        return {
            "changes": self.changes,
            "catchups": [observation.to_dict() for observation in self.catchups],
        }

    async def act(self, spec: FaultSpec) -> FaultRecord:
        """Take one membership action; the record says what happened (or why it did not)."""
        node = spec.node or ""
        t = self.clock()
        try:
            if spec.action is FaultAction.ADD_NODE:
                detail = await self._add(node, spec.voter)
            else:
                await self._change("remove", node)
                detail = f"removed {node}, its process stopped"
        except NemesisError as error:
            return FaultRecord(round(t, 4), "skipped", (node,), f"{spec.describe()}: {error}")
        took = self.clock() - t
        return FaultRecord(round(t, 4), spec.action.value, (node,), detail, round(took, 4))

    async def _change(self, change: str, node: NodeId) -> dict[str, Any]:
        t = self.clock()
        try:
            answer = await anyio.to_thread.run_sync(self.cluster.change_membership, change, node)
        except NemesisError as error:
            self._log(t, change, node, False, str(error))
            raise
        self._log(t, change, node, True, f"index {answer.get('index')}")
        return answer

    def _log(self, t: float, change: str, node: NodeId, ok: bool, detail: str) -> None:
        self.changes.append(
            {"t": round(t, 4), "change": change, "node": node, "ok": ok, "detail": detail}
        )

    async def _add(self, node: NodeId, voter: bool) -> str:
        primary = await self.sampler.current_leader()
        before = await self.sampler.snapshot()
        added = self.clock()
        answer = await self._change("add-learner", node)
        index = int(answer.get("index") or (answer.get("membership") or {}).get("index") or 0)
        if primary is None:
            primary = await self.sampler.current_leader()
        observation = CatchUpObservation(node, added, index, primary or "unknown")
        if primary in before:
            observation.primary_cpu = [before[primary].cpu]
            observation.primary_sent = [int(before[primary].sum("sent"))]
        self.catchups.append(observation)
        status = await self._wait_caught_up(node, index)
        observation.caught_up = self.clock()
        observation.applied = int(status.get("applied") or 0)
        observation.snapshot_index = int(status.get("snapshot_index") or 0)
        source = status.get("sync_source")
        observation.sync_source = str(source) if source else None
        after = await self.sampler.snapshot()
        observation.received = _received(before, after, node)
        if primary in after and observation.primary_sent:
            observation.primary_cpu.append(after[primary].cpu)
            observation.primary_sent.append(int(after[primary].sum("sent")))
        detail = f"caught up in {observation.caught_up - added:.3f} s"
        if voter:
            await self._change("promote", node)
            observation.promoted = self.clock()
            detail += ", promoted"
        return detail

    async def _wait_caught_up(self, node: NodeId, index: int) -> dict[str, Any]:
        """Poll until the newcomer has applied `index` (cancelled with the schedule at the end
        of the run: the observation then stays not caught up)."""
        async with httpx.AsyncClient(trust_env=False, timeout=1.0) as http:
            while True:
                status = await self.cluster.status(http, node)
                if status is not None and int(status.get("applied") or 0) >= index:
                    return status
                await anyio.sleep(POLL)


def _received(
    before: dict[NodeId, NodeTotals], after: dict[NodeId, NodeTotals], node: NodeId
) -> dict[NodeId, int]:
    """Peer bytes `node` received between two readings of its counters, per sender."""
    if node not in before or node not in after:
        return {}
    out = {}
    for peer in sorted(after):
        got = after[node].get(peer, "received", "bytes") - before[node].get(
            peer, "received", "bytes"
        )
        if peer != node and got > 0:
            out[peer] = int(got)
    return out


__all__ = ["POLL", "RealMembership"]
