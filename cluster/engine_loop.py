"""The task that owns an engine: inputs in, Ready out, in the order the core writes down.

Theory of operation
-------------------
Exactly one anyio task (`EngineLoop.run`) touches the engine. Everything else hands it work:
the transport reader queues peer envelopes (`deliver`), HTTP handlers queue client operations
(`execute`), and timers are the engine's own `next_deadline()`. Each turn of the loop drains
everything queued, feeds it to the engine with one `now`, ticks the engine if its deadline has
passed, then processes Readies until there are none:

1. save the snapshot (if any), then persist truncation, entries and hard state — in a worker
   thread when the store is a real disk, so the event loop keeps serving HTTP and peers
   meanwhile. A hard state that only moves the commit index is held back and written with the
   next persist, or when the loop stops cleanly (`protocols.storage.CommitHold`): no fsync of
   its own;
2. count the committed entries (the engine has applied them already);
3. answer the waiting clients (a reply depends on nothing this Ready sends: answering first
   lets the client's answer leave before the peer messages);
4. send the Ready's messages (they may promise what step 1 made durable). A leader's go
   before step 1 instead when there is something to write (`Ready.send_first`): its
   followers write while it does;
5. `advance()`.

Inputs that arrive during a persist wait in the queues and are fed together after `advance`,
so the next Ready carries all of them: that is group commit, one fsync for everything proposed
while the previous one was in flight. A Ready with nothing to persist skips the thread hop.

Bad peer input (`PeerError`) is counted and dropped. A broken invariant, a storage failure or a
caller-contract error is a bug or a dead disk: `run()` raises it, and the node stops.

A client operation that gets no reply within its timeout is answered `None`; for a write that
means the outcome is unknown (it may still commit), and the client retries with the same
(client_id, seq) so it applies at most once.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel

from cluster.metrics import Family, Registry
from protocols.engine import (
    ClientReply,
    ClientRequest,
    Consistency,
    Engine,
    MembershipRequest,
    ReadRequest,
    Ready,
    ReplyStatus,
    Status,
)
from protocols.errors import InvariantViolation, PeerError
from protocols.events import ProtocolEvent
from protocols.membership import ConfChange
from protocols.messages import Envelope
from protocols.storage import CommitHold, LogStore
from protocols.types import Command, HardState, Role

logger = logging.getLogger(__name__)

PERSIST_BUCKETS = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
EVENT_HISTORY = 512  # protocol events kept for `/events` (readers poll well before it wraps)


@dataclass(frozen=True, slots=True)
class ReadOp:
    """A read to serve at `consistency` (writes are plain `Command`s)."""

    key: str
    consistency: Consistency = Consistency.LINEARIZABLE


Operation = Command | ReadOp | ConfChange  # ConfChange: a membership change (leader only)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class LoopClosed(Exception):
    """The loop has stopped (the node is shutting down): nothing was submitted."""


@dataclass(slots=True)
class _Waiter:
    request_id: int
    operation: Operation
    submitted: float
    done: asyncio.Future[None]  # resolved with the reply, at the timeout, or at close
    reply: ClientReply | None = None

    def finish(self, reply: ClientReply | None) -> None:
        if reply is not None:
            self.reply = reply
        _resolve(self.done)


def _expire(waiters: list[_Waiter]) -> None:
    for waiter in waiters:
        waiter.finish(None)


class LoopMetrics:
    """The engine-side metrics of a node (the transport adds its own through a collector)."""

    def __init__(self, registry: Registry) -> None:
        self.proposals = registry.counter(
            "raftbench_proposals_total", "Writes handed to the engine (including retries)."
        )
        self.reads = registry.counter(
            "raftbench_reads_total", "Reads handed to the engine.", ["consistency"]
        )
        self.replies = registry.counter(
            "raftbench_client_replies_total", "Engine replies to clients.", ["kind", "status"]
        )
        self.timeouts = registry.counter(
            "raftbench_client_timeouts_total",
            "Client operations that got no engine reply in time.",
            ["kind"],
        )
        self.commits = registry.counter(
            "raftbench_commits_total", "Log entries committed and applied on this node."
        )
        self.elections = registry.counter(
            "raftbench_elections_total", "Elections this node started (as candidate)."
        )
        self.elections_won = registry.counter(
            "raftbench_elections_won_total", "Elections this node won (became leader)."
        )
        self.peer_errors = registry.counter(
            "raftbench_peer_errors_total", "Peer messages the engine refused (PeerError)."
        )
        self.persists = registry.counter(
            "raftbench_persists_total", "Readies that were made durable (one store write each)."
        )
        self.turns = registry.counter(
            "raftbench_loop_turns_total",
            "Turns of the engine loop, by what woke it: queued input, a due timer, or nothing "
            "(a timer that fired before the engine's deadline).",
            ["cause"],
        )
        self.commit_latency = registry.histogram(
            "raftbench_commit_latency_seconds",
            "Write latency on this node: proposal to committed-and-applied reply.",
        )
        self.read_latency = registry.histogram(
            "raftbench_read_latency_seconds",
            "Read latency on this node: request to reply.",
            labels=["consistency"],
        )
        self.persist_seconds = registry.histogram(
            "raftbench_persist_seconds", "Time to persist one Ready.", PERSIST_BUCKETS
        )
        self.persist_entries = registry.histogram(
            "raftbench_persist_entries",
            "Entries per persisted Ready (group commit).",
            BATCH_BUCKETS,
        )


class EngineLoop:
    """Drives one engine; see the module docstring. All methods run on the loop's thread."""

    def __init__(
        self,
        engine: Engine,
        store: LogStore,
        send: Callable[[Envelope], None],
        *,
        registry: Registry | None = None,
        offload_persist: bool = True,
        peer_backlog: int = 8192,
    ) -> None:
        self.engine = engine
        self._store = store
        self._send = send
        self._offload = offload_persist
        self._peer_backlog = peer_backlog
        self.registry = registry if registry is not None else Registry()
        self.metrics = LoopMetrics(self.registry)
        self.registry.collector(self._engine_families)
        self._ids = itertools.count(1)
        self._inbox: deque[_Waiter] = deque()
        self._peer_inbox: deque[Envelope] = deque()
        self._waiting: dict[int, _Waiter] = {}
        self._wake: asyncio.Future[None] | None = None
        self._persister: ThreadPoolExecutor | None = None  # one thread, kept for the run
        self._peer_space: anyio.Event | None = None
        self._changed: anyio.Event | None = None
        self._closed = False
        self._role = engine.role
        self._events: deque[tuple[int, ProtocolEvent]] = deque(maxlen=EVENT_HISTORY)
        self._event_seq = 0
        # Unknown durable hard state at start: the first one handed over is written.
        self._hold = CommitHold(HardState(term=-1))

    # ---- what other tasks call -----------------------------------------------------------------

    async def execute(
        self, operations: Sequence[Operation], timeout: float
    ) -> list[ClientReply | None]:
        """Submit `operations` (in order) and wait up to `timeout` for all their replies.

        Each result is the engine's reply, or None when none came in time. Raises LoopClosed
        when the loop has stopped (nothing was submitted).
        """
        if self._closed:
            raise LoopClosed("the node is shutting down")
        now = time.perf_counter()
        # Plain asyncio futures and one timer per call: an anyio Event and cancel scope per
        # operation cost several times more, on every client request.
        loop = asyncio.get_running_loop()
        waiters = []
        for operation in operations:
            waiter = _Waiter(next(self._ids), operation, now, loop.create_future())
            self._waiting[waiter.request_id] = waiter
            self._inbox.append(waiter)
            waiters.append(waiter)
        self._wake_up()
        timer = loop.call_later(timeout, _expire, waiters)
        try:
            for waiter in waiters:
                await waiter.done
        finally:
            timer.cancel()
        results = []
        for waiter in waiters:
            if waiter.reply is None:
                self._waiting.pop(waiter.request_id, None)
                kind = "read" if isinstance(waiter.operation, ReadOp) else "write"
                self.metrics.timeouts.inc(1, kind)
            results.append(waiter.reply)
        return results

    def deliver_nowait(self, envelopes: Iterable[Envelope]) -> None:
        """Queue peer envelopes without waiting (in-process networks; no back-pressure)."""
        self._peer_inbox.extend(envelopes)
        self._wake_up()

    async def deliver(self, envelopes: Iterable[Envelope]) -> None:
        """Queue peer envelopes; waits while too many are queued (pushes back on the transport)."""
        self._peer_inbox.extend(envelopes)
        self._wake_up()
        while len(self._peer_inbox) >= self._peer_backlog and not self._closed:
            self._peer_space = event = anyio.Event()
            await event.wait()

    def status(self) -> Status:
        """The engine's status now (the engine only changes inside the loop's steps)."""
        return self.engine.status()

    def events_after(self, seq: int) -> tuple[int, list[tuple[int, ProtocolEvent]]]:
        """The kept protocol events numbered above `seq`, and the last number given out.

        Numbers start at 1 with each process, so a reader that sees the last number go down
        knows the node restarted. Times are the engine's clock (`anyio.current_time()`).
        """
        return self._event_seq, [(n, event) for n, event in self._events if n > seq]

    async def next_change(self) -> None:
        """Wait for the end of the next turn of the loop that did something."""
        if self._closed:
            raise LoopClosed("the loop stopped")
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    async def wait_until(self, predicate: Callable[[Status], bool]) -> Status:
        """Wait until `predicate(status())` holds (start-up and tests; bound it by a timeout)."""
        while not predicate(status := self.engine.status()):
            await self.next_change()
        return status

    def close(self) -> None:
        """Stop the loop after its current step; answer every waiting client."""
        self._closed = True
        self._wake_up()
        self._fail_waiters()
        if self._peer_space is not None:
            self._peer_space.set()
        if self._changed is not None:
            self._changed.set()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def backlog(self) -> int:
        """Client operations queued and not yet handed to the engine."""
        return len(self._inbox)

    # ---- the loop ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until `close()`; raises what the engine or the store raise (the node must stop)."""
        try:
            while not self._closed:
                cause = await self._wait_for_work()
                if self.closed:  # close() may have run while we waited
                    break
                self.metrics.turns.inc(1, cause)
                self._feed()
                while self.engine.has_ready() and not self._closed:
                    if not await self._process_ready():
                        await anyio.lowlevel.checkpoint()
                    self._feed()
                self._publish()
            self._write_held()
        finally:
            self.close()
            if self._persister is not None:
                self._persister.shutdown(wait=False)  # idle: every write was awaited

    def _write_held(self) -> None:
        """On a clean stop, write the commit index held back (`CommitHold`): a node stopped
        on purpose restarts with all of its committed prefix; only a crash loses some."""
        held = self._hold.held
        if held is not None:
            self._store.persist(held, None, [])
            self._hold.held = None

    async def _wait_for_work(self) -> str:
        """Sleep until input arrives or the engine's deadline passes; say what woke the loop:
        "input", "timer", or "nothing" (a wake-up that finds no work wastes a turn)."""
        if self._inbox or self._peer_inbox:
            await anyio.lowlevel.checkpoint()
            return "input"
        deadline = self.engine.next_deadline()  # fixed while we sleep: only this loop feeds it
        delay = deadline - anyio.current_time()
        if delay <= 0:
            await anyio.lowlevel.checkpoint()
            return "timer"
        # uvloop (libuv) keeps time in milliseconds and rounds a delay to the nearest one: a
        # timer could fire up to half a millisecond before the engine's deadline and wake the
        # loop for nothing (a quarter of a pull node's wake-ups at rest). Round up instead.
        # A future and a timer handle: the loop sleeps here once per turn (no timer when the
        # engine has no deadline at all: only input can wake it then).
        loop = asyncio.get_running_loop()
        self._wake = wake = loop.create_future()
        timer = None
        if delay != math.inf:
            timer = loop.call_later(math.ceil(delay * 1000.0) / 1000.0, _resolve, wake)
        try:
            await wake
        finally:
            if timer is not None:
                timer.cancel()
            self._wake = None
        if self._inbox or self._peer_inbox:
            return "input"
        return "timer" if anyio.current_time() >= deadline else "nothing"

    def _wake_up(self) -> None:
        wake = self._wake
        if wake is not None:
            _resolve(wake)
            self._wake = None

    def _feed(self) -> None:
        """Hand everything queued to the engine, then tick it if its deadline has passed."""
        engine = self.engine
        now = anyio.current_time()
        peer_inbox = self._peer_inbox
        while peer_inbox:
            try:
                engine.receive(peer_inbox.popleft(), now)
            except PeerError as error:
                self.metrics.peer_errors.inc()
                logger.debug("dropped a peer message: %s", error)
            self._observe_role()
        if self._peer_space is not None:
            self._peer_space.set()
            self._peer_space = None
        inbox = self._inbox
        while inbox:
            waiter = inbox.popleft()
            if waiter.request_id not in self._waiting:
                continue  # its client stopped waiting before the engine saw it
            operation = waiter.operation
            if isinstance(operation, ReadOp):
                self.metrics.reads.inc(1, operation.consistency.value)
                request = ReadRequest(waiter.request_id, operation.key, operation.consistency)
                engine.read(request, now)
            elif isinstance(operation, ConfChange):
                engine.change_membership(MembershipRequest(waiter.request_id, operation), now)
            else:
                self.metrics.proposals.inc()
                engine.propose(ClientRequest(waiter.request_id, operation), now)
        if now >= engine.next_deadline():
            engine.tick(now)
            if engine.next_deadline() <= now:
                # A timer that does not move after it fired would spin this loop forever.
                raise InvariantViolation(
                    f"next_deadline() {engine.next_deadline()} <= now after tick"
                )
        self._observe_role()

    async def _process_ready(self) -> bool:
        """Persist, send, count, reply, advance; True if it waited for the disk."""
        engine = self.engine
        ready = engine.ready()
        for event in ready.events:
            self._event_seq += 1
            self._events.append((self._event_seq, event))
        send = self._send
        persisted, hard_state = False, None
        if ready.needs_persist():
            persisted, hard_state = self._hold.take(
                ready.hard_state, ready.truncate_after, ready.entries, ready.snapshot
            )
        # Replies go before the messages that leave after the persist (or with no persist at
        # all): a reply depends on nothing this Ready sends, and the tasks woken first run
        # first, so a client's answer is not written behind the commit notices to peers.
        send_early = ready.send_first and persisted
        if send_early:
            for envelope in ready.messages:
                send(envelope)
        if persisted:
            await self._persist(ready, hard_state)
        if ready.committed:
            self.metrics.commits.inc(len(ready.committed))
        if ready.replies:
            self._deliver_replies(ready.replies)
        if not send_early:
            for envelope in ready.messages:
                send(envelope)
        engine.advance(ready)
        self._observe_role()
        return persisted

    async def _persist(self, ready: Ready, hard_state: HardState | None) -> None:
        started = time.perf_counter()
        args = (hard_state, ready.truncate_after, ready.entries)
        snapshot = ready.snapshot
        # Only a Ready whose messages left first has anything to overlap with its write (a
        # leader's followers write meanwhile; its loop reads their answers). Everyone else
        # waits for the write before sending anyway, and the hand-off to the persist thread
        # and back cost more than a small fsync (W=1 latency and CPU per write: README, "A lean
        # node"). A snapshot, large, still goes to the thread.
        if self._offload and (ready.send_first or snapshot is not None):
            if snapshot is not None:
                await self._in_persister(self._store.save_snapshot, snapshot)
            await self._in_persister(self._store.persist, *args)
        else:
            if snapshot is not None:
                self._store.save_snapshot(snapshot)
            self._store.persist(*args)
        self.metrics.persists.inc()
        self.metrics.persist_seconds.observe(time.perf_counter() - started)
        if ready.entries:
            self.metrics.persist_entries.observe(len(ready.entries))

    async def _in_persister(self, function: Callable[..., None], *args: Any) -> None:
        """Run `function` on the persist thread and wait, even through cancellation (the
        store must not close under a write). One long-lived thread fed through asyncio's
        executor hand-off costs less per Ready than anyio's `to_thread`."""
        if self._persister is None:
            self._persister = ThreadPoolExecutor(1, thread_name_prefix="persist")
        future = asyncio.get_running_loop().run_in_executor(self._persister, function, *args)
        with anyio.CancelScope(shield=True):
            await future

    def _deliver_replies(self, replies: list[ClientReply]) -> None:
        now = time.perf_counter()
        metrics = self.metrics
        for reply in replies:
            waiter = self._waiting.pop(reply.request_id, None)
            if waiter is None:
                continue  # timed out already
            waiter.finish(reply)
            operation = waiter.operation
            if isinstance(operation, ReadOp):
                metrics.replies.inc(1, "read", reply.status.value)
                if reply.status is ReplyStatus.OK:
                    metrics.read_latency.observe(
                        now - waiter.submitted, operation.consistency.value
                    )
            else:
                metrics.replies.inc(1, "write", reply.status.value)
                if reply.status is ReplyStatus.OK:
                    metrics.commit_latency.observe(now - waiter.submitted)

    def _fail_waiters(self) -> None:
        """Shutting down: writes may have been proposed (unknown), reads did nothing (retry)."""
        for waiter in list(self._waiting.values()):
            if isinstance(waiter.operation, ReadOp):
                waiter.finish(ClientReply(waiter.request_id, ReplyStatus.RETRY))
            else:
                waiter.finish(ClientReply(waiter.request_id, ReplyStatus.UNKNOWN))
        self._waiting.clear()
        self._inbox.clear()

    def _observe_role(self) -> None:
        role = self.engine.role
        if role is self._role:
            return
        if role is Role.CANDIDATE:
            self.metrics.elections.inc()
        elif role is Role.LEADER:
            if self._role is not Role.CANDIDATE:
                self.metrics.elections.inc()  # campaigned and won within one step
            self.metrics.elections_won.inc()
        self._role = role

    def _publish(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def _engine_families(self) -> list[Family]:
        status = self.engine.status()
        out = []
        for name, help, value in (
            ("raftbench_term", "Current term.", status.term),
            ("raftbench_commit_index", "Commit index.", status.commit),
            ("raftbench_applied_index", "Last applied index.", status.applied),
            ("raftbench_last_index", "Last log index.", status.last_index),
            ("raftbench_is_leader", "1 if this node leads.", int(status.role is Role.LEADER)),
        ):
            family = Family(name, "gauge", help)
            family.add(float(value))
            out.append(family)
        role = Family("raftbench_role", "gauge", "1 for the role this node is in.")
        for candidate in Role:
            role.add(float(candidate is status.role), role=candidate.value)
        out.append(role)
        return out
