"""A scenario's membership actions on the simulator, and what they show (`workloads.catchup`).

The simulator's nemesis proposes a change and forgets it; a scenario needs more: a change that
finds no leader, or one that is not ready yet (the leader has committed nothing in its term, or
the previous change is pending), is retried every 20 ms; a newcomer is watched every
millisecond of virtual time until it has applied the entry that added it, then promoted (its
catch-up counts from the moment the leader took the add); a removed member is stopped once the
removal is committed. So the run advances in small steps while something is
being watched, and in one go otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cluster.sim.nemesis import Action, Fault
from cluster.sim.simulator import Simulator
from protocols.membership import ChangeKind
from protocols.types import NodeId
from workloads.catchup import CatchUpObservation
from workloads.scenario import FaultAction, Scenario

STEP = 0.001  # virtual seconds between looks while something is watched
RETRY = 0.02  # between attempts at a change that found no leader or was not ready
GIVE_UP = 15.0  # a change not in the leader's configuration after this long is recorded failed


@dataclass(slots=True)
class _Pending:
    due: float
    kind: ChangeKind
    node: NodeId
    first: float
    voter: bool = True  # add: promote once caught up


@dataclass(slots=True)
class _Watch:
    observation: CatchUpObservation
    sent_before: dict[NodeId, int]
    voter: bool


class SimMembership:
    """Drives `scenario`'s add-node/remove-node on `sim` (times shifted by the warm-up)."""

    def __init__(self, sim: Simulator, scenario: Scenario) -> None:
        self.sim = sim
        offset = scenario.timing.warmup
        self._pending = [
            _Pending(
                spec.at + offset,
                ChangeKind.ADD_LEARNER
                if spec.action is FaultAction.ADD_NODE
                else ChangeKind.REMOVE,
                spec.node or "",
                spec.at + offset,
                spec.voter,
            )
            for spec in sorted(scenario.faults, key=lambda f: f.at)
            if spec.is_membership
        ]
        self._watches: list[_Watch] = []
        self._removing: list[NodeId] = []
        self.catchups: list[CatchUpObservation] = []
        self.changes: list[dict[str, Any]] = []

    def run_until(self, end: float) -> None:
        sim = self.sim
        while sim.stopped_by is None:
            busy = bool(self._watches or self._removing)
            due = min((p.due for p in self._pending), default=end)
            target = min(end, due, sim.now + STEP) if busy else min(end, due)
            sim.run_until(target)
            self._propose_due()
            self._look()
            if sim.now >= end and not any(p.due <= sim.now for p in self._pending):
                return

    def metadata(self) -> dict[str, Any]:
        return {
            "changes": self.changes,
            "catchups": [observation.to_dict() for observation in self.catchups],
        }

    # ---- changes -------------------------------------------------------------------------

    def _propose_due(self) -> None:
        sim = self.sim
        for pending in [p for p in self._pending if p.due <= sim.now]:
            self._pending.remove(pending)
            if not self._propose(pending):
                if sim.now - pending.first < GIVE_UP:
                    pending.due = sim.now + RETRY
                    self._pending.append(pending)
                else:
                    self._log(pending.kind, pending.node, ok=False, detail="no leader took it")

    def _propose(self, pending: _Pending) -> bool:
        """Propose at the leader now; True when its configuration shows the change."""
        sim = self.sim
        leader = sim.leader_now()
        if leader is None:
            return False
        fault = Fault(sim.now, Action.CHANGE, (pending.node,), change=pending.kind.value)
        sent = self._sent_to(pending.node)
        sim.inject(fault)
        sim.run_until(sim.now)
        engine = sim.nodes[leader].engine
        if engine is None:
            return False
        status = engine.status()
        membership = status.membership
        role = membership.role_of(pending.node) if membership is not None else None
        wanted = {
            ChangeKind.ADD_LEARNER: "learner",
            ChangeKind.PROMOTE: "voter",
            ChangeKind.REMOVE: None,
        }[pending.kind]
        if role != wanted:
            return False
        self._log(pending.kind, pending.node, ok=True, detail=f"at {leader}")
        if pending.kind is ChangeKind.ADD_LEARNER:
            observation = CatchUpObservation(pending.node, sim.now, status.config_index, leader)
            observation.primary_sent = [self._sent_by(leader)]
            self.catchups.append(observation)
            self._watches.append(_Watch(observation, sent, pending.voter))
        elif pending.kind is ChangeKind.PROMOTE:
            for observation in self.catchups:
                if observation.node == pending.node and observation.promoted is None:
                    observation.promoted = sim.now
        else:
            self._removing.append(pending.node)
        return True

    def _log(self, kind: ChangeKind, node: NodeId, ok: bool, detail: str) -> None:
        self.changes.append(
            {"t": round(self.sim.now, 6), "change": kind.value, "node": node, "ok": ok}
            | {"detail": detail}
        )

    # ---- watching ------------------------------------------------------------------------

    def _look(self) -> None:
        sim = self.sim
        for watch in list(self._watches):
            node = sim.nodes[watch.observation.node]
            if node.engine is None:
                continue
            status = node.engine.status()
            observation = watch.observation
            if status.applied < observation.index:
                continue
            self._watches.remove(watch)
            observation.caught_up = sim.now
            observation.applied = status.applied
            observation.snapshot_index = status.snapshot_index
            observation.sync_source = status.sync_source
            after = self._sent_to(observation.node)
            observation.received = {
                peer: after.get(peer, 0) - watch.sent_before.get(peer, 0)
                for peer in sorted(after)
                if after.get(peer, 0) - watch.sent_before.get(peer, 0) > 0
            }
            observation.primary_sent.append(self._sent_by(observation.primary))
            if watch.voter:
                self._pending.append(
                    _Pending(sim.now, ChangeKind.PROMOTE, observation.node, sim.now)
                )
        for node_id in list(self._removing):
            leader = sim.leader_now()
            engine = sim.nodes[leader].engine if leader is not None else None
            if engine is None:
                continue
            status = engine.status()
            gone = status.membership is not None and status.membership.role_of(node_id) is None
            if gone and status.config_committed:
                self._removing.remove(node_id)
                sim.inject(Fault(sim.now, Action.CRASH, (node_id,)))
                sim.run_until(sim.now)

    def _sent_by(self, node: NodeId) -> int:
        return sum(s.bytes for (src, _dst), s in self.sim.network.stats.items() if src == node)

    def _sent_to(self, node: NodeId) -> dict[NodeId, int]:
        """Bytes each peer has sent `node` so far (the simulated network's counters)."""
        return {
            src: stats.bytes for (src, dst), stats in self.sim.network.stats.items() if dst == node
        }


__all__ = ["SimMembership"]
