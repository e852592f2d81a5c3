"""One test per rule of the pull engine, citing where the rule comes from.

Sources: Zhou & Mu, "Fault-Tolerant Replication with Pull-Based Consensus in MongoDB" (NSDI '21,
§ numbers), MongoDB's replication architecture guide (src/mongo/db/repl/README.md), and the
project's DESIGN.md ("Pull engine rules"). The tests drive engines by hand through `Harness`.
"""

from __future__ import annotations

from typing import Any

import pytest

from cluster.sim.harness import Harness
from protocols import pull as pull_module
from protocols.engine import Consistency, ReplyStatus
from protocols.messages import (
    Envelope,
    Heartbeat,
    HeartbeatResponse,
    MemberPosition,
    PullRequest,
    PullResponse,
    PullStatus,
    StatusProbe,
    StatusReply,
    UpdatePosition,
)
from protocols.pull import PullEngine
from protocols.types import Command, Entry, Op, Position, Role


def pull_cluster(nodes: int = 3, **config: Any) -> Harness:
    h = Harness.create("pull", nodes=nodes, **config)
    h.elect("n1")
    h.settle(0.5)
    return h


def engine(h: Harness, node: str) -> PullEngine:
    e = h[node]
    assert isinstance(e, PullEngine)
    return e


def test_primary_sends_entries_only_when_asked() -> None:
    """§3.1: the primary appends to its own log; entries leave it only as pull answers."""
    h = pull_cluster()
    h.deliver()
    held = {src: held.request.request_id for src, held in engine(h, "n1")._held.items()}
    assert set(held) == {"n2", "n3"}
    h.put("n1", "k", "v")
    carrying = [m for m in h.inflight if m.src == "n1" and getattr(m.message, "entries", None)]
    assert carrying
    answers = h.only(PullResponse, carrying)
    assert len(answers) == len(carrying)  # nothing but pull answers carries entries
    assert {(m.dst, m.message.request_id) for m in answers} == set(held.items())


def test_long_poll_is_held_until_entries_arrive() -> None:
    """§3.1 / oplog fetcher: an empty pull waits at the source instead of returning at once."""
    h = pull_cluster()
    h.deliver()
    assert not h.messages(PullResponse)
    held = engine(h, "n1")._held
    assert set(held) == {"n2", "n3"}
    h.put("n1", "k", "v")
    answers = h.messages(PullResponse)
    assert {m.dst for m in answers} == {"n2", "n3"}
    assert all(len(m.message.entries) == 1 for m in answers)


def test_long_poll_times_out_with_an_empty_batch() -> None:
    h = pull_cluster()
    h.deliver()
    h.advance_time(h["n1"].config.long_poll_timeout + 0.001, ["n1"])
    answers = h.messages(PullResponse)
    assert {m.dst for m in answers} == {"n2", "n3"}
    assert all(m.message.status is PullStatus.OK and not m.message.entries for m in answers)


def test_commit_counts_only_positions_of_the_current_term() -> None:
    """DESIGN.md / SERVER-22136: positions are (term, index); bare indexes are not counted."""
    h = pull_cluster(nodes=5)
    primary = engine(h, "n1")
    h.deliver()
    term = primary.term
    commit = primary.commit_index
    h.crash("n2")
    h.crash("n3")  # nobody pulls the new entry: positions come only from the forged reports
    h.put("n1", "k", "v")
    index = primary.log.last_index
    # Two members report a high index of an *older* term: with the primary, that is a
    # majority of bare indexes, but not of positions in the current term.
    stale = tuple(MemberPosition(n, term - 1, index + 5) for n in ("n4", "n5"))
    h.do("n1", lambda e: e.receive(Envelope("n4", "n1", UpdatePosition(term, stale)), h.now))
    assert primary.commit_index == commit
    current = tuple(MemberPosition(n, term, index) for n in ("n4", "n5"))
    h.do("n1", lambda e: e.receive(Envelope("n4", "n1", UpdatePosition(term, current)), h.now))
    assert primary.commit_index == index


def test_positions_travel_through_a_chain() -> None:
    """§3.2: a chained secondary forwards its downstream's positions to its own source."""
    h = pull_cluster(nodes=3)
    h.deliver()
    middle = engine(h, "n2")
    # n3 reports to n2 (as if it synced from n2); n2 must forward n3's position upstream.
    position = MemberPosition("n3", h["n3"].term, 999)
    h.do(
        "n2", lambda e: e.receive(Envelope("n3", "n2", UpdatePosition(e.term, (position,))), h.now)
    )
    forwarded = [m for m in h.messages(UpdatePosition, src="n2") if m.dst == middle.sync_source]
    assert forwarded and any(
        p.node == "n3" and p.index == 999 for p in forwarded[-1].message.positions
    )


def test_a_secondary_never_commits_past_its_last_entry() -> None:
    """DESIGN.md: the commit point learned from a source is capped at the puller's log."""
    h = pull_cluster()
    h.deliver()
    n2 = engine(h, "n2")
    last = n2.log.last_index
    beat = Heartbeat(n2.term, commit=last + 50, commit_term=n2.log.last_term)
    h.do("n2", lambda e: e.receive(Envelope("n1", "n2", beat), h.now))
    assert n2.commit_index == last


def test_a_heartbeat_commit_point_of_another_term_is_ignored() -> None:
    """DESIGN.md: a commit point not from the sync source counts only if its term equals the
    term of the receiver's last entry (otherwise the receiver's log may not be a prefix)."""
    h = pull_cluster()
    h.deliver()
    h.put("n1", "k", "v")
    # n2 receives the entry, but no position report reaches n1 yet: n2's commit lags.
    h.deliver(lambda m: m.dst == "n2" and isinstance(m.message, PullResponse))
    n2 = engine(h, "n2")
    last = n2.log.last_index
    before = n2.commit_index
    assert before < last
    foreign = Heartbeat(n2.term, commit=last, commit_term=n2.log.last_term + 1)
    h.do("n2", lambda e: e.receive(Envelope("n1", "n2", foreign), h.now))
    assert n2.commit_index == before
    matching = Heartbeat(n2.term, commit=last, commit_term=n2.log.last_term)
    h.do("n2", lambda e: e.receive(Envelope("n1", "n2", matching), h.now))
    assert n2.commit_index == last


def test_old_primary_rolls_back_unreplicated_entries_and_acked_writes_survive() -> None:
    """§3.3 (rollback): a deposed primary truncates what the new primary never had."""
    h = pull_cluster()
    h.isolate("n1")
    for i in range(3):
        h.put("n1", f"lost{i}", "x")  # never leave n1
    h.deliver()
    h.elapse_election_timeout("n2")
    h.deliver()  # n2's votes before n3's own timer can fire in the next step (no split vote)
    h.settle(1.0)
    assert h.role("n2") is Role.LEADER
    acked = h.put("n2", "kept", "y")
    h.settle(0.5)
    reply = h.reply(acked)
    assert reply is not None and reply.status is ReplyStatus.OK
    rollback_before = engine(h, "n1").stats.rollbacks
    h.heal()
    h.settle(3.0)
    n1 = engine(h, "n1")
    assert n1.role is Role.FOLLOWER
    assert n1.stats.rollbacks == rollback_before + 1
    assert n1.hard_state().rollback_id >= 1
    for node in ("n1", "n2", "n3"):
        assert h[node].kv.get("kept") == "y"
        assert all(h[node].kv.get(f"lost{i}") is None for i in range(3))
    assert [e.command for e in n1.log.entries(1, 999)] == [
        e.command for e in h["n2"].log.entries(1, 999)
    ]


def test_a_source_that_would_roll_back_committed_entries_is_refused() -> None:
    """DESIGN.md: rollback never goes at or below the commit point; such a source is stale."""
    h = pull_cluster()
    for i in range(3):
        h.put("n1", f"k{i}", "v")
    h.settle(0.5)
    n2 = engine(h, "n2")
    commit = n2.commit_index
    assert commit >= 3
    source = n2.sync_source
    pull = n2._pull
    assert source is not None and pull is not None
    # An answer (from a source claiming a newer term) whose batch conflicts at index 2.
    n2._pull = type(pull)(pull.request_id, source, h.now, 1, n2.log.term_at(1) or 0)
    forged = PullResponse(
        term=n2.term,
        request_id=pull.request_id,
        status=PullStatus.OK,
        entries=(Entry(n2.term + 1, 2, Command(Op.PUT, "evil", "x")),),
        commit=0,
        commit_term=0,
        rollback_id=n2._source_rollback_id or 0,
        last_index=50,
        last_term=n2.term + 1,
        prev_index=1,
        prev_term=n2.log.term_at(1) or 0,
    )
    h.do("n2", lambda e: e.receive(Envelope(source, "n2", forged), h.now))
    assert n2.commit_index >= commit
    assert n2.log.entry(2).command.key != "evil"
    assert n2.stats.stale_sources_refused == 1
    assert n2.selector.is_denied(source, h.now)


def test_a_source_whose_rollback_id_changed_is_revalidated() -> None:
    """DESIGN.md / MongoDB's rollback id: entries from a source that rolled back since our last
    pull are not accepted before re-validating from our own last entry."""
    h = pull_cluster()
    h.deliver()
    n2 = engine(h, "n2")
    source = n2.sync_source
    assert source is not None and n2._pull is not None
    pull = n2._pull
    reply = PullResponse(
        term=n2.term,
        request_id=pull.request_id,
        status=PullStatus.OK,
        entries=(Entry(n2.term, pull.after_index + 1, Command(Op.PUT, "k", "v")),),
        commit=0,
        commit_term=0,
        rollback_id=n2._source_rollback_id + 1 if n2._source_rollback_id is not None else 1,
        last_index=pull.after_index + 1,
        last_term=n2.term,
        prev_index=pull.after_index,
        prev_term=pull.after_term,
    )
    n2._source_rollback_id = 0
    last = n2.log.last_index
    h.do("n2", lambda e: e.receive(Envelope(source, "n2", reply), h.now))
    assert n2.log.last_index == last  # batch discarded
    again = h.messages(PullRequest, src="n2")
    assert again and again[-1].message.after_index == last


def test_any_higher_term_makes_the_primary_step_down_before_answering() -> None:
    """Raft §5.1 as MongoDB applies it: a primary that sees a higher term steps down."""
    h = pull_cluster()
    h.deliver()
    n1 = engine(h, "n1")
    higher = n1.term + 1
    probe = StatusProbe(higher, h.now, 0, 0, 0, 0, False)
    h.do("n1", lambda e: e.receive(Envelope("n3", "n1", probe), h.now))
    assert n1.role is Role.FOLLOWER and n1.term == higher
    answer = h.messages(StatusReply, src="n1")[-1]
    assert answer.message.term == higher and not answer.message.is_primary


@pytest.mark.parametrize("with_entries", [True, False])
def test_an_answer_that_does_not_follow_the_expected_point_is_not_taken(
    with_entries: bool,
) -> None:
    """A lost streamed batch: the next answer follows a later point and must not be applied
    (nor its commit point trusted); the puller opens a new request from where it is."""
    h = pull_cluster()
    h.deliver()
    n2 = engine(h, "n2")
    source, pull = n2.sync_source, n2._pull
    assert source is not None and pull is not None
    last, commit = n2.log.last_index, n2.commit_index
    skipped = PullResponse(
        term=n2.term,
        request_id=pull.request_id,
        status=PullStatus.OK,
        entries=(Entry(n2.term, last + 5, Command(Op.PUT, "k", "late")),) if with_entries else (),
        commit=last + 5,
        commit_term=n2.term,
        rollback_id=n2._source_rollback_id or 0,
        last_index=last + 5,
        last_term=n2.term,
        prev_index=last + 4 if with_entries else last + 5,
        prev_term=n2.term,
    )
    h.do("n2", lambda e: e.receive(Envelope(source, "n2", skipped), h.now))
    assert (n2.log.last_index, n2.commit_index) == (last, commit)
    again = h.messages(PullRequest, src="n2")
    assert again and again[-1].message.after_index == last
    assert again[-1].message.request_id != pull.request_id


def test_a_lagging_node_is_served_through_a_stale_term_request() -> None:
    """Data flows regardless of terms: a source answers an old-term pull with its term."""
    h = pull_cluster()
    h.deliver()
    request = PullRequest(0, 0, 0, request_id=7, wait=False)
    h.do("n2", lambda e: e.receive(Envelope("n3", "n2", request), h.now))
    answer = [m for m in h.messages(PullResponse) if m.dst == "n3"][-1]
    assert answer.message.request_id == 7 and answer.message.term == h["n2"].term
    assert answer.message.entries


def test_priority_takeover() -> None:
    """MongoDB: a caught-up member with higher priority than the primary calls an election."""
    h = Harness.create("pull", nodes=3, priorities=(("n3", 2.0),))
    h.elect("n1")
    h.settle(3.0)
    assert h.role("n3") is Role.LEADER
    assert engine(h, "n3").priority_takeovers >= 1
    assert h.role("n1") is Role.FOLLOWER


def test_priority_zero_never_stands_for_election() -> None:
    h = Harness.create("pull", nodes=3, priorities=(("n1", 0.0),))
    h.elapse_election_timeout("n1")
    assert h.role("n1") is Role.FOLLOWER
    assert not [m for m in h.inflight if m.src == "n1" and "Vote" in type(m.message).__name__]


def test_new_primary_catches_up_from_a_fresher_member_before_writing() -> None:
    """MongoDB's catch-up phase: a new primary first pulls what the freshest member it knows
    of has (bounded by catchUpTimeoutMillis), then writes a no-op of its term."""
    h = pull_cluster(nodes=5)
    h.settle(0.3)
    # n1 writes an entry that only n5 receives; then n1 dies.
    h.cut = {(a, b) for a in ("n1",) for b in ("n2", "n3", "n4")}
    h.cut |= {(b, a) for a, b in h.cut}
    h.put("n1", "fresh", "only-on-n5")
    h.settle(0.3)
    assert h["n5"].kv.get("fresh") is None  # not committed: only n1 and n5 hold it
    assert h["n5"].log.last_index > h["n2"].log.last_index
    h.crash("n1")
    # n2 wins with the votes of n3 and n4; n5 (fresher) does not take part in the vote.
    h.cut = {("n2", "n5"), ("n5", "n2")}
    h.elapse_election_timeout("n2")
    h.deliver(lambda m: "Vote" in type(m.message).__name__ and "n5" not in (m.src, m.dst))
    n2 = engine(h, "n2")
    assert n2.role is Role.LEADER
    assert n2.catching_up
    refused = h.reply(h.put("n2", "during", "catch-up"))
    assert refused is not None and refused.status is ReplyStatus.RETRY
    # The majority that answers n2's first heartbeats (n2, n4, n5) includes the fresher n5.
    h.cut = {("n2", "n3"), ("n3", "n2")}
    h.settle(0.5)
    h.cut = set()
    h.settle(0.5)
    assert not engine(h, "n2").catching_up
    assert n2.stats.catchups == 1
    assert n2.kv.get("fresh") == "only-on-n5"  # the fresher entry was kept, then committed


def test_new_primary_asks_for_positions_as_it_wins_and_writes_after_a_majority_answered() -> None:
    """MongoDB's catch-up starts at once: the winning step itself sends the position requests
    (no wait for a tick or a heartbeat period); the no-op still waits for a majority's
    answers, since only they fix the catch-up target."""
    h = pull_cluster()
    h.isolate("n1")
    h.elapse_election_timeout("n2")
    h.deliver(lambda m: "Vote" in type(m.message).__name__)
    n2 = engine(h, "n2")
    assert h.role("n2") is Role.LEADER and engine(h, "n2").catching_up
    # Nothing was ticked since the vote that won: the heartbeats left with that step.
    asked = {sent.dst for sent in h.messages(Heartbeat, src="n2") if sent.message.term == n2.term}
    assert asked == {"n1", "n3"}
    assert n2.log.last_term < n2.term  # no no-op before the answers
    h.deliver(lambda m: isinstance(m.message, Heartbeat) and m.dst == "n3")
    assert engine(h, "n2").catching_up  # its own position and no answer yet: not a majority
    h.deliver(lambda m: isinstance(m.message, HeartbeatResponse) and m.src == "n3")
    assert not engine(h, "n2").catching_up
    assert n2.log.last_term == n2.term  # the no-op, right after the majority's answer


def test_a_secondary_turns_to_a_new_primary_the_moment_it_hears_from_it() -> None:
    """A secondary that lost its source (the deposed primary) turns to the new primary when
    its first message arrives, and its first pull leaves in that same step: no wait for the
    periodic source check or the no-source retry timer (up to a heartbeat interval), so the
    new primary's no-op can commit a round trip later."""
    h = pull_cluster()
    h.settle(0.3)
    assert engine(h, "n3").selector.source == "n1"
    h.isolate("n1")
    h.elapse_election_timeout("n2")
    h.deliver(lambda m: "Vote" in type(m.message).__name__)
    n3 = engine(h, "n3")
    assert h.role("n2") is Role.LEADER
    assert n3.selector.source != "n2"
    assert not h.messages(PullRequest, src="n3")
    h.deliver(lambda m: isinstance(m.message, Heartbeat) and m.dst == "n3")
    assert n3.selector.source == "n2"
    assert [sent.dst for sent in h.messages(PullRequest, src="n3")] == ["n2"]


def test_primary_steps_down_without_a_reachable_majority() -> None:
    """MongoDB: a primary that cannot see a majority within the election timeout steps down."""
    h = pull_cluster(nodes=3)
    h.isolate("n1")
    h.settle(3.0)
    assert h.role("n1") is Role.FOLLOWER


def test_a_member_reachable_only_through_a_chain_counts_for_the_primary() -> None:
    """A member whose position reaches the primary through a chain is reachable (§3.2)."""
    h = pull_cluster(nodes=5)
    h.crash("n5")
    cut = {("n1", "n3"), ("n1", "n4")}
    h.cut = cut | {(b, a) for a, b in cut}
    for step in range(60):  # 3 s of steady writes: n3 and n4 chain through n2
        h.put("n1", f"k{step}", "v")
        h.settle(0.05)
    n1 = engine(h, "n1")
    assert h.role("n1") is Role.LEADER
    assert {h["n3"].sync_source, h["n4"].sync_source} == {"n2"}
    assert n1.commit_index == n1.log.last_index  # n1, n2 and (through n2) n3, n4
    # Contrast: without the chain the primary cannot see a majority and steps down.
    cut |= {("n2", "n3"), ("n2", "n4")}
    h.cut = cut | {(b, a) for a, b in cut}
    h.settle(3.0)
    assert h.role("n1") is Role.FOLLOWER


def test_linearizable_read_refused_by_a_deposed_primary_local_read_served_anywhere() -> None:
    """Read barrier confirmed by a majority in the current term; `local` on any node."""
    h = pull_cluster(nodes=3, check_quorum=False)
    h.put("n1", "k", "old")
    h.settle(0.5)
    h.isolate("n1")
    h.elapse_election_timeout("n2")
    h.deliver()  # its (pre-)votes, before n3's own timer may fire in the same step
    h.settle(1.0)
    assert h.role("n2") is Role.LEADER
    h.put("n2", "k", "new")
    h.settle(0.5)
    assert h.role("n1") is Role.LEADER  # still believes it leads (no check-quorum)
    stale = h.read("n1", "k")
    h.settle(0.5)
    reply = h.reply(stale)
    assert reply is None or reply.status is not ReplyStatus.OK
    fresh = h.read("n2", "k")
    h.settle(0.2)
    reply = h.reply(fresh)
    assert reply is not None and reply.result is not None and reply.result.value == "new"
    local = h.reply(h.read("n3", "k", Consistency.LOCAL))
    assert local is not None and local.status is ReplyStatus.OK


def test_a_read_barrier_answers_with_the_index_it_was_served_at() -> None:
    """A read whose barrier began before a write committed, served after the write applied,
    answers with the applied index: never lower than the write whose value it returns."""
    h = pull_cluster(nodes=3)
    write = h.put("n1", "k", "v")
    read = h.read("n1", "k")  # its barrier starts now, at the commit point before the write
    h.settle(0.5)
    written, served = h.reply(write), h.reply(read)
    assert written is not None and served is not None
    assert served.result is not None and served.result.value == "v"
    assert served.index >= written.index


def test_positions_order_by_term_then_index() -> None:
    """Raft §5.4.1's "more up to date" order, which positions use everywhere."""
    assert Position(2, 1) > Position(1, 99)
    assert Position(2, 5) > Position(2, 4)


def test_a_follower_stalled_past_its_election_timeout_keeps_its_timers_moving() -> None:
    """Runtime contract (cluster.engine_loop): after a tick, next_deadline() is in the future.

    A node that was frozen (SIGSTOP, a long GC pause) wakes up with the election timer and its
    follower timers (keepalive) all due; the tick fires the election, and the overdue keepalive
    must not pin the deadline in the past (found by the real-process fault test).
    """
    h = pull_cluster()
    h.deliver()
    stalled = engine(h, "n2")
    now = h.now + 5 * stalled.config.election_timeout
    stalled.tick(now)  # the engine loop checks the deadline right here, before ready()
    assert stalled.status().role is not Role.FOLLOWER  # the election timer fired
    assert stalled.next_deadline() > now


def test_the_sync_source_history_keeps_a_bounded_window_of_the_latest_decisions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory stays bounded on a long run: each source decision is counted, but only the latest
    `SOURCE_HISTORY` are kept, oldest first, however often a member's source flaps."""
    monkeypatch.setattr(pull_module, "SOURCE_HISTORY", 4)
    h = pull_cluster()
    for _ in range(6):  # isolating the primary makes the others choose anew, twice
        (leader,) = h.leaders()
        h.isolate(leader)
        h.settle(3.0)
        h.heal()
        h.settle(1.0)
    stats = {node: engine(h, node).stats for node in ("n1", "n2", "n3")}
    assert max(s.source_changes for s in stats.values()) > 4
    for s in stats.values():
        assert len(s.history) == min(s.source_changes, 4)
        times = [when for when, _, _ in s.history]
        assert times == sorted(times)
