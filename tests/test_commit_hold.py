"""CommitHold: a hard state that only moves the commit index is not written on its own (no
fsync of its own, as etcd's MustSync), rides along with the next write, and never holds back
term, vote or rollback id; and through the engine loop, one write costs each member one
persist, not two."""

from __future__ import annotations

import pytest
from test_engine_loop import Journal, leader_of, loops, put

from protocols.snapshot import Snapshot
from protocols.storage import CommitHold
from protocols.types import NOOP, Entry, HardState

DURABLE = HardState(3, "n1", 10, 1)


def test_a_commit_only_change_is_held_and_rides_with_the_next_entries() -> None:
    hold = CommitHold(DURABLE)
    assert hold.take(HardState(3, "n1", 11, 1), None, [], None) == (False, None)
    assert hold.take(HardState(3, "n1", 12, 1), None, [], None) == (False, None)
    write, hard = hold.take(None, None, [Entry(3, 13, NOOP)], None)
    assert write and hard == HardState(3, "n1", 12, 1)
    assert hold.durable == hard and hold.held is None
    # Nothing held any more: entries alone write no hard state.
    assert hold.take(None, None, [Entry(3, 14, NOOP)], None) == (True, None)


@pytest.mark.parametrize(
    "changed",
    [HardState(4, None, 10, 1), HardState(3, "n2", 10, 1), HardState(3, "n1", 11, 2)],
    ids=["term", "vote", "rollback-id"],
)
def test_term_vote_and_rollback_id_are_never_held(changed: HardState) -> None:
    hold = CommitHold(DURABLE)
    assert hold.take(changed, None, [], None) == (True, changed)
    assert hold.durable == changed


def test_a_truncation_or_a_snapshot_writes_what_is_held() -> None:
    held = HardState(3, "n1", 11, 1)
    for truncate_after, snapshot in ((5, None), (None, Snapshot(9, 3, b"state", 0))):
        hold = CommitHold(DURABLE)
        hold.take(held, None, [], None)
        assert hold.take(None, truncate_after, [], snapshot) == (True, held)


@pytest.mark.anyio
async def test_a_committed_write_costs_each_member_one_persist() -> None:
    journal = Journal()
    async with loops(3, journal) as nodes:
        leader = await leader_of(nodes)
        before = {node: store.persist_calls for node, store in journal.stores.items()}
        for i in range(10):
            (reply,) = await nodes[leader].execute([put(f"k{i}", "v")], 5.0)
            assert reply is not None
        after = {node: store.persist_calls for node, store in journal.stores.items()}
    # Every write moves the commit (and heartbeats carry it): written on their own, those hard
    # states would be a second persist per write on every member, 20 in all. A few extra are
    # allowed: the first hard state a loop sees is always written, and on a loaded machine a
    # heartbeat may be late enough for an election (a term change is never held).
    for node in journal.stores:
        assert after[node] - before[node] <= 13, node


@pytest.mark.anyio
async def test_a_clean_stop_writes_the_held_commit_index() -> None:
    journal = Journal()
    async with loops(3, journal) as nodes:
        leader = await leader_of(nodes)
        for i in range(5):
            (reply,) = await nodes[leader].execute([put(f"k{i}", "v")], 5.0)
            assert reply is not None
        commits = {node: loop.status().commit for node, loop in nodes.items()}
    # Leaving `loops` closes every loop cleanly: each one writes what it held back. (A
    # follower's commit may lag the leader's by the last write: it learns it on the next
    # message.)
    assert commits[leader] >= 6
    for node, store in journal.stores.items():
        assert store.load().hard_state.commit >= commits[node], node
