"""Pull: how a member being added chooses the source of its initial sync (protocols/pull.py,
"A member being added holds no configuration..."): among the primary and the members that
probe it, once it has measured them, or one probe interval after the first contact."""

from __future__ import annotations

import random

from protocols.config import Config
from protocols.engines import engine_factory
from protocols.messages import Envelope, StatusProbe, StatusReply
from protocols.pull import PullEngine
from protocols.storage import MemoryLogStore

MEMBERS = ("n1", "n2", "n3", "n4")


def newcomer(now: float = 0.0) -> PullEngine:
    config = Config("n4", MEMBERS, voters=("n1", "n2", "n3"), joining=True)
    engine = engine_factory("pull")(config, MemoryLogStore().load(), random.Random(4), now)
    assert isinstance(engine, PullEngine)
    return engine


def drain(engine: PullEngine) -> list[Envelope]:
    """Take every Ready (as a node's loop would) and return what it sent."""
    sent: list[Envelope] = []
    for _ in range(20):
        if not engine.has_ready():
            return sent
        ready = engine.ready()
        sent.extend(ready.messages)
        engine.advance(ready)
    raise AssertionError("has_ready() stayed true: the engine would spin")


def probe(src: str, now: float, index: int = 50, dst: str = "n4") -> Envelope:
    return Envelope(src, dst, StatusProbe(1, now, index, 1, index, 1, False))


def test_a_newcomer_probes_who_probed_it_and_picks_the_measured_nearest() -> None:
    engine = newcomer()
    engine.receive(probe("n3", 1.0), 1.0)
    sent = drain(engine)
    probes = [(m.dst, m.message) for m in sent if isinstance(m.message, StatusProbe)]
    assert [dst for dst, _ in probes] == ["n3"]  # it probes back the member that probed it
    assert engine.selector.source is None  # not measured yet: no choice
    reply = StatusReply(1, probes[0][1].sent_at, 50, 1, 50, 1, False, primary="n1")
    engine.receive(Envelope("n3", "n4", reply), 1.001)
    drain(engine)
    assert engine.selector.source == "n3"


def test_a_newcomer_that_hears_no_answer_chooses_after_one_probe_interval() -> None:
    engine = newcomer()
    engine.tick(1.0)
    engine.receive(probe("n2", 1.0), 1.0)
    drain(engine)  # does not spin while it waits
    interval = engine.config.election_timeout / 5
    engine.tick(1.0 + interval - 0.001)
    drain(engine)
    assert engine.selector.source is None  # n2 never answered its probe: still waiting
    assert engine.next_deadline() <= 1.0 + interval  # it wakes up to choose
    engine.tick(1.0 + interval)
    drain(engine)
    assert engine.selector.source == "n2"


def test_a_member_of_a_configuration_keeps_its_configuration_peers_only() -> None:
    """Once in a configuration, a probe from an address-book node outside it adds no source."""
    config = Config("n2", ("n1", "n2", "n3", "n4"), voters=("n1", "n2", "n3"))
    engine = engine_factory("pull")(config, MemoryLogStore().load(), random.Random(2), 0.0)
    assert isinstance(engine, PullEngine)
    engine.tick(0.5)
    engine.receive(probe("n4", 0.5, dst="n2"), 0.5)
    drain(engine)
    assert engine.selector.source is None  # n4 is ahead of it, but not in its configuration
