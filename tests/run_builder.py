"""Small, fully deterministic run records for the summary and report tests.

The default run: 3 nodes (n1, n2 in region "a", n3 in "b"), one operation every 10 ms from
t = 0.005 to 11.995 (process i % 8), measured window [1, 11). Every 5th operation is a
linearizable read of a key nobody writes; the others write a fresh key with a fresh value.
Latency is 1 ms, or 10 ms for every 10th operation. An outage [outage_start, outage_end) makes
every operation that would complete inside it fail. The node time series and the link/node
tables are spelled out by the tests that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workloads.results import FaultRecord, OpRecord, RunRecord

STEP = 0.01
FIRST = 0.005
COUNT = 1200
WINDOW = (1.0, 11.0)
REGIONS = {"n1": "a", "n2": "a", "n3": "b"}


def latency_of(i: int, slow: float = 0.010, fast: float = 0.001) -> float:
    return slow if i % 10 == 9 else fast


@dataclass
class Spec:
    scenario: str = "leader-crash"
    label: str = "push"
    trial: int = 0
    engine: str = "sim"
    step: float = STEP
    count: int = COUNT
    latency: Callable[[int], float] = latency_of
    outage: tuple[float, float] | None = None
    faults: list[FaultRecord] = field(default_factory=list)
    timeseries: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    extra_ops: list[OpRecord] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)


def invoke_of(i: int, step: float = STEP) -> float:
    return FIRST + step * i


def make_ops(spec: Spec) -> list[OpRecord]:
    ops = []
    for i in range(spec.count):
        invoke = invoke_of(i, spec.step)
        complete = invoke + spec.latency(i)
        outcome = "ok"
        if spec.outage and spec.outage[0] <= complete < spec.outage[1]:
            outcome = "fail"
        if i % 5 == 4:
            ops.append(
                OpRecord(i % 8, "read", "never-written", None, invoke, complete, outcome, None)
            )
        else:
            ops.append(OpRecord(i % 8, "write", f"k{i}", f"v{i}", invoke, complete, outcome))
    return ops + spec.extra_ops


def make_record(spec: Spec) -> RunRecord:
    metadata = {
        "scenario": spec.scenario,
        "label": spec.label,
        "protocol": spec.label.split(":")[0],
        "engine": spec.engine,
        "seed": 7,
        "trial": spec.trial,
        "command": f"raftbench run {spec.scenario} --protocols {spec.label}",
        "window": list(WINDOW),
        "machine": {"cores": 2, "cpu": "Test CPU", "memory_kib": 4 * 2**20},
        "versions": {"raftbench": "0.1.0", "git": "abc1234"},
        "fsync": "always",
        "driver": {"cpu_share": 0.25, "ceiling": 400.0},
        "scenario_raw": {"description": "a hand-made run"},
        **spec.metadata,
    }
    return RunRecord(
        metadata=metadata,
        ops=make_ops(spec),
        timeseries=spec.timeseries,
        links=spec.links,
        regions=dict(REGIONS),
        nodes=spec.nodes,
        faults=spec.faults,
    )


# ---- the leader-crash story used by several tests -------------------------------------------
# n1 leads (term 1) until it crashes at 5.0; nobody leads until n2 wins term 2 at 6.2; n1 is
# back as a follower at 9.0. Lags behind the leader: n2 1, n3 2 (term 1); n3 3, n1 5 (term 2).

CRASH_AT = 5.0
ELECTED_AT = 6.2
RESTART_AT = 9.0


def crash_timeseries() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for k in range(120):
        t = round(k * 0.1, 10)
        base = 10 * k
        if k < 50:
            roles = {"n1": ("leader", 1, 0), "n2": ("follower", 1, 1), "n3": ("follower", 1, 2)}
        elif k < 62:
            roles = {"n2": ("candidate", 2, 1), "n3": ("follower", 1, 2)}
        else:
            roles = {"n2": ("leader", 2, 0), "n3": ("follower", 2, 3)}
            if k >= 90:
                roles["n1"] = ("follower", 2, 5)
        for node in ("n1", "n2", "n3"):
            up = node in roles
            role, term, lag = roles.get(node, ("follower", 1, 0))
            rows.append(
                {
                    "t": t,
                    "node": node,
                    "up": up,
                    "role": role,
                    "term": term,
                    "commit": base - lag,
                    "applied": base - lag,
                    "last": base,
                }
            )
    return rows


CRASH_LINKS = [
    {"src": "n1", "dst": "n2", "bytes": 1000, "messages": 10},
    {"src": "n1", "dst": "n3", "bytes": 1000, "messages": 10},
    {"src": "n2", "dst": "n1", "bytes": 100, "messages": 10},
    {"src": "n2", "dst": "n3", "bytes": 500, "messages": 5},
    {"src": "n3", "dst": "n1", "bytes": 50, "messages": 5},
    {"src": "n3", "dst": "n2", "bytes": 50, "messages": 5},
]

CRASH_NODES = {
    "n1": {"region": "a", "cpu_seconds": 4.0, "bytes_sent": 2000, "leader_time": 4.0},
    "n2": {"region": "a", "cpu_seconds": 3.0, "bytes_sent": 600, "leader_time": 4.8},
    "n3": {"region": "b", "cpu_seconds": 1.0, "bytes_sent": 100, "leader_time": 0.0},
}


def crash_spec(**changes: Any) -> Spec:
    spec = Spec(
        outage=(CRASH_AT, 6.5),
        faults=[
            FaultRecord(CRASH_AT, "crash", ("n1",), "kill -9 the leader"),
            FaultRecord(RESTART_AT, "restart", ("n1",), ""),
        ],
        timeseries=crash_timeseries(),
        links=[dict(link) for link in CRASH_LINKS],
        nodes={node: dict(info) for node, info in CRASH_NODES.items()},
    )
    for key, value in changes.items():
        setattr(spec, key, value)
    return spec
