"""Real processes under faults: concurrent clients while the nemesis kills, pauses and cuts.

For each protocol, a cluster of node processes on loopback serves concurrent clients doing
put / get / compare-and-set with unique values on a few keys, while a seeded nemesis schedule
kill -9s and restarts, pauses and resumes, and partitions nodes (the leader often). Then
everything is healed and three things are checked:

1. **Linearizability** of the whole history (workloads.checker), final reads included: after
   healing, one more client reads every key linearizably, so the final state is part of the
   history. A write whose outcome the client never learned (timeout, lost connection,
   unknown-outcome answer) is recorded as unknown: it may have happened at any time after its
   invocation, or never.
2. **Every acknowledged write is in the committed log.** Once the nodes are stopped, each
   node's durable log is opened directly; every write a client saw acknowledged (a put, or a
   compare-and-set that answered ok) must be an entry of the committed prefix (values are
   unique, so the entry is found by key and value). The committed prefixes of all nodes must
   agree with each other, entry for entry.
3. **Replicas converge**: after healing, every node's local read of every key equals the final
   linearizable value.

The CI variant runs 3 nodes for about 12 s per protocol; a 5-node, 2-minute variant with more
fault kinds is marked `slow` (run it with ``pytest -m slow tests/test_fault_real.py``).
The numbers of a run (operations, faults, acknowledged writes checked) are printed (``-s``).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest

from cluster.client import BadRequest, ClientError, RaftbenchClient
from cluster.launcher import ClusterSpec, LocalCluster
from cluster.nemesis import FaultEvent, Nemesis, random_schedule, run_schedule
from cluster.storage import open_store
from protocols.types import Command, Entry, Op
from workloads.checker import LINEARIZABLE, Operation, check_operations
from workloads.checker.history import Value

pytestmark = pytest.mark.anyio

KEYS = ("a", "b", "c", "d")
OP_TIMEOUT = 4.0  # per client operation, retries included
SETTLE_TIMEOUT = 60.0  # guards against hangs only


@dataclass
class History:
    """Operations in the checker's form, with process numbers handed out here."""

    clock_origin: float = field(default_factory=time.monotonic)
    ops: list[Operation] = field(default_factory=list)
    next_process: int = 0

    def now(self) -> float:
        return time.monotonic() - self.clock_origin

    def new_process(self) -> int:
        self.next_process += 1
        return self.next_process

    def add(
        self, process: int, f: str, key: str, value: Value, invoke: float, outcome: str
    ) -> None:
        complete = None if outcome == "unknown" else self.now()
        self.ops.append(Operation(process, f, key, value, invoke, complete, outcome))


@dataclass
class RunSummary:
    operations: int
    outcomes: dict[str, int]
    faults: dict[str, int]
    acked_writes: int
    committed_entries: int
    check_verdict: str
    events: list[FaultEvent]

    def line(self, protocol: str) -> str:
        return (
            f"[{protocol}] operations={self.operations} outcomes={self.outcomes} "
            f"faults={self.faults} acked_writes_checked={self.acked_writes} "
            f"committed_entries={self.committed_entries} verdict={self.check_verdict}\n"
            + "\n".join(
                f"  {e.time:6.2f} s {e.kind} {','.join(e.nodes)} {e.detail}" for e in self.events
            )
        )


async def client_loop(
    index: int, endpoints: list[str], history: History, stop_at: float, seed: int
) -> None:
    """One closed-loop client: put / get / cas with unique values until `stop_at`."""
    rng = random.Random(seed)
    process = history.new_process()
    seen: dict[str, str | None] = {}
    count = 0
    async with RaftbenchClient(
        endpoints, client_id=f"w{index}", timeout=OP_TIMEOUT, attempt_timeout=1.5
    ) as client:
        while history.now() < stop_at:
            key = rng.choice(KEYS)
            count += 1
            value = f"w{index}-{count}"
            roll = rng.random()
            invoke = history.now()
            try:
                if roll < 0.35:
                    result = await client.get(key)
                    seen[key] = result.value
                    history.add(process, "read", key, result.value, invoke, "ok")
                elif roll < 0.75:
                    written = await client.put(key, value)
                    # ok False would be a stale duplicate: the client cannot know what happened.
                    history.add(
                        process, "write", key, value, invoke, "ok" if written.ok else "unknown"
                    )
                    if not written.ok:
                        process = history.new_process()
                else:
                    expected = seen.get(key)
                    swapped = await client.cas(key, expected, value)
                    history.add(
                        process,
                        "cas",
                        key,
                        (expected, value),
                        invoke,
                        "ok" if swapped.ok else "fail",
                    )
                    seen[key] = value if swapped.ok else swapped.prev
            except BadRequest:
                raise
            except ClientError:
                if roll < 0.35:
                    history.add(process, "read", key, None, invoke, "fail")
                else:
                    f, what = ("write", value) if roll < 0.75 else ("cas", (seen.get(key), value))
                    history.add(process, f, key, what, invoke, "unknown")
                    process = history.new_process()  # the unknown op stays open forever


async def settle(cluster: LocalCluster, history: History) -> dict[str, str | None]:
    """After healing: read every key linearizably (into the history), then wait until every
    node has applied the leader's commit index and check each one's local reads agree."""
    process = history.new_process()
    final: dict[str, str | None] = {}
    async with RaftbenchClient(cluster.endpoints, timeout=SETTLE_TIMEOUT) as client:
        for key in KEYS:
            invoke = history.now()
            final[key] = (await client.get(key)).value
            history.add(process, "read", key, final[key], invoke, "ok")
        leader = client.leader
        assert leader is not None
        # Generous per request: a node just resumed or restarted on a loaded machine may take
        # seconds to answer; the poll itself is bounded by SETTLE_TIMEOUT.
        async with httpx.AsyncClient(trust_env=False, timeout=SETTLE_TIMEOUT) as http:
            with anyio.fail_after(SETTLE_TIMEOUT):
                while True:  # real processes offer nothing to wait on: bounded polling
                    target = (await http.get(leader + "/status")).json()["commit_index"]
                    states = [(await http.get(u + "/status")).json() for u in cluster.endpoints]
                    if all(s["applied_index"] >= target for s in states):
                        break
                    await anyio.sleep(0.05)
            for url in cluster.endpoints:
                for key in KEYS:
                    answer = (await http.get(f"{url}/kv/{key}?consistency=local")).json()
                    assert answer["value"] == final[key], (url, key, answer, final[key])
    return final


def assert_no_node_failed(cluster: LocalCluster) -> None:
    """No node stopped by itself (a broken invariant, a disk error): the nemesis restarts
    killed nodes, so only their stderr tells."""
    for node_id in cluster.node_ids:
        _, err = cluster.log_paths(node_id)
        text = err.read_text(encoding="utf-8", errors="replace")
        assert "raftbench node: fatal" not in text, (
            f"{node_id} failed:{cluster.stderr_tail(node_id)}"
        )


def committed_logs(cluster: LocalCluster) -> dict[str, list[Entry]]:
    """Each stopped node's committed prefix, read from its durable log."""
    logs = {}
    for node_id in cluster.node_ids:
        with open_store(cluster.data_dir(node_id)) as store:
            state = store.load()
        logs[node_id] = state.entries[: state.hard_state.commit]
    return logs


def check_acknowledged_writes(history: History, logs: dict[str, list[Entry]]) -> int:
    """Every acknowledged write is a committed entry; committed prefixes agree. Returns the
    number of acknowledged writes checked."""
    longest = max(logs.values(), key=len)
    for node_id, log in logs.items():
        assert log == longest[: len(log)], f"{node_id}'s committed log diverges"
    committed: set[tuple[str, str, Value]] = set()
    for entry in longest:
        command = entry.command
        if command.op is Op.PUT:
            committed.add(("write", command.key, command.value))
        elif command.op is Op.CAS:
            committed.add(("cas", command.key, (command.expected, command.value)))
    acked = [op for op in history.ops if op.f in ("write", "cas") and op.outcome == "ok"]
    missing = [op for op in acked if (op.f, op.key, op.value) not in committed]
    assert not missing, f"acknowledged but not committed: {[m.describe() for m in missing[:5]]}"
    return len(acked)


async def run_under_faults(
    directory: Path,
    protocol: str,
    *,
    nodes: int,
    clients: int,
    duration: float,
    seed: int,
    kinds: tuple[str, ...],
) -> RunSummary:
    spec = ClusterSpec(
        nodes=nodes,
        protocol=protocol,
        election_timeout=0.5,
        heartbeat_interval=0.05,
        request_timeout=1.0,
        seed=seed,
    )
    history = History()
    cluster = LocalCluster.up(directory / "cluster", spec)
    try:
        nemesis = Nemesis(
            cluster, clock=time.monotonic, origin=history.clock_origin, rng=random.Random(seed)
        )
        await anyio.to_thread.run_sync(cluster.wait_for_leader, SETTLE_TIMEOUT)
        schedule = random_schedule(
            random.Random(seed), duration - 1.0, kinds=kinds, hold=(1.0, 2.0), gap=(0.5, 1.0)
        )
        start = history.now()
        async with anyio.create_task_group() as group:
            for i in range(clients):
                group.start_soon(
                    client_loop, i, cluster.endpoints, history, start + duration, seed * 100 + i
                )
            await run_schedule(nemesis, schedule, started=history.clock_origin + start)
        await nemesis.recover()
        await settle(cluster, history)
    finally:
        cluster.down()
    (directory / "history.jsonl").write_text(
        "".join(json.dumps(_as_json(op)) + "\n" for op in history.ops)
    )
    (directory / "faults.jsonl").write_text(
        "".join(json.dumps(e.to_json()) + "\n" for e in nemesis.events)
    )
    assert_no_node_failed(cluster)
    result = check_operations(history.ops, budget=60.0)
    assert result.verdict == LINEARIZABLE, result.detail
    logs = committed_logs(cluster)
    acked = check_acknowledged_writes(history, logs)
    return RunSummary(
        operations=len(history.ops),
        outcomes=dict(Counter(op.outcome for op in history.ops)),
        faults=dict(Counter(e.kind for e in nemesis.events)),
        acked_writes=acked,
        committed_entries=max(len(log) for log in logs.values()),
        check_verdict=result.verdict,
        events=nemesis.events,
    )


def _as_json(op: Operation) -> dict[str, object]:
    return {
        "process": op.process,
        "f": op.f,
        "key": op.key,
        "value": op.value,
        "invoke": op.invoke,
        "complete": op.complete,
        "outcome": op.outcome,
    }


@pytest.mark.parametrize("protocol", ["push", "pull"])
async def test_history_is_linearizable_and_acknowledged_writes_survive_faults(
    tmp_path: Path, protocol: str
) -> None:
    summary = await run_under_faults(
        tmp_path,
        protocol,
        nodes=3,
        clients=6,
        duration=12.0,
        seed=11 if protocol == "push" else 12,
        kinds=("kill", "pause", "partition"),
    )
    print(summary.line(protocol))
    # The run really exercised what it claims: every fault kind happened and was undone, and
    # writes were acknowledged under it.
    for kind in ("kill", "restart", "pause", "resume", "partition", "heal"):
        assert summary.faults.get(kind, 0) >= 1, (kind, summary.faults)
    assert summary.acked_writes > 0
    assert summary.outcomes.get("ok", 0) > summary.acked_writes


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["push", "pull"])
async def test_long_run_with_five_nodes_and_every_fault_kind(tmp_path: Path, protocol: str) -> None:
    summary = await run_under_faults(
        tmp_path,
        protocol,
        nodes=5,
        clients=10,
        duration=120.0,
        seed=21 if protocol == "push" else 22,
        kinds=("kill", "pause", "partition", "one-way", "slow-link", "slow-disk"),
    )
    print(summary.line(protocol))
    for kind in ("kill", "pause", "partition", "one-way", "slow-link", "slow-disk"):
        assert summary.faults.get(kind, 0) >= 1, (kind, summary.faults)


# ---- the checks themselves can fail ------------------------------------------------------------


def _entry(index: int, key: str, value: str, expected: str | None = None, op: Op = Op.PUT) -> Entry:
    return Entry(1, index, Command(op, key, value, expected, client_id="c", seq=index))


def test_acknowledged_write_check_catches_a_lost_write_and_diverging_logs() -> None:
    history = History()
    history.add(1, "write", "a", "v1", 0.0, "ok")
    history.add(1, "cas", "a", ("v1", "v2"), history.now(), "ok")
    history.add(2, "write", "a", "v3", history.now(), "unknown")  # need not be anywhere
    log = [_entry(1, "a", "v1"), _entry(2, "a", "v2", "v1", Op.CAS)]
    assert check_acknowledged_writes(history, {"n1": log, "n2": log[:1]}) == 2

    with pytest.raises(
        AssertionError, match=r"acknowledged but not committed: .*process 1 cas 'v1' -> 'v2'"
    ):
        check_acknowledged_writes(history, {"n1": log[:1], "n2": log[:1]})
    other = [_entry(1, "a", "v1"), _entry(2, "a", "x")]
    with pytest.raises(AssertionError, match="n2's committed log diverges"):
        check_acknowledged_writes(history, {"n1": log, "n2": other[:2]})
