"""Snapshots and log compaction (issue 13, part 1), in the protocol layer and the simulator.

Raft §7 (InstallSnapshot), MongoDB's too-stale path and initial sync (src/mongo/db/repl,
README.md "Initial Sync"). The tests drive engines through `Harness` or whole simulations.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from cluster.sim.harness import Harness
from cluster.sim.simulator import SimConfig, Simulator
from protocols import codec
from protocols.errors import CallerError, DecodeError
from protocols.kv import KVStateMachine
from protocols.log import RaftLog
from protocols.messages import (
    MESSAGE_TYPES,
    Envelope,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    SnapshotChunk,
    SnapshotRequest,
)
from protocols.pull import PullEngine
from protocols.push import PushEngine
from protocols.replica import ReplicaBase
from protocols.snapshot import Snapshot, SnapshotError, restore, take
from protocols.types import Command, Entry, Op
from raftbench.commands.sim import sync_settings
from workloads.checker import check_operations
from workloads.sim_load import correctness_workload, op_record

CHUNK = 64


def put(index: int, key: str, value: str, client: str = "", seq: int = 0) -> Entry:
    return Entry(1, index, Command(Op.PUT, key, value, client_id=client, seq=seq))


# ---- the snapshot itself -------------------------------------------------------------------


def test_snapshot_keeps_data_and_client_sessions() -> None:
    """A retry of a command behind the snapshot must not apply twice (exactly-once)."""
    kv = KVStateMachine()
    kv.apply(put(1, "a", "1", client="c", seq=1))
    kv.apply(Entry(1, 2, Command(Op.CAS, "a", "2", expected="1", client_id="c", seq=2)))
    snapshot = take(2, 1, ("n1", "n2", "n3"), kv)
    members, restored = restore(snapshot)
    assert members.voters == ("n1", "n2", "n3") and members.learners == ()
    assert restored.snapshot() == {"a": "2"}
    assert restored.applied_index == 2
    retry = restored.apply(
        Entry(1, 3, Command(Op.CAS, "a", "2", expected="1", client_id="c", seq=2))
    )
    assert retry.ok and retry.duplicate  # the remembered result, not a failed CAS
    assert restored.get("a") == "2"


def test_snapshot_encoding_is_deterministic() -> None:
    """Two members snapshotting one index produce the same bytes (a copy resumes anywhere)."""
    first, second = KVStateMachine(), KVStateMachine()
    for kv, order in ((first, ["x", "y"]), (second, ["y", "x"])):
        kv.apply(put(1, order[0], "v"))
        kv.apply(put(2, order[1], "v"))
    # Same state reached in another order of keys: equal bytes.
    assert take(2, 1, ("n1",), first).data == take(2, 1, ("n1",), second).data


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: Snapshot(s.index, s.term, s.data[:-1] + b"\x00", s.checksum),  # flipped
        lambda s: Snapshot(s.index, s.term, s.data[:-3], s.checksum),  # short
        lambda s: Snapshot(s.index, s.term, b"\xc1garbage", zlib.crc32(b"\xc1garbage")),
    ],
)
def test_damaged_snapshot_is_refused(damage: Callable[[Snapshot], Snapshot]) -> None:
    kv = KVStateMachine()
    kv.apply(put(1, "a", "1"))
    with pytest.raises(SnapshotError):
        restore(damage(take(1, 1, ("n1",), kv)))


# ---- the log around a snapshot -------------------------------------------------------------


def test_log_compaction_keeps_the_snapshot_point_matchable() -> None:
    log = RaftLog([put(i, "k", "v") for i in range(1, 11)])
    log.compact(6)
    assert (log.snapshot_index, log.last_index, log.entry_count) == (6, 10, 4)
    assert log.term_at(6) == 1 and log.matches(6, 1)  # the point itself still matches
    assert log.term_at(5) is None  # below it: gone
    assert [e.index for e in log.entries(1, 8)] == [7, 8]
    assert [e.index for e in log.batch_after(6, 10, 1 << 20)] == [7, 8, 9, 10]
    with pytest.raises(CallerError):
        log.batch_after(5, 10, 1 << 20)
    with pytest.raises(CallerError):
        log.truncate_after(5)
    with pytest.raises(CallerError):
        log.compact(11)  # not durable (not even there)


def test_log_restored_from_a_snapshot_drops_everything_and_says_so() -> None:
    log = RaftLog([put(i, "k", "v") for i in range(1, 4)])
    log.restore(20, 3)
    assert (log.snapshot_index, log.last_index, log.last_term) == (20, 20, 3)
    truncate, entries = log.take_unstable()
    assert (truncate, entries) == (20, [])  # storage must drop its suffix too


# ---- push: InstallSnapshot ---------------------------------------------------------------------


def is_snapshot_traffic(envelope: Envelope) -> bool:
    return isinstance(envelope.message, (InstallSnapshot, InstallSnapshotResponse))


def compacted(protocol: str, **config: Any) -> Harness:
    """n1 leads; n3 was cut off while 40 writes went by and n1, n2 compacted their logs."""
    settings: dict[str, Any] = {"snapshot_entries": 10, "snapshot_chunk_bytes": CHUNK, **config}
    h = Harness.create(protocol, nodes=3, **settings)
    h.elect("n1")
    h.settle(0.5)
    h.isolate("n3")
    for i in range(40):
        h.put("n1", f"key-{i}", f"value-{i}" * 3, client="c1", seq=i + 1)
        h.deliver()
    h.settle(0.3)
    assert h["n1"].log.snapshot_index >= 30
    assert h["n3"].log.last_index < h["n1"].log.snapshot_index
    return h


def first_chunk_offset(h: Harness, kind: type, dst: str, rounds: int = 100) -> int:
    """Let time pass (without delivering snapshot traffic) until a chunk or request goes out."""
    for _ in range(rounds):
        pending = [m for m in h.inflight if isinstance(m.message, kind) and m.dst == dst]
        if pending:
            message = pending[0].message
            assert isinstance(message, (InstallSnapshot, SnapshotRequest))
            return message.offset
        h.advance_time(0.05)
        h.deliver(
            lambda m: not isinstance(m.message, (kind, InstallSnapshotResponse, SnapshotChunk))
        )
    raise AssertionError(f"no {kind.__name__} to {dst}")


def assert_caught_up(h: Harness, node: str, leader: str = "n1", within: float = 1.0) -> None:
    h.settle(within)
    lagging, ahead = h[node], h[leader]
    assert lagging.snapshots_installed >= 1
    assert lagging.kv.applied_index == ahead.kv.applied_index
    assert lagging.kv.snapshot() == ahead.kv.snapshot()
    assert dict(lagging.kv.session_items()) == dict(ahead.kv.session_items())
    stored = h.stores[node].load()
    assert stored.snapshot is not None and stored.snapshot.index > 0


def test_push_lagging_follower_gets_the_snapshot_then_entries() -> None:
    """§7: a follower that needs compacted entries receives the snapshot, then the log."""
    h = compacted("push")
    h.heal()
    assert_caught_up(h, "n3")
    h.put("n1", "after", "snapshot", client="c1", seq=41)
    h.settle(0.3)
    assert h["n3"].kv.get("after") == "snapshot"


def test_push_snapshot_window_is_bounded() -> None:
    h = compacted("push", snapshot_inflight=2)
    h.heal()
    first_chunk_offset(h, InstallSnapshot, "n3")
    in_flight = [m for m in h.inflight if isinstance(m.message, InstallSnapshot)]
    assert len(in_flight) == 2  # flow control: two chunks, then wait for acknowledgements


def push_chunks(h: Harness) -> int:
    snapshot = h["n1"]._snapshot
    assert snapshot is not None
    return -(-snapshot.size // CHUNK)


def push_interrupted_at(boundary: int) -> None:
    """Chunks after `boundary` are lost; the leader resumes from the follower's offset."""
    h = compacted("push", snapshot_inflight=1)
    h.heal()
    assert first_chunk_offset(h, InstallSnapshot, "n3") == 0
    for _ in range(boundary):  # deliver `boundary` chunks and their acknowledgements
        h.deliver(lambda m: isinstance(m.message, InstallSnapshot) and m.dst == "n3")
        h.deliver(lambda m: isinstance(m.message, InstallSnapshotResponse))
    lost = h.drop(is_snapshot_traffic)
    assert lost, "the interruption must lose a chunk"
    assert first_chunk_offset(h, InstallSnapshot, "n3") == boundary * CHUNK  # resumed, not redone
    assert_caught_up(h, "n3")


def test_push_transfer_interrupted_at_every_chunk_boundary_resumes() -> None:
    chunks = push_chunks(compacted("push"))
    assert chunks >= 3
    for boundary in range(chunks):
        push_interrupted_at(boundary)


def test_push_follower_refuses_a_snapshot_that_does_not_verify() -> None:
    h = compacted("push", snapshot_inflight=1)
    h.heal()
    first_chunk_offset(h, InstallSnapshot, "n3")
    before = h["n3"].kv.snapshot()
    # Replace the transfer by one whose checksum is wrong: n3 must answer with a reject.
    snapshot = h["n1"]._snapshot
    assert snapshot is not None
    h.drop(is_snapshot_traffic)
    bad = InstallSnapshot(
        h["n1"].term, snapshot.index, snapshot.term, 3, snapshot.checksum ^ 1, 0, b"abc", True
    )
    h.do("n3", lambda e: e.receive(Envelope("n1", "n3", bad), h.now))
    answers = h.messages(InstallSnapshotResponse, src="n3")
    assert answers and answers[-1].message.reject
    assert h["n3"].kv.snapshot() == before
    assert h["n3"].snapshots_installed == 0
    assert_caught_up(h, "n3")  # the leader starts over and the real one installs


# ---- pull: too stale, copy the source's snapshot ---------------------------------------------


def pull_compacted() -> Harness:
    # n3 copies only from n1 (fixed tree), so the test knows which snapshot it copies.
    tree = sync_settings("fixed", 3)
    return compacted("pull", sync=tree)


def test_pull_too_stale_member_copies_the_snapshot_then_pulls() -> None:
    """MongoDB's too-stale path: the source no longer has what the member needs."""
    h = pull_compacted()
    h.heal()
    # After the heal n3 first hears its source again: the pair's status probes come from the
    # lower id (n1) at a steady member's longer period, so this can take up to ~0.5 s more
    # than a push follower's first AppendEntries (measured: installed 1.5 s after the heal).
    assert_caught_up(h, "n3", within=2.5)
    n3 = h["n3"]
    assert isinstance(n3, PullEngine)
    assert n3.stats.snapshot_fetches >= 1
    h.put("n1", "after", "snapshot", client="c1", seq=41)
    h.settle(0.5)
    assert h["n3"].kv.get("after") == "snapshot"


def pull_interrupted_at(boundary: int) -> None:
    """The copy stops after `boundary` chunks (lost traffic, the source deny-listed for a
    while); the member asks again from the offset it holds, and the source resumes there."""
    h = pull_compacted()
    h.heal()
    assert first_chunk_offset(h, SnapshotRequest, "n1") == 0
    for _ in range(boundary):
        h.deliver(lambda m: isinstance(m.message, SnapshotRequest))
        h.deliver(lambda m: isinstance(m.message, SnapshotChunk))
    assert h.drop(lambda m: isinstance(m.message, (SnapshotRequest, SnapshotChunk)))
    assert first_chunk_offset(h, SnapshotRequest, "n1", rounds=400) == boundary * CHUNK
    h.deliver(lambda m: isinstance(m.message, SnapshotRequest))
    answers = [m.message.offset for m in h.messages(SnapshotChunk)]
    assert answers == [boundary * CHUNK]  # the source resumed the same snapshot
    assert_caught_up(h, "n3")


def test_pull_copy_interrupted_at_every_chunk_boundary_resumes() -> None:
    chunks = push_chunks(pull_compacted())
    assert chunks >= 3
    for boundary in range(chunks):
        pull_interrupted_at(boundary)


def test_pull_source_finishes_a_copy_across_its_own_newer_snapshot() -> None:
    """The source keeps the snapshot a member copies until the copy is done."""
    h = pull_compacted()
    h.heal()
    first_chunk_offset(h, SnapshotRequest, "n1")
    h.deliver(lambda m: isinstance(m.message, SnapshotRequest))
    h.deliver(lambda m: isinstance(m.message, SnapshotChunk))
    copying = h["n1"]._snapshot
    assert copying is not None
    for i in range(40, 60):  # meanwhile n1 compacts again
        h.put("n1", f"key-{i}", "v", client="c1", seq=i + 1)
        h.deliver(lambda m: not isinstance(m.message, (SnapshotRequest, SnapshotChunk)))
    newer = h["n1"]._snapshot
    assert newer is not None and newer.index > copying.index
    h.deliver(lambda m: isinstance(m.message, SnapshotRequest))
    (chunk,) = h.messages(SnapshotChunk)
    assert (chunk.message.index, chunk.message.offset) == (copying.index, CHUNK)
    assert_caught_up(h, "n3")


# ---- the wire: malformed snapshot messages ---------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        [1, 5, 1, 10, 7, 0, b"abc", True],  # done before the end
        [1, 5, 1, 2, 7, 0, b"abc", True],  # runs past the total
        [1, 0, 1, 3, 7, 0, b"abc", True],  # index 0
        [1, 5, 2, 3, 7, 0, b"abc", True],  # snapshot term after the leader's
        [1, 5, 1, 3, 7, 0, "abc", True],  # data as text
        [1, 5, 1, 3, 1 << 33, 0, b"abc", True],  # not a CRC-32
        [1, 5, 1, 3, 7, -1, b"abc", True],  # negative offset
        [1, 5, 1, 3, 7, 0, b"abc"],  # a field missing
    ],
)
def test_codec_rejects_malformed_snapshot_chunks(body: list[Any]) -> None:
    tag = MESSAGE_TYPES.index(InstallSnapshot)
    frame = msgpack.packb([tag, "n1", "n2", body], use_bin_type=True)
    with pytest.raises(DecodeError):
        codec.decode(frame)


def test_snapshot_messages_round_trip() -> None:
    messages: list[Message] = [
        InstallSnapshot(3, 10, 2, 5, 99, 0, b"hello", True),
        InstallSnapshotResponse(3, 10, 2, 5, reject=True),
        SnapshotRequest(3, 7, 10, 2, 64),
        SnapshotChunk(3, 7, 10, 2, 100, 99, 64, b"x" * 36, True),
    ]
    for message in messages:
        envelope = Envelope("n1", "n2", message)
        assert codec.decode(codec.encode(envelope)) == envelope


@pytest.mark.parametrize("protocol", ["push", "pull"])
def test_a_node_never_crashes_on_stray_snapshot_messages(protocol: str) -> None:
    """Chunks of unknown transfers, out of order, or from non-leaders: dropped or answered."""
    h = Harness.create(protocol, nodes=3, snapshot_entries=10)
    h.elect("n1")
    strays: list[Message] = [
        InstallSnapshot(h["n1"].term, 50, 1, 10, 1, 4, b"abcd", False),  # no transfer started
        InstallSnapshotResponse(h["n1"].term, 50, 1, 10),
        SnapshotChunk(h["n1"].term, 999, 50, 1, 4, 1, 0, b"abcd", True),  # never asked
        SnapshotRequest(h["n1"].term, 1, 0, 0, 0),  # n2 has no snapshot to give
    ]
    for message in strays:
        # (a leader message to the leader of its own term is a broken invariant, not input)
        targets = ("n2",) if isinstance(message, InstallSnapshot) else ("n1", "n2")
        for dst in targets:
            envelope = Envelope("n3", dst, message)
            h.do(dst, lambda e, m=envelope: e.receive(m, h.now))  # type: ignore[misc]
    h.settle(0.5)
    assert h.leaders() == ["n1"]
    assert h["n2"].snapshots_installed == 0


# ---- simulator: compaction under faults ---------------------------------------------------------


def simulate(protocol: str, policy: str, seed: int, **overrides: Any) -> Simulator:
    config = SimConfig(
        protocol=protocol,
        seed=seed,
        duration=8.0,
        workload=correctness_workload(5),
        count_bytes=False,
        config_overrides={
            "sync": sync_settings(policy, 5),
            "snapshot_entries": 20,
            "snapshot_chunk_bytes": 128,
            **overrides,
        },
    )
    simulator = Simulator(config)
    simulator.run()
    return simulator


def engines(simulator: Simulator) -> list[ReplicaBase]:
    return [n.engine for n in simulator.nodes.values() if isinstance(n.engine, ReplicaBase)]


LABELS = [("push", "nearest")] + [
    ("pull", p) for p in ("primary", "nearest", "freshest", "random", "fixed")
]


@pytest.mark.parametrize(("protocol", "policy"), LABELS)
def test_sim_compaction_under_all_faults_is_safe_and_linearizable(
    protocol: str, policy: str
) -> None:
    """Small thresholds under `--faults all`: every invariant, the snapshot checks included,
    and linearizability hold; members really catch up from snapshots."""
    installed = checked = 0
    for seed in range(3):
        simulator = simulate(protocol, policy, seed)
        assert not simulator.violations, [str(v) for v in simulator.violations]
        records = (op_record(op) for client in simulator.clients for op in client.ops)
        history = [op.as_operation() for op in records if op.is_linearizable_op()]
        assert check_operations(history, budget=10.0).verdict == "linearizable"
        installed += sum(e.snapshots_installed for e in engines(simulator))
        checked += simulator.invariants.snapshots_checked
    assert checked > 0  # the snapshot check ran (it compared snapshots with the log)
    assert installed > 0  # some member caught up from a snapshot


def test_sim_memory_stays_bounded() -> None:
    """With compaction on, no log holds much more than the threshold at the end of a run."""
    simulator = simulate("push", "nearest", 7, snapshot_entries=25)
    for engine in engines(simulator):
        assert engine.log.snapshot_index > 0
        assert engine.log.entry_count < 25 + 512  # threshold plus at most one batch in flight


class _ForgetsSessions(PushEngine):
    """A broken engine: its snapshots lose the client-session table."""

    def _maybe_take_snapshot(self) -> None:
        sessions = list(self.kv.session_items())
        self.kv._sessions = {}
        super()._maybe_take_snapshot()
        self.kv._sessions = dict(sessions)


def test_sim_catches_a_snapshot_that_loses_client_sessions() -> None:
    config = SimConfig(
        protocol="push",
        seed=1,
        duration=4.0,
        faults="none",
        workload=correctness_workload(5),
        count_bytes=False,
        engine=_ForgetsSessions,
        config_overrides={"snapshot_entries": 20},
    )
    simulator = Simulator(config)
    simulator.run()
    assert any(v.rule == "snapshot-state" for v in simulator.violations)
