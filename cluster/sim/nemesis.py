"""The simulator's nemesis: a seeded schedule of crashes, restarts, partitions and changes.

Faults arrive at random (exponential gaps) until the end of the run; each crash is paired
with a restart and each partition with a heal, so that at the end the cluster can recover and
be checked as a whole. With membership changes ("membership", and "all"), configuration
changes arrive as well, from a stream of their own (so the crashes and partitions of a seed
are the ones it had before changes existed); what each one changes is chosen when it fires,
from the configuration the leader then has (see Simulator).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import Enum

from protocols.types import NodeId

FAULT_MODES = ("none", "crash", "partition", "membership", "all")
MEMBERSHIP_MODES = ("membership", "all")  # the modes that change the configuration


class Action(Enum):
    CRASH = "crash"
    RESTART = "restart"
    PAUSE = "pause"
    RESUME = "resume"
    PARTITION = "partition"
    ONE_WAY = "one-way"
    HEAL = "heal"
    SLOW_LINK = "slow-link"
    SLOW_DISK = "slow-disk"
    CHANGE = "change"  # a membership change proposed at the leader


LEADER = "leader"  # in `nodes`: whoever leads when the fault fires


@dataclass(frozen=True, slots=True)
class Fault:
    time: float
    action: Action
    nodes: tuple[NodeId, ...] = ()  # CRASH/RESTART/...: the node; ONE_WAY: (src, dst) pairs
    groups: tuple[tuple[NodeId, ...], ...] = ()  # PARTITION
    delay: float = 0.0  # SLOW_LINK / SLOW_DISK: seconds added (0 clears it)
    jitter: float = 0.0
    loss: float = 0.0
    ref: int = 0  # faults sharing a ref aim at the same node: an undo hits what was crashed
    change: str = ""  # CHANGE: a ChangeKind value for `nodes[0]`; empty: chosen when it fires

    def describe(self) -> str:
        if self.action is Action.PARTITION:
            return "partition " + " | ".join(",".join(g) for g in self.groups)
        if self.action is Action.ONE_WAY:
            pairs = zip(self.nodes[::2], self.nodes[1::2], strict=True)
            return "one-way " + " ".join(f"{a}-/->{b}" for a, b in pairs)
        if self.action is Action.CHANGE:
            return f"change {self.change or 'random'} {','.join(self.nodes)}".strip()
        extra = f" +{self.delay * 1000:g}ms" if self.delay else ""
        return f"{self.action.value} {','.join(self.nodes)}{extra}".strip()


def schedule(
    rng: random.Random,
    nodes: tuple[NodeId, ...],
    mode: str,
    duration: float,
    mean_gap: float = 1.5,
    start: float = 1.0,
) -> list[Fault]:
    """A fault schedule for `mode` ("none", "crash", "partition", "all") over `duration`."""
    if mode not in FAULT_MODES:
        raise ValueError(f"unknown fault mode {mode!r}; choose one of {', '.join(FAULT_MODES)}")
    if mode == "none":
        return []
    kinds = {
        "crash": ["crash"],
        "partition": ["partition"],
        "membership": ["crash", "partition"],
        "all": ["crash", "partition"],
    }[mode]
    faults: list[Fault] = []
    down_until: dict[NodeId, float] = {}
    partition_until = 0.0
    now = start
    while True:
        now += rng.expovariate(1.0 / mean_gap)
        if now >= duration:
            break
        kind = rng.choice(kinds)
        if kind == "crash":
            alive = [n for n in nodes if down_until.get(n, 0.0) <= now]
            if not alive:
                continue
            node = rng.choice(alive)
            back = min(now + rng.uniform(0.2, 2.5), duration)
            down_until[node] = back
            faults.append(Fault(now, Action.CRASH, (node,)))
            faults.append(Fault(back, Action.RESTART, (node,)))
        elif now >= partition_until:
            heal = min(now + rng.uniform(0.5, 3.0), duration)
            partition_until = heal
            if rng.random() < 0.7:
                shuffled = list(nodes)
                rng.shuffle(shuffled)
                cut = rng.randint(1, len(nodes) // 2)
                groups = (tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:])))
                faults.append(Fault(now, Action.PARTITION, groups=groups))
            else:
                pairs: list[NodeId] = []
                for _ in range(rng.randint(1, len(nodes))):
                    src, dst = rng.sample(nodes, 2)
                    pairs.extend((src, dst))
                faults.append(Fault(now, Action.ONE_WAY, tuple(pairs)))
            faults.append(Fault(heal, Action.HEAL))
    if mode in MEMBERSHIP_MODES:
        changes = random.Random(rng.getrandbits(64))
        now = start
        while True:
            now += changes.expovariate(2.0 / mean_gap)  # twice as often as the other faults
            if now >= duration:
                break
            faults.append(Fault(now, Action.CHANGE))
    faults.sort(key=lambda fault: fault.time)
    return faults
