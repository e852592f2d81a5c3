"""The real peer transport: authenticated, batched, shaped messages over persistent TCP.

Theory of operation
-------------------
One transport per node, all of it tasks of one anyio event loop. For every peer there is one
*link*: a bounded queue of outgoing frames and a task that dials the peer, authenticates (see
`cluster.framing`), and then writes whatever is due, in one write per wake-up, with every queued
envelope of that write in one DATA frame. The node never waits on a peer: `send()` encodes the
envelope with the core codec, asks the link shaper whether and when the frame may leave, and
appends it to the link's queue; when the queue is full (by count or by bytes) the *oldest*
queued frame is dropped and counted. Raft and pull replication both tolerate loss, and after an
outage the newest messages (current term, latest commit point) are the useful ones.

Connections are one-way for data: a node writes to a peer only on the connection it dialed,
and reads peer data only from connections it accepted. The reverse direction of each
connection carries transport frames only: PONGs answering the dialer's PINGs, which measure
the round trip of the link with both ends' shapers in the path (the achieved RTT matrix).

A link that loses its connection redials with capped exponential backoff and jitter, drawn
from a `random.Random` derived from the injected one. Queued frames wait for the new
connection; frames lost with a broken connection are counted.

Everything a peer sends is checked before it reaches the node: the handshake proves the peer
holds the cluster secret and names it; a member id not in the current peer set is refused; every
later frame carries a MAC bound to the connection, direction and sequence number; an envelope
whose `src` is not the authenticated peer, or whose `dst` is not this node, or that does not
decode, is dropped. Each refusal is counted (per peer once authenticated, by reason before
that) and none raises into the node. A stream that can no longer be framed is closed.

Accepted envelopes go to `incoming`, a bounded memory stream the node loop reads, or straight
to a sink the node gives (`deliver_to`). When the node falls behind, readers wait, TCP pushes
back, and the senders' bounded queues shed load.
"""

from __future__ import annotations

import itertools
import random
import secrets
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from types import TracebackType

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from cluster.framing import (
    HANDSHAKE_MAX_FRAME,
    MAC_BYTES,
    NONCE_BYTES,
    AcceptorHandshake,
    AuthError,
    DialerHandshake,
    FrameDecoder,
    FrameKind,
    FramingError,
    HandshakeError,
    RawFrame,
    Sealer,
    Session,
    pack_batch,
    pack_ping,
    unpack_batch,
    unpack_ping,
)
from cluster.link_stats import PeerCounters, RttSummary, RttTracker
from cluster.shaper import Drop, LinkShaper
from protocols import codec
from protocols.errors import CallerError, DecodeError
from protocols.messages import Envelope
from protocols.types import NodeId

# What a broken or closed connection raises; all of them end that connection, nothing more.
_STREAM_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.IncompleteRead,
    OSError,
)
_BATCH_ITEM_OVERHEAD = 4  # u32 length before each envelope in a DATA frame
_MAX_OUTSTANDING_PINGS = 64
_MAX_PENDING_PONGS = 64
_DATA = FrameKind.DATA  # enum member lookups cost a descriptor call on the hot path


@dataclass(frozen=True, slots=True)
class PeerAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """Limits and timers of the transport. Sizes are bytes, times seconds."""

    max_queue_messages: int = 4096  # in-flight limit per peer, frames
    max_queue_bytes: int = 16 << 20  # in-flight limit per peer, encoded bytes
    max_batch_bytes: int = 1 << 20  # envelope bytes per DATA frame (one may exceed it alone)
    max_frame_bytes: int = 64 << 20  # largest frame accepted from an authenticated peer
    incoming_buffer: int = 1024  # accepted envelopes waiting for the node loop
    connect_timeout: float = 2.0
    handshake_timeout: float = 2.0
    backoff_initial: float = 0.05
    backoff_max: float = 2.0
    ping_interval: float = 1.0  # periodic RTT probes per link; 0 disables them
    rtt_samples: int = 1024  # recent RTT samples kept per peer
    max_pending_handshakes: int = 32  # unauthenticated inbound connections at once
    max_bad_frames: int = 16  # consecutive MAC failures before a connection is closed

    def validate(self) -> TransportSettings:
        for name in (
            "max_queue_messages",
            "max_queue_bytes",
            "max_batch_bytes",
            "incoming_buffer",
            "rtt_samples",
            "max_pending_handshakes",
            "max_bad_frames",
        ):
            if getattr(self, name) < 1:
                raise CallerError(f"{name}: must be >= 1")
        if self.max_frame_bytes < self.max_batch_bytes + MAC_BYTES + _BATCH_ITEM_OVERHEAD:
            raise CallerError("max_frame_bytes: must hold a full batch")
        for name in ("connect_timeout", "handshake_timeout", "backoff_initial"):
            if getattr(self, name) <= 0:
                raise CallerError(f"{name}: must be > 0")
        if self.backoff_max < self.backoff_initial:
            raise CallerError("backoff_max: must be >= backoff_initial")
        if self.ping_interval < 0:
            raise CallerError("ping_interval: must be >= 0")
        return self


@dataclass(slots=True)
class _Pending:
    """A frame waiting in a queue until the shaper's delivery time."""

    deliver_at: float
    kind: FrameKind
    payload: bytes
    ping_id: int = 0


@dataclass(slots=True)
class _Ping:
    sent_at: float
    done: anyio.Event | None = None
    rtt: float | None = None


class _OutQueue:
    """A bounded FIFO of frames for one connection direction, dropping the oldest when full."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.items: deque[_Pending] = deque()
        self.bytes = 0
        self._wakeup: anyio.Event | None = None

    def __len__(self) -> int:
        return len(self.items)

    def push(self, item: _Pending) -> list[_Pending]:
        """Append `item`; return what had to be dropped to respect the limits (oldest first)."""
        dropped: list[_Pending] = []
        size = len(item.payload)
        if size > self.max_bytes:
            return [item]
        while self.items and (
            len(self.items) >= self.max_items or self.bytes + size > self.max_bytes
        ):
            dropped.append(self.popleft())
        self.items.append(item)
        self.bytes += size
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = None
        return dropped

    def popleft(self) -> _Pending:
        item = self.items.popleft()
        self.bytes -= len(item.payload)
        return item

    def pop_due(self, now: float, max_bytes: int) -> list[_Pending]:
        """Frames whose time has come, oldest first, about `max_bytes` of them (at least one)."""
        due: list[_Pending] = []
        total = 0
        while self.items and self.items[0].deliver_at <= now and total < max_bytes:
            item = self.popleft()
            due.append(item)
            total += len(item.payload)
        return due

    def clear(self) -> list[_Pending]:
        items = list(self.items)
        self.items.clear()
        self.bytes = 0
        return items

    async def wait_nonempty(self) -> None:
        while not self.items:
            self._wakeup = anyio.Event()
            await self._wakeup.wait()


class _Link:
    """Everything about sending to one peer."""

    def __init__(self, peer: NodeId, address: PeerAddress, queue: _OutQueue) -> None:
        self.peer = peer
        self.address = address
        self.queue = queue
        self.task_scope: anyio.CancelScope | None = None  # the link's dialing loop
        self.connection_scope: anyio.CancelScope | None = None  # the live connection, if any
        self.connected = False
        self.pings: dict[int, _Ping] = {}
        self._connected_event: anyio.Event | None = None

    def notify_connected(self) -> None:
        if self._connected_event is not None:
            self._connected_event.set()
            self._connected_event = None

    async def connected_changed(self) -> None:
        if self._connected_event is None:
            self._connected_event = anyio.Event()
        await self._connected_event.wait()

    def fail_pings(self) -> None:
        for ping in self.pings.values():
            if ping.done is not None:
                ping.done.set()
        self.pings.clear()


class PeerTransport:
    """Sends and receives `Envelope`s between cluster members. Use as ``async with``.

    `send()` is synchronous and never blocks; accepted envelopes arrive on `incoming`, which is
    closed when the transport exits. All methods must be called from the transport's event
    loop. A transport runs once: a restarted node makes a new one.
    """

    def __init__(
        self,
        node_id: NodeId,
        secret: bytes,
        listen: PeerAddress,
        peers: Mapping[NodeId, PeerAddress],
        *,
        settings: TransportSettings | None = None,
        rng: random.Random | None = None,
        shaper: LinkShaper | None = None,
        nonce: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if not node_id:
            raise CallerError("node_id: must be non-empty")
        if len(secret) < 16:
            raise CallerError("secret: must be at least 16 bytes")
        self.node_id = node_id
        self.settings = (settings or TransportSettings()).validate()
        rng = rng if rng is not None else random.Random()
        self.shaper = shaper if shaper is not None else LinkShaper(random.Random(rng.random()))
        self._backoff_rng = random.Random(rng.random())
        self._secret = secret
        self._nonce = nonce
        self._listen = listen
        self._bound: PeerAddress | None = None
        self._links: dict[NodeId, _Link] = {}
        self._counters: dict[NodeId, PeerCounters] = {}
        self._rtt: dict[NodeId, RttTracker] = {}
        self._inbound: dict[NodeId, anyio.CancelScope] = {}
        self._rejections: Counter[str] = Counter()
        self._ping_ids = itertools.count(1)
        self._pending_handshakes = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._started = False
        sender, receiver = anyio.create_memory_object_stream[Envelope](
            self.settings.incoming_buffer
        )
        self._incoming_send: MemoryObjectSendStream[Envelope] = sender
        self.incoming: MemoryObjectReceiveStream[Envelope] = receiver
        self._sink: Callable[[list[Envelope]], Awaitable[None]] | None = None
        self.set_peers(peers)

    def deliver_to(self, sink: Callable[[list[Envelope]], Awaitable[None]]) -> None:
        """Hand accepted envelopes to `sink`, one call per DATA frame, instead of `incoming`.

        Why: the node's engine loop queues them itself (`EngineLoop.deliver`), so a memory
        stream and a task that forwards from it would only add a hop per frame. The reader
        awaits the sink, so a sink that waits pushes back on the peer as `incoming` does.
        """
        if self._started:
            raise CallerError("deliver_to() must be called before the transport starts")
        self._sink = sink

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> PeerTransport:
        if self._started:
            raise CallerError("a PeerTransport runs once; create a new one to restart")
        self._started = True
        stack = AsyncExitStack()
        await stack.enter_async_context(self._running())
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._exit_stack is not None
        return await self._exit_stack.__aexit__(exc_type, exc, traceback)

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        listener = await anyio.create_tcp_listener(
            local_host=self._listen.host, local_port=self._listen.port
        )
        async with listener, self.incoming, self._incoming_send, anyio.create_task_group() as group:
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            self._bound = PeerAddress(self._listen.host, port)
            self._task_group = group
            for sub in listener.listeners:
                assert isinstance(sub, anyio.abc.SocketListener)
                group.start_soon(self._accept_loop, sub, group)
            for link in self._links.values():
                group.start_soon(self._run_link, link)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
                self._task_group = None

    @property
    def listen_address(self) -> PeerAddress:
        """The bound peer address (the real port when 0 was asked for).

        It stays readable after the transport stopped, so a restarted node can reuse the port.
        """
        if self._bound is None:
            raise CallerError("the transport is not running")
        return self._bound

    def set_peers(self, peers: Mapping[NodeId, PeerAddress]) -> None:
        """Make `peers` the member set: new links dial, removed ones close, moved ones redial."""
        if self.node_id in peers:
            raise CallerError("peers: must not include this node")
        for peer in list(self._links):
            if peer not in peers:
                self._remove_link(peer)
        for peer, address in peers.items():
            link = self._links.get(peer)
            if link is None:
                self._add_link(peer, address)
            elif link.address != address:
                link.address = address
                if link.connection_scope is not None:
                    link.connection_scope.cancel()

    def _add_link(self, peer: NodeId, address: PeerAddress) -> None:
        settings = self.settings
        link = _Link(
            peer, address, _OutQueue(settings.max_queue_messages, settings.max_queue_bytes)
        )
        self._links[peer] = link
        self._counters.setdefault(peer, PeerCounters())
        self._rtt.setdefault(peer, RttTracker(settings.rtt_samples))
        if self._task_group is not None:
            self._task_group.start_soon(self._run_link, link)

    def _remove_link(self, peer: NodeId) -> None:
        link = self._links.pop(peer)
        if link.task_scope is not None:
            link.task_scope.cancel()
        lost = link.queue.clear()
        self._counters[peer].dropped_disconnect += _data_count(lost)
        link.fail_pings()
        link.notify_connected()  # wait_connected() callers learn the peer is gone
        inbound = self._inbound.pop(peer, None)
        if inbound is not None:
            inbound.cancel()
        self.shaper.forget(peer)

    # ---- sending -----------------------------------------------------------------------------

    def send(self, envelope: Envelope) -> None:
        """Queue `envelope` for its destination; never blocks, never waits for the network.

        An envelope to a non-member is counted (`rejections()["send-unknown-peer"]`) and dropped.
        """
        if envelope.src != self.node_id:
            raise CallerError(f"envelope src {envelope.src!r} is not this node {self.node_id!r}")
        link = self._links.get(envelope.dst)
        if link is None:
            self._rejections["send-unknown-peer"] += 1
            return
        counters = self._counters[link.peer]
        payload = codec.encode(envelope)
        if len(payload) + _BATCH_ITEM_OVERHEAD + MAC_BYTES > self.settings.max_frame_bytes:
            counters.dropped_oversize += 1
            return
        verdict = self.shaper.schedule(link.peer, len(payload), anyio.current_time())
        if verdict is Drop.PARTITION:
            counters.dropped_partition += 1
            return
        if verdict is Drop.LOSS:
            counters.dropped_loss += 1
            return
        dropped = link.queue.push(_Pending(verdict, _DATA, payload))
        if dropped:
            counters.dropped_overflow += _data_count(dropped)

    def _queue_ping(self, link: _Link, *, wait: bool) -> _Ping | None:
        now = anyio.current_time()
        ping_id = next(self._ping_ids)
        payload = pack_ping(ping_id)
        verdict = self.shaper.schedule(link.peer, len(payload), now)
        if isinstance(verdict, Drop):
            return None
        ping = _Ping(now, anyio.Event() if wait else None)
        link.pings[ping_id] = ping
        while len(link.pings) > _MAX_OUTSTANDING_PINGS:
            del link.pings[next(iter(link.pings))]
        dropped = link.queue.push(_Pending(verdict, FrameKind.PING, payload, ping_id))
        if dropped:
            self._counters[link.peer].dropped_overflow += _data_count(dropped)
        return ping

    async def probe_rtt(self, peer: NodeId, timeout: float) -> float | None:
        """Measure one round trip to `peer` now (recorded in `rtt_summaries()` too).

        None when the peer is not connected, or the ping or pong was lost (partition, loss,
        broken connection) within `timeout`.
        """
        link = self._links.get(peer)
        if link is None or not link.connected:
            return None
        ping = self._queue_ping(link, wait=True)
        if ping is None or ping.done is None:
            return None
        with anyio.move_on_after(timeout):
            await ping.done.wait()
        return ping.rtt

    # ---- observing ---------------------------------------------------------------------------

    async def receive_batch(self, limit: int = 1024) -> list[Envelope]:
        """Wait for at least one incoming envelope; return up to `limit` already waiting.

        Cheaper than one `incoming.receive()` per envelope, which yields to the loop each time.
        Raises `anyio.EndOfStream` once the transport has stopped.
        """
        batch = [await self.incoming.receive()]
        while len(batch) < limit:
            try:
                batch.append(self.incoming.receive_nowait())
            except anyio.WouldBlock:
                break
        return batch

    def counters(self) -> dict[NodeId, PeerCounters]:
        """Per-peer counters (snapshots), including peers that were removed since."""
        return {peer: counters.snapshot() for peer, counters in self._counters.items()}

    def rejections(self) -> dict[str, int]:
        """Refusals that cannot be charged to an authenticated peer, by reason."""
        return dict(self._rejections)

    def rtt_summaries(self) -> dict[NodeId, RttSummary]:
        """This node's row of the achieved RTT matrix: peers with at least one sample."""
        out: dict[NodeId, RttSummary] = {}
        for peer, tracker in self._rtt.items():
            summary = tracker.summary()
            if summary is not None:
                out[peer] = summary
        return out

    def queue_depth(self, peer: NodeId) -> tuple[int, int]:
        """Frames and bytes waiting for `peer` (bounded by the in-flight limits)."""
        link = self._links.get(peer)
        if link is None:
            return (0, 0)
        return (len(link.queue), link.queue.bytes)

    def is_connected(self, peer: NodeId) -> bool:
        link = self._links.get(peer)
        return link is not None and link.connected

    def inbound_peers(self) -> set[NodeId]:
        """Peers with an authenticated connection into this node right now."""
        return set(self._inbound)

    async def wait_connected(self, peer: NodeId, after: int = 0) -> int:
        """Wait until more than `after` outbound connections to `peer` have been made (and
        the latest is up); return that count. For start-up and tests, not for the hot path."""
        while True:
            link = self._links.get(peer)
            if link is None:
                raise CallerError(f"{peer!r} is not a peer")
            if link.connected and self._counters[peer].connects > after:
                return self._counters[peer].connects
            await link.connected_changed()

    # ---- outbound connections ------------------------------------------------------------------

    def _backoff(self, attempt: int) -> float:
        cap = min(
            self.settings.backoff_max, self.settings.backoff_initial * 2.0 ** min(attempt, 30)
        )
        return self._backoff_rng.uniform(cap / 2, cap)  # "equal jitter": never zero, spread out

    async def _run_link(self, link: _Link) -> None:
        counters = self._counters[link.peer]
        with anyio.CancelScope() as scope:
            link.task_scope = scope
            attempt = 0
            while True:
                if await self._connect_once(link, counters):
                    attempt = 0
                else:
                    counters.connect_failures += 1
                    attempt += 1
                await anyio.sleep(self._backoff(attempt))

    async def _connect_once(self, link: _Link, counters: PeerCounters) -> bool:
        """Dial, authenticate and serve one connection; False if it never got established."""
        address = link.address
        try:
            with anyio.fail_after(self.settings.connect_timeout):
                stream = await anyio.connect_tcp(address.host, address.port)
        except (OSError, TimeoutError):
            return False
        async with stream:
            reader = _FrameReader(stream, HANDSHAKE_MAX_FRAME)
            try:
                with anyio.fail_after(self.settings.handshake_timeout):
                    session = await self._dial_handshake(stream, reader, link.peer)
            except AuthError:
                self._rejections["peer-bad-proof"] += 1
                return False
            except (HandshakeError, FramingError, TimeoutError, *_STREAM_ERRORS):
                return False
            reader.decoder.max_frame = self.settings.max_frame_bytes
            counters.connects += 1
            with anyio.CancelScope() as connection_scope:
                link.connection_scope = connection_scope
                link.connected = True
                link.notify_connected()
                try:
                    await self._serve_outbound(stream, reader, session, link, counters)
                finally:
                    link.connected = False
                    link.connection_scope = None
                    counters.disconnects += 1
                    link.fail_pings()
                    link.notify_connected()
        return True

    async def _dial_handshake(
        self, stream: anyio.abc.SocketStream, reader: _FrameReader, peer: NodeId
    ) -> Session:
        handshake = DialerHandshake(self._secret, self.node_id, peer, self._nonce(NONCE_BYTES))
        await stream.send(handshake.hello())
        await stream.send(handshake.on_challenge(await reader.one()))
        return handshake.on_welcome(await reader.one())

    async def _serve_outbound(
        self,
        stream: anyio.abc.SocketStream,
        reader: _FrameReader,
        session: Session,
        link: _Link,
        counters: PeerCounters,
    ) -> None:
        async def on_frame(frame: RawFrame, payload: bytes) -> None:
            if frame.kind is FrameKind.PONG:
                self._pong_received(link, payload, counters)
            else:  # data flows only from dialer to acceptor
                counters.rejected_decode += 1

        async def ping_periodically() -> None:
            while True:
                self._queue_ping(link, wait=False)
                await anyio.sleep(self.settings.ping_interval)

        async with anyio.create_task_group() as group:
            scope = group.cancel_scope
            group.start_soon(
                _until_broken,
                scope,
                partial(
                    self._write_loop, stream, session.sealer, link.queue, link.peer, link, counters
                ),
            )
            group.start_soon(
                _until_broken,
                scope,
                partial(self._read_authentic, reader, session, counters, on_frame),
            )
            if self.settings.ping_interval > 0:
                group.start_soon(ping_periodically)

    def _pong_received(self, link: _Link, payload: bytes, counters: PeerCounters) -> None:
        try:
            ping_id = unpack_ping(payload)
        except FramingError:
            counters.rejected_decode += 1
            return
        ping = link.pings.pop(ping_id, None)
        if ping is None:  # from a ping we stopped waiting for
            return
        counters.pongs_received += 1
        ping.rtt = anyio.current_time() - ping.sent_at
        self._rtt[link.peer].add(ping.rtt)
        if ping.done is not None:
            ping.done.set()

    async def _write_loop(
        self,
        stream: anyio.abc.SocketStream,
        sealer: Sealer,
        queue: _OutQueue,
        peer: NodeId,
        link: _Link | None,
        counters: PeerCounters,
    ) -> None:
        """Write due frames, one write per wake-up; re-check the partition as they leave.

        `link` is given for the outbound connection (DATA and PING frames); an inbound
        connection writes only PONGs and passes None.
        """
        while True:
            await queue.wait_nonempty()
            now = anyio.current_time()
            wait = queue.items[0].deliver_at - now
            if wait > 0:
                await anyio.sleep(wait)
                continue
            due = queue.pop_due(now, self.settings.max_batch_bytes)
            if self.shaper.is_partitioned(peer):
                counters.dropped_partition += _data_count(due)
                continue
            out = _WriteBatch(sealer)
            for item in due:
                if (
                    item.kind is FrameKind.PING
                    and link is not None
                    and item.ping_id not in link.pings
                ):
                    continue  # queued on a connection that is gone: its RTT would be meaningless
                out.add(item)
            blob = out.finish()
            if not blob:
                continue
            try:
                await stream.send(blob)
            except _STREAM_ERRORS:
                counters.dropped_disconnect += out.messages
                raise
            counters.wire_bytes_sent += len(blob)
            counters.messages_sent += out.messages
            counters.bytes_sent += out.message_bytes
            counters.data_frames_sent += out.data_frames
            counters.pings_sent += out.pings

    # ---- inbound connections -------------------------------------------------------------------

    async def _accept_loop(
        self, listener: anyio.abc.SocketListener, group: anyio.abc.TaskGroup
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except anyio.ClosedResourceError:
                return
            except OSError:  # e.g. out of file descriptors: keep serving the ones we have
                self._rejections["accept-error"] += 1
                await anyio.sleep(0.1)
                continue
            group.start_soon(self._serve_inbound, stream)

    async def _serve_inbound(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            if self._pending_handshakes >= self.settings.max_pending_handshakes:
                self._rejections["inbound-limit"] += 1
                return
            self._pending_handshakes += 1
            reader = _FrameReader(stream, HANDSHAKE_MAX_FRAME)
            try:
                with anyio.fail_after(self.settings.handshake_timeout):
                    session = await self._accept_handshake(stream, reader)
            except TimeoutError:
                self._rejections["handshake-timeout"] += 1
                return
            except AuthError:
                self._rejections["handshake-bad-proof"] += 1
                return
            except _UnknownMember:
                self._rejections["handshake-unknown-member"] += 1
                return
            except (HandshakeError, FramingError):
                self._rejections["handshake-malformed"] += 1
                return
            except _STREAM_ERRORS:
                self._rejections["handshake-aborted"] += 1
                return
            finally:
                self._pending_handshakes -= 1
            reader.decoder.max_frame = self.settings.max_frame_bytes
            peer = session.peer
            counters = self._counters[peer]
            counters.accepts += 1
            with anyio.CancelScope() as scope:
                older = self._inbound.get(peer)
                if older is not None:  # the peer redialed: its old connection is dead to it
                    older.cancel()
                self._inbound[peer] = scope
                try:
                    await self._serve_accepted(stream, reader, session, counters)
                finally:
                    if self._inbound.get(peer) is scope:
                        del self._inbound[peer]

    async def _accept_handshake(
        self, stream: anyio.abc.SocketStream, reader: _FrameReader
    ) -> Session:
        handshake = AcceptorHandshake(self._secret, self.node_id, self._nonce(NONCE_BYTES))
        await stream.send(handshake.on_hello(await reader.one()))
        session, welcome = handshake.on_auth(await reader.one())
        if session.peer not in self._links:
            raise _UnknownMember(session.peer)
        await stream.send(welcome)
        return session

    async def _serve_accepted(
        self,
        stream: anyio.abc.SocketStream,
        reader: _FrameReader,
        session: Session,
        counters: PeerCounters,
    ) -> None:
        peer = session.peer
        pongs = _OutQueue(_MAX_PENDING_PONGS, _MAX_PENDING_PONGS * 64)

        async def on_frame(frame: RawFrame, payload: bytes) -> None:
            if frame.kind is FrameKind.DATA:
                await self._deliver(peer, payload, counters)
            elif frame.kind is FrameKind.PING:
                # The answer travels this node's link back to the peer: shape it too.
                verdict = self.shaper.schedule(peer, len(payload), anyio.current_time())
                if not isinstance(verdict, Drop):
                    pongs.push(_Pending(verdict, FrameKind.PONG, payload))
            else:
                counters.rejected_decode += 1

        async with anyio.create_task_group() as group:
            scope = group.cancel_scope
            group.start_soon(
                _until_broken,
                scope,
                partial(self._write_loop, stream, session.sealer, pongs, peer, None, counters),
            )
            group.start_soon(
                _until_broken,
                scope,
                partial(self._read_authentic, reader, session, counters, on_frame),
            )

    async def _deliver(self, peer: NodeId, payload: bytes, counters: PeerCounters) -> None:
        try:
            items = unpack_batch(payload)
        except FramingError:
            counters.rejected_decode += 1
            return
        counters.data_frames_received += 1
        accepted: list[Envelope] = []
        for raw in items:
            try:
                envelope = codec.decode(raw)
            except DecodeError:
                counters.rejected_decode += 1
                continue
            if envelope.src != peer:
                counters.rejected_spoofed += 1
                continue
            if envelope.dst != self.node_id:
                counters.rejected_misaddressed += 1
                continue
            counters.messages_received += 1
            counters.bytes_received += len(raw)
            accepted.append(envelope)
        if not accepted:
            return
        if self._sink is not None:
            await self._sink(accepted)
            return
        for envelope in accepted:
            try:  # no checkpoint per envelope while the node keeps up
                self._incoming_send.send_nowait(envelope)
            except anyio.WouldBlock:
                await self._incoming_send.send(envelope)

    async def _read_authentic(
        self,
        reader: _FrameReader,
        session: Session,
        counters: PeerCounters,
        handle: Callable[[RawFrame, bytes], Awaitable[None]],
    ) -> None:
        """Hand every frame whose MAC verifies to `handle`; count and skip forged ones.

        Too many bad frames in a row means the stream is out of step (or under attack):
        return, which closes the connection, and the peer redials.
        """
        bad_in_a_row = 0
        while True:
            try:
                frames = await reader.some()
            except FramingError:
                self._rejections["framing"] += 1
                return
            for frame in frames:
                counters.wire_bytes_received += frame.wire_size
                try:
                    payload = session.opener.open(frame)
                except AuthError:
                    counters.rejected_mac += 1
                    bad_in_a_row += 1
                    if bad_in_a_row >= self.settings.max_bad_frames:
                        self._rejections["too-many-bad-frames"] += 1
                        return
                    continue
                bad_in_a_row = 0
                await handle(frame, payload)


class _WriteBatch:
    """Seals the frames of one write: consecutive envelopes share one DATA frame."""

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer
        self._chunks: list[bytes] = []
        self._batch: list[bytes] = []
        self.messages = 0
        self.message_bytes = 0
        self.data_frames = 0
        self.pings = 0

    def add(self, item: _Pending) -> None:
        if item.kind is _DATA:
            self._batch.append(item.payload)
            self.message_bytes += len(item.payload)
            return
        self._flush()
        if item.kind is FrameKind.PING:
            self.pings += 1
        self._chunks.append(self._sealer.seal(item.kind, item.payload))

    def _flush(self) -> None:
        if self._batch:
            self._chunks.append(self._sealer.seal(FrameKind.DATA, pack_batch(self._batch)))
            self.messages += len(self._batch)
            self.data_frames += 1
            self._batch = []

    def finish(self) -> bytes:
        self._flush()
        return b"".join(self._chunks)


class _UnknownMember(Exception):
    """An authenticated id that is not in the current member set."""


class _FrameReader:
    """Frames from a byte stream, keeping any that arrived together with the one asked for."""

    def __init__(self, stream: anyio.abc.SocketStream, max_frame: int) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(max_frame)
        self._ready: deque[RawFrame] = deque()

    async def some(self) -> list[RawFrame]:
        """At least one frame (raises EndOfStream / FramingError when there will be none)."""
        if self._ready:
            frames = list(self._ready)
            self._ready.clear()
            return frames
        while True:
            frames = self.decoder.feed(await self.stream.receive())
            if frames:
                return frames

    async def one(self) -> RawFrame:
        if not self._ready:
            self._ready.extend(await self.some())
        return self._ready.popleft()


async def _until_broken(scope: anyio.CancelScope, work: Callable[[], Awaitable[None]]) -> None:
    """Run one side of a connection; when it ends for any reason, end the whole connection."""
    try:
        await work()
    except _STREAM_ERRORS:
        pass
    finally:
        scope.cancel()


def _data_count(items: list[_Pending]) -> int:
    return sum(1 for item in items if item.kind is _DATA)


__all__ = ["PeerAddress", "PeerTransport", "TransportSettings"]
