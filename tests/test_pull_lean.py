"""A write's path through a secondary, and a primary's timers at rest (issue "a lean node").

A secondary's position report rides in the Ready that writes the batch it reports, ahead of
the batches it forwards to its own pullers; the primary answers long polls that are nearly
due with the one that is, so at rest its pullers' polls expire together.
"""

from __future__ import annotations

from typing import Any

from cluster.sim.harness import Harness
from protocols.config import SyncSettings
from protocols.messages import Envelope, PullResponse, UpdatePosition
from protocols.pull import PullEngine
from protocols.types import Position


def pull_cluster(**config: Any) -> Harness:
    h = Harness.create("pull", nodes=3, **config)
    h.elect("n1")
    h.settle(1.0, step=0.01)
    h.deliver()
    return h


def batch_to(h: Harness, node: str) -> Envelope:
    """Take the pull answer carrying entries to `node` out of the network."""
    (envelope,) = [
        m
        for m in h.inflight
        if m.dst == node and isinstance(m.message, PullResponse) and m.message.entries
    ]
    h.inflight.remove(envelope)
    return envelope


def test_a_secondary_reports_its_position_in_the_ready_that_writes_the_batch() -> None:
    h = pull_cluster(sync=SyncSettings(policy="primary"))
    h.put("n1", "k", "v")
    n2 = h["n2"]
    assert isinstance(n2, PullEngine)
    n2.receive(batch_to(h, "n2"), h.now)
    ready = n2.ready()
    (entry,) = ready.entries
    assert not ready.send_first  # its messages leave only once the batch is durable
    report = ready.messages[0]
    assert report.dst == "n1" and isinstance(report.message, UpdatePosition)
    mine = report.message.positions[0]
    assert (mine.node, Position(mine.term, mine.index)) == ("n2", Position(entry.term, entry.index))
    n2.advance(ready)
    # Durable now, and already reported: no second report of the same position.
    assert n2.durable_position() == Position(entry.term, entry.index)
    while n2.has_ready():
        again = n2.ready()
        assert not any(isinstance(m.message, UpdatePosition) for m in again.messages)
        n2.advance(again)


def test_a_chained_secondary_reports_upstream_before_it_forwards_the_batch() -> None:
    h = pull_cluster(sync=SyncSettings(policy="fixed", fixed_tree=(("n2", "n1"), ("n3", "n2"))))
    assert h["n3"].sync_source == "n2"
    h.put("n1", "k", "v")
    n2 = h["n2"]
    n2.receive(batch_to(h, "n2"), h.now)
    ready = n2.ready()
    assert ready.entries and not ready.send_first
    kinds = [(m.dst, type(m.message)) for m in ready.messages]
    assert kinds[0] == ("n1", UpdatePosition)
    assert ("n3", PullResponse) in kinds[1:]  # the batch, forwarded after the report
    n2.advance(ready)


def test_at_rest_the_primary_answers_its_pullers_long_polls_together() -> None:
    """Each time the primary answers long polls at rest it answers both pullers: one wake-up
    per long poll, not one per puller, even after their polls came at different times."""
    h = pull_cluster(sync=SyncSettings(policy="primary"))
    assert {h["n2"].sync_source, h["n3"].sync_source} == {"n1"}
    h.now += 0.03  # no tick: nothing else moves

    def restart_stream(engine: Any) -> None:
        engine._cancel_pull()  # n3 opens a new stream 30 ms into the primary's rhythm

    h.do("n3", restart_stream)
    h.deliver()
    primary = h["n1"]
    assert isinstance(primary, PullEngine)
    deadlines = {src: held.deadline for src, held in primary._held.items()}
    assert set(deadlines) == {"n2", "n3"} and deadlines["n2"] != deadlines["n3"]
    answers: dict[float, set[str]] = {}
    for _ in range(400):  # 2 s in 5 ms steps
        h.advance_time(0.005)
        for m in h.deliver():
            if m.src == "n1" and isinstance(m.message, PullResponse):
                answers.setdefault(round(h.now, 6), set()).add(m.dst)
    settled = sorted(answers.items())[2:]  # the first expiries bring them together
    assert len(settled) >= 10
    assert all(pullers == {"n2", "n3"} for _, pullers in settled)


def test_a_due_keepalive_goes_with_the_next_wake_up_without_a_timer() -> None:
    """At rest a secondary's keepalive report needs no wake-up of its own: the first message
    it handles after it is due (here a stream answer) carries it out; its timer is a backstop."""
    h = pull_cluster(sync=SyncSettings(policy="primary"))
    n2, primary = h["n2"], h["n1"]
    assert isinstance(n2, PullEngine) and isinstance(primary, PullEngine)
    assert not h.inflight
    due = n2._next_keepalive
    assert n2.next_deadline() > due  # while the stream flows the timer is a backstop
    h.now = max(due, primary._held["n2"].deadline) + 0.001
    h.do("n1", lambda e: e.tick(h.now))  # the primary answers n2's long poll; n2 never ticks
    delivered = h.deliver(lambda m: m.dst == "n2")
    (answer,) = h.only(PullResponse, delivered)
    assert not answer.message.entries
    (report,) = h.messages(UpdatePosition, src="n2")
    assert report.dst == "n1"
    assert report.message.positions[0].index == n2.durable_position().index
