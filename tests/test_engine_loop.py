"""The engine loop's contract: persist before send, group commit, bad peers counted, bugs fatal.

Three loops are wired to each other in memory; their stores and sends write to one shared
journal, so the test can check the order in which the real loop did things.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import pytest

from cluster.engine_loop import EngineLoop, ReadOp
from protocols.config import Config
from protocols.engine import ClientReply, ClientRequest, Consistency, Ready, ReplyStatus
from protocols.errors import InvariantViolation
from protocols.messages import AppendEntries, AppendResponse, Envelope, Heartbeat
from protocols.push import PushEngine
from protocols.storage import MemoryLogStore
from protocols.types import Command, Entry, HardState, NodeId, Op, Role

pytestmark = pytest.mark.anyio

DEADLINE = 20.0


@dataclass
class Journal:
    events: list[tuple[str, NodeId, object]] = field(default_factory=list)
    stores: dict[NodeId, JournaledStore] = field(default_factory=dict)


class JournaledStore(MemoryLogStore):
    """A memory store that records each persist, and can hold persists at a gate."""

    def __init__(self, node_id: NodeId, journal: Journal) -> None:
        super().__init__()
        self.node_id = node_id
        self.journal = journal
        self.calls: list[int] = []  # entries per persist that carried entries
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def persist(
        self, hard_state: HardState | None, truncate_after: int | None, entries: list[Entry]
    ) -> None:
        self.entered.set()
        self.gate.wait()
        super().persist(hard_state, truncate_after, entries)
        if entries:
            self.calls.append(len(entries))
        self.journal.events.append(("persist", self.node_id, self.last_index))


@asynccontextmanager
async def loops(size: int, journal: Journal) -> AsyncIterator[dict[NodeId, EngineLoop]]:
    ids = tuple(f"n{i + 1}" for i in range(size))
    out: dict[NodeId, EngineLoop] = {}

    def sender(src: NodeId) -> Callable[[Envelope], None]:
        def send(envelope: Envelope) -> None:
            journal.events.append(("send", src, envelope.message))
            out[envelope.dst].deliver_nowait([envelope])

        return send

    rng = random.Random(3)
    for node_id in ids:
        config = Config(node_id, ids, election_timeout=0.2, heartbeat_interval=0.04)
        store = journal.stores[node_id] = JournaledStore(node_id, journal)
        engine = PushEngine(config, store.load(), random.Random(rng.random()), 0.0)
        out[node_id] = EngineLoop(engine, store, sender(node_id))
    async with anyio.create_task_group() as group:
        for loop in out.values():
            group.start_soon(loop.run)
        yield out
        for loop in out.values():
            loop.close()


async def leader_of(nodes: dict[NodeId, EngineLoop]) -> NodeId:
    with anyio.fail_after(DEADLINE):
        while True:
            for node_id, loop in nodes.items():
                status = loop.status()
                if status.role is Role.LEADER and status.commit == status.last_index >= 1:
                    return node_id
            async with anyio.create_task_group() as group:
                for loop in nodes.values():

                    async def wake(loop: EngineLoop = loop) -> None:
                        await loop.next_change()
                        group.cancel_scope.cancel()

                    group.start_soon(wake)


def put(key: str, value: str) -> Command:
    return Command(Op.PUT, key, value)


async def test_entries_are_persisted_before_any_message_that_depends_on_them() -> None:
    journal = Journal()
    async with loops(3, journal) as nodes:
        leader = await leader_of(nodes)
        replies = await nodes[leader].execute([put(f"k{i}", "v") for i in range(20)], DEADLINE)
        assert all(r is not None and r.status is ReplyStatus.OK for r in replies)

    durable: dict[NodeId, int] = {}
    checked_commits = checked_acks = early_appends = 0
    for kind, node, item in journal.events:
        if kind == "persist":
            assert isinstance(item, int)
            durable[node] = item
        elif isinstance(item, AppendEntries):
            # The leader may send entries before its own disk holds them (they go out in
            # parallel with its fsync), but a commit index it announces is durable on a
            # majority: it counted itself only once its own write finished.
            on_disk = sum(1 for index in durable.values() if index >= item.commit)
            assert item.commit == 0 or on_disk >= 2
            checked_commits += item.commit > 0
            if item.entries and durable.get(node, 0) < item.entries[-1].index:
                early_appends += 1
        elif isinstance(item, AppendResponse) and not item.reject:
            # A follower acknowledges only what it made durable.
            assert durable.get(node, 0) >= item.index
            checked_acks += 1
    assert checked_commits >= 2 and checked_acks >= 2
    assert early_appends >= 1  # the leader did send before its own persist


async def test_writes_arriving_during_a_persist_share_the_next_one() -> None:
    journal = Journal()
    async with loops(1, journal) as nodes:
        loop = nodes["n1"]
        await leader_of(nodes)
        store = journal.stores["n1"]
        store.calls.clear()
        store.gate.clear()
        store.entered.clear()
        results: list[object] = []

        async def write(keys: list[str]) -> None:
            results.extend(await loop.execute([put(k, "v") for k in keys], DEADLINE))

        async with anyio.create_task_group() as group:
            group.start_soon(write, ["first"])
            with anyio.fail_after(DEADLINE):
                await anyio.to_thread.run_sync(store.entered.wait)  # "first" is on the disk
            for key in ("a", "b", "c", "d"):
                group.start_soon(write, [key])
            with anyio.fail_after(DEADLINE):
                while loop.backlog < 4:  # all four queued behind the persist in flight
                    await anyio.lowlevel.checkpoint()
            store.gate.set()
        assert len(results) == 5
        assert store.calls == [1, 4]  # one fsync for everything that waited


async def test_bad_peer_messages_are_counted_and_dropped() -> None:
    journal = Journal()
    async with loops(1, journal) as nodes:
        loop = nodes["n1"]
        await leader_of(nodes)
        loop.deliver_nowait([Envelope("zz", "n1", Heartbeat(term=1, commit=0))])
        loop.deliver_nowait([Envelope("n1", "n9", Heartbeat(term=1, commit=0))])
        (reply,) = await loop.execute([ReadOp("k", Consistency.LINEARIZABLE)], DEADLINE)
        assert reply is not None and reply.status is ReplyStatus.OK
        assert loop.metrics.peer_errors.value() == 2


async def test_a_timer_that_does_not_move_stops_the_loop_loudly() -> None:
    class StuckTimer(PushEngine):
        def next_deadline(self) -> float:
            return 0.0

    config = Config("n1", ("n1",), election_timeout=0.2, heartbeat_interval=0.04)
    store = MemoryLogStore()
    engine = StuckTimer(config, store.load(), random.Random(1), 0.0)
    loop = EngineLoop(engine, store, lambda envelope: None, offload_persist=False)
    with pytest.raises(InvariantViolation, match="next_deadline"), anyio.fail_after(DEADLINE):
        await loop.run()
    assert loop.closed


async def test_an_engine_invariant_violation_ends_run_and_answers_waiting_clients() -> None:
    class Broken(PushEngine):
        def propose(self, request: object, now: float) -> None:
            raise InvariantViolation("broken on purpose")

    config = Config("n1", ("n1",), election_timeout=0.2, heartbeat_interval=0.04)
    store = MemoryLogStore()
    loop = EngineLoop(Broken(config, store.load(), random.Random(1), 0.0), store, print)
    outcome: list[ClientReply | None] = []
    with pytest.raises(BaseExceptionGroup) as caught, anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            group.start_soon(loop.run)

            async def client() -> None:
                outcome.extend(await loop.execute([put("k", "v")], DEADLINE))

            group.start_soon(client)
    assert caught.group_contains(InvariantViolation, match="broken on purpose")
    assert [r.status for r in outcome if r is not None] == [ReplyStatus.UNKNOWN]


class Metronome(PushEngine):
    """Nothing but a timer, due every 2.4 ms: most deadlines fall between two milliseconds."""

    period = 0.0024
    due = 0.0
    ticks = 0

    def next_deadline(self) -> float:
        return self.due

    def tick(self, now: float) -> None:
        self.ticks += 1
        self.due = now + self.period

    def has_ready(self) -> bool:
        return False


@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"), "asyncio"],
)
async def test_the_loop_never_wakes_before_the_engine_deadline() -> None:
    """uvloop rounds a timer to the nearest millisecond; woken early, the loop would find
    nothing due and sleep again (a wasted wake-up). Every turn here must be a tick."""
    config = Config("n1", ("n1",), election_timeout=0.2, heartbeat_interval=0.04)
    store = MemoryLogStore()
    engine = Metronome(config, store.load(), random.Random(1), 0.0)
    loop = EngineLoop(engine, store, lambda envelope: None, offload_persist=False)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            group.start_soon(loop.run)
            while engine.ticks < 40:
                await anyio.sleep(0.01)
            loop.close()
    turns = loop.metrics.turns
    assert turns.value("nothing") == 0
    assert turns.value("timer") == engine.ticks


class OneReady(PushEngine):
    """Answers each proposal with one Ready of the subclass's making, then nothing."""

    def __init__(self, *args: object, send_first: bool) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.send_first = send_first
        self.request_id: int | None = None

    def propose(self, request: ClientRequest, now: float) -> None:
        self.request_id = request.request_id

    def next_deadline(self) -> float:
        return math.inf

    def has_ready(self) -> bool:
        return self.request_id is not None

    def advance(self, ready: Ready) -> None:
        self.request_id = None


class Replier(OneReady):
    """One Ready carrying a client's reply and two peer messages, persisting nothing."""

    def ready(self) -> Ready:
        assert self.request_id is not None
        heartbeat = Heartbeat(1, 0)
        return Ready(
            messages=[Envelope("n1", peer, heartbeat) for peer in ("n2", "n3")],
            replies=[ClientReply(self.request_id, ReplyStatus.OK)],
            send_first=self.send_first,
        )


@pytest.mark.parametrize("send_first", [True, False])
async def test_a_reply_is_handed_over_before_the_peer_messages_of_its_ready(
    send_first: bool,
) -> None:
    """The client's answer must not queue behind commit notices to peers: the tasks woken
    first run first, so the reply is resolved before the messages are sent."""
    config = Config("n1", ("n1", "n2", "n3"), election_timeout=0.2, heartbeat_interval=0.04)
    store = MemoryLogStore()
    engine = Replier(config, store.load(), random.Random(1), 0.0, send_first=send_first)
    answered_at_send: list[bool] = []
    loop: EngineLoop

    def send(envelope: Envelope) -> None:
        answered_at_send.append(loop.metrics.replies.value("write", ReplyStatus.OK.value) == 1)

    loop = EngineLoop(engine, store, send, offload_persist=False)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            group.start_soon(loop.run)
            (reply,) = await loop.execute([put("k", "v")], DEADLINE)
            loop.close()
    assert reply is not None and reply.status is ReplyStatus.OK
    assert answered_at_send == [True, True]


class ThreadRecordingStore(MemoryLogStore):
    """Records the thread each persist ran on."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def persist(
        self, hard_state: HardState | None, truncate_after: int | None, entries: list[Entry]
    ) -> None:
        self.threads.append(threading.get_ident())
        super().persist(hard_state, truncate_after, entries)


class Writer(OneReady):
    """One Ready carrying an entry to persist and a reply, sending first or not."""

    def ready(self) -> Ready:
        assert self.request_id is not None
        entry = Entry(1, 1, Command(Op.PUT, "k", "v"))
        return Ready(
            entries=[entry],
            messages=[Envelope("n1", "n2", Heartbeat(1, 0))],
            replies=[ClientReply(self.request_id, ReplyStatus.OK)],
            send_first=self.send_first,
        )


@pytest.mark.parametrize("send_first", [True, False])
async def test_only_a_write_that_overlaps_its_sends_goes_to_the_persist_thread(
    send_first: bool,
) -> None:
    """A leader's write (messages sent first) runs on the persist thread so the loop can read
    answers meanwhile; a follower's write is waited for before anything leaves, so it runs on
    the loop's own thread and saves two thread hand-offs per write."""
    config = Config("n1", ("n1", "n2", "n3"), election_timeout=0.2, heartbeat_interval=0.04)
    store = ThreadRecordingStore()
    engine = Writer(config, store.load(), random.Random(1), 0.0, send_first=send_first)
    loop = EngineLoop(engine, store, lambda envelope: None)
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            group.start_soon(loop.run)
            (reply,) = await loop.execute([put("k", "v")], DEADLINE)
            loop.close()
    assert reply is not None and reply.status is ReplyStatus.OK
    loop_thread = threading.get_ident()
    assert len(store.threads) == 1
    assert (store.threads[0] != loop_thread) is send_first
