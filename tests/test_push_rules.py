"""One test per Raft rule, each citing where the rule comes from.

References: "In Search of an Understandable Consensus Algorithm (Extended Version)",
Ongaro & Ousterhout 2014 (§ numbers), and Ongaro's thesis "Consensus: Bridging Theory and
Practice" 2014 (thesis §). The tests drive the push engine by hand through `Harness`.
"""

from __future__ import annotations

from collections.abc import Callable

from cluster.sim.harness import Harness
from protocols.engine import Consistency, ReplyStatus
from protocols.messages import (
    AppendEntries,
    AppendResponse,
    Envelope,
    Heartbeat,
    VoteRequest,
    VoteResponse,
)
from protocols.types import Command, Entry, Op, Role


def between(*nodes: str) -> Callable[[Envelope], bool]:
    return lambda m: m.src in nodes and m.dst in nodes


def test_election_safety_one_vote_per_term() -> None:
    """§5.2: each server votes for at most one candidate in a given term."""
    h = Harness.create(nodes=3, pre_vote=False)
    h.elapse_election_timeout("n1")
    h.elapse_election_timeout("n2")  # both candidates in term 1
    assert h["n1"].term == h["n2"].term == 1
    h.deliver(lambda m: m.dst == "n3")  # n3 hears both requests
    granted = [m for m in h.messages(VoteResponse, src="n3") if m.message.granted]
    assert len(granted) == 1


def test_vote_is_durable_before_the_response_is_sent() -> None:
    """§5.2 / Figure 2: currentTerm and votedFor are persisted before responding."""
    h = Harness.create(nodes=3, pre_vote=False)
    h.elapse_election_timeout("n1")
    h.deliver(lambda m: m.dst == "n3" and isinstance(m.message, VoteRequest))
    assert h.messages(VoteResponse, src="n3")[0].message.granted
    assert h.stores["n3"].load().hard_state.vote == "n1"
    # After a crash n3 must not vote for anyone else in term 1.
    h.crash("n3")
    h.start("n3")
    h.do("n3", lambda e: e.receive(Envelope("n2", "n3", VoteRequest(1, 0, 0)), h.now))
    assert not h.messages(VoteResponse, src="n3")[-1].message.granted


def test_election_restriction_rejects_a_less_up_to_date_candidate() -> None:
    """§5.4.1: a vote is denied to a candidate whose log is less up to date."""
    h = Harness.create(nodes=3, pre_vote=False)
    h.elect("n1")
    h.isolate("n3")
    h.put("n1", "k", "v")
    h.deliver()
    h.heal()
    assert h["n2"].log.last_index > h["n3"].log.last_index
    h.elapse_election_timeout("n3")  # n3 campaigns with a shorter log
    h.deliver(lambda m: m.src == "n3" or m.dst == "n3")
    answer = [m for m in h.messages(VoteResponse, src="n2")] or []
    assert h.role("n3") is not Role.LEADER
    assert all(not m.message.granted for m in answer)


def test_figure8_old_term_entries_commit_only_through_a_current_term_entry() -> None:
    """§5.4.2 (Figure 8): a leader never commits an earlier term's entry by counting replicas."""
    h = Harness.create(nodes=3, pre_vote=False, check_quorum=False)
    h.elect("n1")  # term 1: noop at index 1 committed everywhere
    h.deliver()
    h.isolate("n1")
    h.put("n1", "k", "term1")  # index 2, term 1: only on n1
    h.deliver()
    h.heal()
    # n1 crashes; n2 leads term 2 briefly (its noop never reaches anyone), then crashes too.
    h.crash("n1")
    h.elapse_election_timeout("n2")
    h.deliver(lambda m: isinstance(m.message, (VoteRequest, VoteResponse)))
    assert h.role("n2") is Role.LEADER and h["n2"].term == 2
    h.drop()
    h.crash("n2")
    # n1 returns and wins term 3 with n3's vote; it replicates index 2 (term 1) to n3.
    h.start("n1")
    for _ in range(3):  # n3 already voted for n2 in term 2: n1 needs a later term
        if h.role("n1") is not Role.LEADER:
            h.elapse_election_timeout("n1")
            h.deliver(lambda m: isinstance(m.message, (VoteRequest, VoteResponse)))
    leader = h["n1"]
    assert leader.role is Role.LEADER and leader.term >= 3
    # Deliver only an append carrying index 2 (no current-term entry yet acknowledged).
    appends = h.messages(AppendEntries, src="n1")
    assert appends
    h.inflight = [
        Envelope(
            m.src,
            m.dst,
            AppendEntries(m.message.term, 1, 1, (leader.log.entry(2),), 1),
        )
        for m in appends
    ]
    h.deliver(lambda m: isinstance(m.message, AppendEntries) and m.message.prev_index == 1)
    h.deliver(lambda m: isinstance(m.message, AppendResponse))
    assert h["n3"].log.term_at(2) == 1  # the old entry is now on a majority (n1, n3) ...
    assert leader.commit_index < 2  # ... yet it is not committed by counting
    h.advance_time(0.2, ["n1"])  # heartbeats and resends carry the current-term noop
    h.deliver()
    assert leader.commit_index >= 3  # committed together with the new term's noop
    assert h["n1"].log.term_at(3) == leader.term


def test_log_matching_repairs_a_divergent_follower() -> None:
    """§5.3: the leader forces followers' logs to duplicate its own, deleting conflicts."""
    h = Harness.create(nodes=3, pre_vote=False)
    h.elect("n1")
    h.isolate("n1")
    for i in range(5):
        h.put("n1", f"k{i}", "lost")  # uncommitted entries of term 1 on n1 only
    h.deliver()
    h.heal()
    h.isolate("n1")
    h.elapse_election_timeout("n2")
    h.deliver(between("n2", "n3"))
    assert h.role("n2") is Role.LEADER
    h.put("n2", "k", "kept")
    h.deliver(between("n2", "n3"))
    h.heal()
    h.advance_time(0.2, ["n2"])
    h.deliver()
    logs = {n: [(e.term, e.command) for e in h["n1"].log.entries(1, 100)] for n in ("n1",)}
    assert logs["n1"] == [(e.term, e.command) for e in h["n2"].log.entries(1, 100)]
    assert all(e.command.value != "lost" for e in h["n1"].log.entries(1, 100))


def test_fast_backtracking_skips_a_whole_conflicting_term() -> None:
    """§5.3 (optimisation at its end) / etcd: a rejection hint skips conflicting entries at once."""
    h = Harness.create(nodes=3, pre_vote=False, max_batch_entries=1000)
    h.elect("n1")
    h.isolate("n1")
    for i in range(50):
        h.put("n1", f"k{i}", "lost")
    h.deliver()
    h.heal()
    h.isolate("n1")
    h.elapse_election_timeout("n2")
    h.deliver(between("n2", "n3"))
    h.heal()
    h.advance_time(0.2, ["n2"])
    rejections = h.deliver(
        lambda m: isinstance(m.message, (AppendEntries, AppendResponse, Heartbeat)) or m.dst == "n2"
    )
    rejects = [m for m in rejections if isinstance(m.message, AppendResponse) and m.message.reject]
    assert h["n1"].log.last_index == h["n2"].log.last_index
    assert len(rejects) <= 2  # not one per conflicting entry (50)


def test_prevote_keeps_a_rejoining_node_from_disrupting_the_leader() -> None:
    """Thesis §9.6: a partitioned node's pre-vote fails, so it never bumps the term."""
    h = Harness.create(nodes=3)
    h.elect("n1")
    h.deliver()
    term = h["n1"].term
    h.isolate("n3")
    campaigns = 0
    for _ in range(50):  # 5 s: n3 times out and campaigns several times
        h.advance_time(0.1)
        campaigns += len(h.messages(VoteRequest, src="n3"))
        h.deliver()
    assert campaigns >= 2
    assert h["n3"].term == term  # pre-vote never reached a majority, term unchanged
    h.heal()
    for _ in range(50):
        h.advance_time(0.1)
        h.deliver()
    assert h.role("n1") is Role.LEADER and h["n1"].term == term
    assert h["n3"].leader == "n1"


def test_without_prevote_a_rejoining_node_disrupts_the_leader() -> None:
    """Contrast for the test above: the same schedule without pre-vote deposes the leader."""
    h = Harness.create(nodes=3, pre_vote=False, check_quorum=False)
    h.elect("n1")
    h.deliver()
    term = h["n1"].term
    h.isolate("n3")
    for _ in range(3):
        h.elapse_election_timeout("n3")
        h.deliver()
    assert h["n3"].term > term
    h.heal()
    h.advance_time(0.1, ["n1"])  # leader heartbeats meet the higher term
    h.deliver()
    assert h["n1"].term > term


def test_lease_ignores_vote_requests_while_the_leader_is_heard() -> None:
    """Thesis §4.2.3: a server that heard from a leader within the minimum election timeout
    does not grant votes (nor update its term) for a request vote."""
    h = Harness.create(nodes=3, pre_vote=False)
    h.elect("n1")
    h.deliver()
    request = VoteRequest(term=h["n2"].term + 5, last_term=9, last_index=999)
    h.do("n2", lambda e: e.receive(Envelope("n3", "n2", request), h.now))
    assert h["n2"].term == h["n1"].term
    assert not h.messages(VoteResponse, src="n2")


def test_check_quorum_leader_steps_down_without_a_majority() -> None:
    """Thesis §6.2: a leader steps down if an election timeout passes without a majority."""
    h = Harness.create(nodes=3)
    h.elect("n1")
    h.deliver()
    h.isolate("n1")
    for _ in range(30):
        h.advance_time(0.1, ["n1"])
        h.deliver()
    assert h.role("n1") is Role.FOLLOWER


def test_check_quorum_keeps_a_leader_with_a_majority() -> None:
    """Contrast: with one follower cut off, the majority keeps the leader in place."""
    h = Harness.create(nodes=3)
    h.elect("n1")
    h.deliver()
    h.isolate("n3")
    for _ in range(30):
        h.advance_time(0.1, ["n1", "n2"])
        h.deliver()
    assert h.role("n1") is Role.LEADER


def test_read_index_is_refused_by_a_deposed_leader() -> None:
    """§8 / thesis §6.4: a linearizable read needs a majority confirming the leader's term."""
    h = Harness.create(nodes=3, check_quorum=False)
    h.elect("n1")
    h.put("n1", "k", "old")
    h.deliver()
    h.isolate("n1")
    h.elapse_election_timeout("n2")
    h.deliver()
    assert h.role("n2") is Role.LEADER
    h.put("n2", "k", "new")
    h.deliver()
    assert h.role("n1") is Role.LEADER  # still believes it leads (no check-quorum)
    request = h.read("n1", "k")
    for _ in range(5):
        h.advance_time(0.1, ["n1"])
        h.deliver()
    reply = h.reply(request)
    assert reply is None or reply.status is not ReplyStatus.OK
    # The same read at n2 is served, with the new value.
    request = h.read("n2", "k")
    h.deliver()
    reply = h.reply(request)
    assert reply is not None and reply.status is ReplyStatus.OK
    assert reply.result is not None and reply.result.value == "new"


def test_read_index_waits_for_a_committed_entry_of_the_term() -> None:
    """Thesis §6.4 step 1: a new leader serves reads only after committing its own entry."""
    h = Harness.create(nodes=3)
    h.elapse_election_timeout("n1")
    h.deliver(lambda m: isinstance(m.message, (VoteRequest, VoteResponse)))
    assert h.role("n1") is Role.LEADER
    h.drop()  # its noop has not reached anyone yet
    request = h.read("n1", "k")
    assert h.reply(request) is None
    assert not h.messages(Heartbeat, src="n1")  # no read round before the noop commits
    h.advance_time(0.1, ["n1"])
    h.deliver()
    reply = h.reply(request)
    assert reply is not None and reply.status is ReplyStatus.OK


def test_a_read_index_round_answers_with_the_index_it_was_served_at() -> None:
    """A read whose round began before a write committed, served after the write applied,
    answers with the applied index: never lower than the write whose value it returns."""
    h = Harness.create(nodes=3)
    h.elect("n1")
    h.deliver()
    write = h.put("n1", "k", "v")
    read = h.read("n1", "k")  # its round starts now, at the commit index before the write
    h.deliver()
    written, served = h.reply(write), h.reply(read)
    assert written is not None and served is not None
    assert served.result is not None and served.result.value == "v"
    assert served.index >= written.index == h["n1"].kv.applied_index


def test_leader_and_local_reads_are_served_without_a_round() -> None:
    """The weaker consistency levels answer from the applied state at once."""
    h = Harness.create(nodes=3)
    h.elect("n1")
    h.put("n1", "k", "v")
    h.deliver()
    for node, level in (("n1", Consistency.LEADER), ("n2", Consistency.LOCAL)):
        request = h.read(node, "k", level)
        reply = h.reply(request)
        assert reply is not None and reply.status is ReplyStatus.OK
    refused = h.reply(h.read("n2", "k", Consistency.LEADER))
    assert refused is not None and refused.status is ReplyStatus.NOT_LEADER
    assert refused.leader == "n1"


def test_exactly_once_for_a_retried_command() -> None:
    """§8 / thesis §6.3: client sessions make a retried command apply exactly once."""
    h = Harness.create(nodes=3)
    h.elect("n1")
    cas = Command(Op.CAS, "k", "new", None, client_id="c1", seq=1)
    first = h.propose("n1", cas)
    second = h.propose("n1", cas)  # the retry of the same session stamp
    h.deliver()
    a, b = h.reply(first), h.reply(second)
    assert a is not None and b is not None
    assert a.result is not None and b.result is not None
    assert a.result.ok and b.result.ok and b.result.duplicate
    # Had it applied twice, the second compare-and-set (expecting absence) would have failed.
    assert h["n1"].kv.get("k") == "new"


def test_new_leader_appends_a_noop_of_its_term() -> None:
    """§8: a leader commits a blank no-op entry at the start of its term."""
    h = Harness.create(nodes=3)
    leader = h.elect("n1")
    last = leader.log.entry(leader.log.last_index)
    assert last.term == leader.term and last.command.op is Op.NOOP
    assert leader.commit_index == last.index


def test_leader_counts_itself_only_when_its_own_write_is_durable() -> None:
    """Figure 2 / §5.3: an entry is committed once stored on a majority (the leader's store is
    one only after the caller made it durable)."""
    h = Harness.create(nodes=3)
    h.elect("n1")
    h.deliver()
    leader = h["n1"]
    leader.propose(
        __import__("protocols.engine", fromlist=["ClientRequest"]).ClientRequest(
            99, Command(Op.PUT, "k", "v")
        ),
        h.now,
    )
    ready = leader.ready()  # handed out, not yet durable
    index = leader.log.last_index
    assert leader.log.stable_index < index
    ack = Envelope("n2", "n1", AppendResponse(leader.term, index))
    leader.receive(ack, h.now)  # one follower holds it: with the leader's disk, a majority...
    assert leader.commit_index < index  # ... but the leader's write is still in flight
    h.stores["n1"].persist(ready.hard_state, ready.truncate_after, ready.entries)
    leader.advance(ready)
    assert leader.commit_index == index


def test_pipelining_respects_the_inflight_window() -> None:
    """etcd flow control: at most max_inflight unacknowledged appends per follower."""
    h = Harness.create(nodes=3, max_inflight=3, max_batch_entries=1)
    h.elect("n1")
    h.deliver()
    for i in range(10):
        h.put("n1", f"k{i}", "v")
    appends = [m for m in h.messages(AppendEntries, src="n1") if m.dst == "n2"]
    assert len(appends) == 3
    h.deliver()
    assert h["n2"].log.last_index == h["n1"].log.last_index


def test_duplicated_and_reordered_appends_do_not_truncate() -> None:
    """§5.3: 'if an existing entry conflicts ...' only; a stale append deletes nothing."""
    h = Harness.create(nodes=3, max_batch_entries=1)
    h.elect("n1")
    h.deliver()
    for i in range(3):
        h.put("n1", f"k{i}", "v")
    appends = [m for m in h.messages(AppendEntries, src="n1") if m.dst == "n2"]
    h.deliver()
    last = h["n2"].log.last_index
    for sent in reversed(appends):  # replay them, oldest last
        replayed = Envelope(sent.src, sent.dst, sent.message)
        h.do("n2", lambda e, m=replayed: e.receive(m, h.now))  # type: ignore[misc]
    assert h["n2"].log.last_index == last


def test_a_candidate_returns_to_follower_on_hearing_the_leader() -> None:
    """§5.2: a candidate that receives AppendEntries from a leader of its term steps down."""
    h = Harness.create(nodes=3, pre_vote=False)
    h.elect("n1")
    h.deliver()
    h.do("n2", lambda e: e.receive(Envelope("n3", "n2", VoteRequest(1, 0, 0)), h.now))
    h.elapse_election_timeout("n2")
    assert h.role("n2") is Role.CANDIDATE
    term = h["n2"].term
    h.do("n2", lambda e: e.receive(Envelope("n1", "n2", AppendEntries(term, 0, 0, (), 0)), h.now))
    assert h.role("n2") is Role.FOLLOWER and h["n2"].leader == "n1"


def test_stale_leader_steps_down_on_a_higher_term() -> None:
    """§5.1: a server that sees a higher term reverts to follower."""
    h = Harness.create(nodes=3, check_quorum=False)
    h.elect("n1")
    h.deliver()
    h.isolate("n1")
    h.elapse_election_timeout("n2")
    h.deliver()
    h.heal()
    assert h.role("n1") is Role.LEADER
    h.advance_time(0.1, ["n1"])
    h.deliver()
    assert h.role("n1") is Role.FOLLOWER and h["n1"].term == h["n2"].term


def test_committed_entries_survive_a_full_cluster_restart() -> None:
    """Figure 2: the log and commit point are durable; a restart rebuilds state from them."""
    h = Harness.create(nodes=3)
    h.elect("n1")
    for i in range(4):
        h.put("n1", f"k{i}", f"v{i}")
    h.deliver()
    h.advance_time(0.1, ["n1"])
    h.deliver()
    before = {n: h[n].kv.snapshot() for n in ("n1", "n2", "n3")}
    for node in ("n1", "n2", "n3"):
        h.crash(node)
        h.start(node)
    assert {n: h[n].kv.snapshot() for n in ("n1", "n2", "n3")} == before
    assert before["n2"] == {f"k{i}": f"v{i}" for i in range(4)}


def test_apply_happens_in_log_order_once() -> None:
    """§5.3: state machines apply committed entries in log order, each exactly once."""
    h = Harness.create(nodes=3)
    h.elect("n1")
    for i in range(6):
        h.put("n1", "k", str(i))
    h.deliver()
    h.advance_time(0.1, ["n1"])
    h.deliver()
    for node in ("n1", "n2", "n3"):
        indexes = [e.index for e in h.applied[node]]
        assert indexes == list(range(1, len(indexes) + 1))
        assert isinstance(h.applied[node][-1], Entry)
    assert h["n3"].kv.get("k") == "5"


def test_a_lost_append_is_resent_when_replication_stalls() -> None:
    """etcd's probe on trouble: an append lost in replicate state with no later entry to
    expose the gap is resent once heartbeat answers show no progress."""
    h = Harness.create(nodes=3)
    h.elect("n1")
    h.deliver()
    h.put("n1", "k", "v")

    def to_n2(m: Envelope) -> bool:
        return isinstance(m.message, AppendEntries) and m.dst == "n2"

    lost = h.drop(to_n2)
    while h.inflight:  # everything else flows; every append to n2 is lost on the way
        h.deliver(lambda m: not to_n2(m))
        lost += h.drop(to_n2)
    assert lost
    index = h["n1"].log.last_index
    assert h["n2"].log.last_index < index
    for _ in range(3):  # a few heartbeat rounds, no new write
        h.advance_time(0.1, ["n1"])
        h.deliver()
    assert h["n2"].log.last_index == index


def test_appends_sent_after_a_heartbeat_are_not_taken_for_lost() -> None:
    """A slow link (a bandwidth cap's queue) still carries an append sent after the last two
    heartbeats when their answers come back: that is no stall, and nothing is resent."""
    h = Harness.create(nodes=3)
    h.elect("n1")
    h.deliver()
    for _ in range(2):  # two heartbeat rounds with nothing to replicate
        h.advance_time(0.1, ["n1"])
    heartbeats = [m for m in h.inflight if isinstance(m.message, Heartbeat)]
    assert heartbeats
    h.put("n1", "k", "v")  # its append leaves after both heartbeats

    def slow(m: Envelope) -> bool:
        return isinstance(m.message, AppendEntries) and m.dst == "n2"

    held = h.drop(slow)
    assert held
    h.deliver(lambda m: not slow(m))  # heartbeats and their answers overtake the append
    resent = [m for m in h.drop(slow) if isinstance(m.message, AppendEntries) and m.message.entries]
    assert resent == []  # n1 waits for the append on the way (an empty one moves commit only)
    h.inflight.extend(held)
    h.deliver()
    assert h["n2"].log.last_index == h["n1"].log.last_index
