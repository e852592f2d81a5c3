"""The real peer transport on loopback: persistence, batching, authentication, limits, shaping.

Every port is chosen by the OS. Waits are on events (an envelope arriving, a connection made,
a socket closed) under a generous deadline that only guards against hangs.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import anyio.abc
import msgpack
import pytest

from cluster.framing import (
    HANDSHAKE_MAX_FRAME,
    NONCE_BYTES,
    DialerHandshake,
    FrameDecoder,
    FrameKind,
    RawFrame,
    Sealer,
    Session,
    pack_batch,
    pack_frame,
    pack_ping,
)
from cluster.link_stats import RttTracker
from cluster.shaper import EgressCaps
from cluster.transport import PeerAddress, PeerTransport, TransportSettings
from protocols import codec
from protocols.errors import CallerError
from protocols.messages import AppendEntries, Envelope, Heartbeat
from protocols.types import Command, Entry, Op

SECRET = b"loopback-test-cluster-secret-0001"
HOST = "127.0.0.1"
DEADLINE = 20.0  # only guards against a hang; nothing is asserted about elapsed time
FAST = TransportSettings(backoff_initial=0.01, backoff_max=0.1, ping_interval=0)

pytestmark = pytest.mark.anyio


def envelope(src: str, dst: str, n: int) -> Envelope:
    return Envelope(src, dst, Heartbeat(term=1, commit=n))


def make(
    node: str,
    peers: Mapping[str, PeerAddress] | None = None,
    *,
    port: int = 0,
    settings: TransportSettings = FAST,
    seed: int = 1,
    secret: bytes = SECRET,
) -> PeerTransport:
    return PeerTransport(
        node,
        secret,
        PeerAddress(HOST, port),
        peers or {},
        settings=settings,
        rng=random.Random(seed),
    )


@asynccontextmanager
async def mesh(
    *nodes: str, settings: TransportSettings = FAST
) -> AsyncIterator[dict[str, PeerTransport]]:
    """Transports for `nodes`, all connected to each other."""
    async with AsyncExitStack() as stack:
        transports = {}
        for seed, node in enumerate(nodes):
            transport = make(node, settings=settings, seed=seed)
            transports[node] = await stack.enter_async_context(transport)
        for node, transport in transports.items():  # no await in between: no dial sees a stranger
            transport.set_peers(
                {peer: other.listen_address for peer, other in transports.items() if peer != node}
            )
        with anyio.fail_after(DEADLINE):
            for node, transport in transports.items():
                for peer in transports:
                    if peer != node:
                        await transport.wait_connected(peer)
        yield transports


async def receive(transport: PeerTransport, count: int) -> list[Envelope]:
    received = []
    with anyio.fail_after(DEADLINE):
        for _ in range(count):
            received.append(await transport.incoming.receive())
    return received


async def unused_port() -> int:
    """A port nothing listens on (bound by the OS, then released)."""
    listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
    port: int = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()
    return port


class Intruder:
    """A raw connection to a transport, playing a peer that misbehaves in chosen ways."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(HANDSHAKE_MAX_FRAME)
        self.session: Session | None = None
        self.ready: deque[RawFrame] = deque()

    @classmethod
    @asynccontextmanager
    async def connect(cls, target: PeerAddress) -> AsyncIterator[Intruder]:
        stream = await anyio.connect_tcp(target.host, target.port)
        async with stream:
            yield cls(stream)

    async def next_frame(self) -> RawFrame:
        while not self.ready:
            self.ready.extend(self.decoder.feed(await self.stream.receive()))
        return self.ready.popleft()

    async def authenticate(self, node: str, target: str) -> Session:
        handshake = DialerHandshake(SECRET, node, target, bytes(NONCE_BYTES))
        await self.stream.send(handshake.hello())
        await self.stream.send(handshake.on_challenge(await self.next_frame()))
        self.session = handshake.on_welcome(await self.next_frame())
        return self.session

    async def send_envelopes(self, *items: Envelope | bytes) -> None:
        assert self.session is not None
        raw = [item if isinstance(item, bytes) else codec.encode(item) for item in items]
        await self.stream.send(self.session.sealer.seal(FrameKind.DATA, pack_batch(raw)))

    async def wait_closed(self) -> None:
        """Read until the transport hangs up on us."""
        with anyio.fail_after(DEADLINE):
            try:
                while await self.stream.receive():
                    pass
            except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
                return


# ---- persistent connections, delivery, counters ---------------------------------------------


async def test_three_nodes_exchange_over_one_connection_per_peer() -> None:
    async with mesh("a", "b", "c") as nodes:
        sent: dict[tuple[str, str], list[Envelope]] = {}
        for src, transport in nodes.items():
            for dst in nodes:
                if dst != src:
                    sent[(src, dst)] = [envelope(src, dst, n) for n in range(300)]
                    for item in sent[(src, dst)]:
                        transport.send(item)
        for dst, transport in nodes.items():
            got = await receive(transport, 600)
            for src in nodes:
                if src != dst:  # FIFO per link, nothing lost, nothing extra
                    assert [e for e in got if e.src == src] == sent[(src, dst)]
        for src, transport in nodes.items():
            counters = transport.counters()
            for dst in nodes:
                if dst == src:
                    continue
                size = sum(len(codec.encode(e)) for e in sent[(src, dst)])
                assert counters[dst].connects == 1
                assert counters[dst].reconnects == 0
                assert counters[dst].messages_sent == 300
                assert counters[dst].bytes_sent == size
                theirs = nodes[dst].counters()[src]
                assert theirs.accepts == 1
                assert theirs.messages_received == 300
                assert theirs.bytes_received == size
                assert counters[dst].wire_bytes_sent > size  # framing and MACs on top
            assert transport.inbound_peers() == set(nodes) - {src}


async def test_queued_envelopes_travel_in_one_frame() -> None:
    async with mesh("a", "b") as nodes:
        a, b = nodes["a"], nodes["b"]
        for n in range(50):  # no await in between: all queued before the writer runs
            a.send(envelope("a", "b", n))
        assert [e.message for e in await receive(b, 50)] == [
            Heartbeat(term=1, commit=n) for n in range(50)
        ]
        assert a.counters()["b"].data_frames_sent == 1
        assert b.counters()["a"].data_frames_received == 1
        for n in range(5):  # one at a time: no waiting to fill a batch
            a.send(envelope("a", "b", 100 + n))
            await receive(b, 1)
        assert a.counters()["b"].data_frames_sent == 6


async def test_send_checks_the_caller() -> None:
    async with mesh("a", "b") as nodes:
        with pytest.raises(CallerError):
            nodes["a"].send(envelope("b", "a", 1))  # not from this node
        nodes["a"].send(envelope("a", "zz", 1))
        assert nodes["a"].rejections() == {"send-unknown-peer": 1}


async def test_reconnects_after_the_peer_restarts() -> None:
    async with make("a") as a:
        b = make("b", {"a": a.listen_address})
        async with b:
            a.set_peers({"b": b.listen_address})
            with anyio.fail_after(DEADLINE):
                await a.wait_connected("b")
            a.send(envelope("a", "b", 1))
            assert (await receive(b, 1))[0] == envelope("a", "b", 1)
        restarted = make("b", {"a": a.listen_address}, port=b.listen_address.port, seed=9)
        async with restarted:
            with anyio.fail_after(DEADLINE):
                assert await a.wait_connected("b", after=1) == 2
            a.send(envelope("a", "b", 2))
            assert await receive(restarted, 1) == [envelope("a", "b", 2)]
            restarted.send(envelope("b", "a", 3))  # and the restarted node dials back
            assert await receive(a, 1) == [envelope("b", "a", 3)]
        counters = a.counters()["b"]
        assert counters.connects == 2
        assert counters.reconnects == 1
        assert counters.as_dict()["reconnects"] == 1
        assert counters.disconnects >= 1


async def test_removed_peer_is_disconnected_and_its_queue_dropped() -> None:
    async with make("a", {"b": PeerAddress(HOST, await unused_port())}) as a:
        for n in range(10):
            a.send(envelope("a", "b", n))
        assert a.queue_depth("b")[0] == 10
        a.set_peers({})
        assert a.queue_depth("b") == (0, 0)
        assert a.counters()["b"].dropped_disconnect == 10
        a.send(envelope("a", "b", 11))
        assert a.rejections() == {"send-unknown-peer": 1}


# ---- in-flight limits ----------------------------------------------------------------------------


async def test_queue_to_a_down_peer_is_bounded_and_keeps_the_newest() -> None:
    port = await unused_port()
    settings = TransportSettings(
        max_queue_messages=50, backoff_initial=0.01, backoff_max=0.1, ping_interval=0
    )
    async with make("a", {"b": PeerAddress(HOST, port)}, settings=settings) as a:
        for n in range(1000):
            a.send(envelope("a", "b", n))
        frames, queued = a.queue_depth("b")
        assert frames == 50
        assert queued == sum(len(codec.encode(envelope("a", "b", n))) for n in range(950, 1000))
        assert a.counters()["b"].dropped_overflow == 950
        async with make("b", {"a": a.listen_address}, port=port) as b:
            got = await receive(b, 50)  # the peer comes up: the queue drains to it
            assert got == [envelope("a", "b", n) for n in range(950, 1000)]
        assert a.counters()["b"].messages_sent == 50


async def test_queue_is_bounded_by_bytes() -> None:
    settings = TransportSettings(max_queue_bytes=2000, ping_interval=0)
    async with make("a", {"b": PeerAddress(HOST, await unused_port())}, settings=settings) as a:
        for n in range(1000):
            a.send(envelope("a", "b", n))
            assert a.queue_depth("b")[1] <= 2000
        frames, _ = a.queue_depth("b")
        assert 0 < frames < 1000
        assert a.counters()["b"].dropped_overflow == 1000 - frames


# ---- hostile input -------------------------------------------------------------------------------


@asynccontextmanager
async def target() -> AsyncIterator[PeerTransport]:
    """A node whose member "c" never runs: the intruder plays "c" (or a stranger)."""
    async with make("b", {"c": PeerAddress(HOST, await unused_port())}) as b:
        yield b


async def authenticated(intruder: Intruder, node: str = "c") -> Session:
    with anyio.fail_after(DEADLINE):
        return await intruder.authenticate(node, "b")


async def test_garbage_before_the_handshake_is_refused_and_the_node_serves_on() -> None:
    garbage = random.Random(4).randbytes(64)
    async with target() as b:
        async with Intruder.connect(b.listen_address) as intruder:
            await intruder.stream.send(garbage)
            await intruder.wait_closed()
        assert b.rejections() == {"handshake-malformed": 1}
        async with Intruder.connect(b.listen_address) as intruder:
            await authenticated(intruder)
            await intruder.send_envelopes(envelope("c", "b", 7))
            assert await receive(b, 1) == [envelope("c", "b", 7)]


async def test_peer_without_the_secret_is_refused() -> None:
    async with target() as b, Intruder.connect(b.listen_address) as intruder:
        dialer = DialerHandshake(b"not-the-cluster-secret!!", "c", "b", bytes(NONCE_BYTES))
        await intruder.stream.send(dialer.hello())
        await intruder.next_frame()  # the challenge; we cannot compute the answer
        await intruder.stream.send(pack_frame(FrameKind.AUTH, msgpack.packb([bytes(32)])))
        await intruder.wait_closed()
        assert b.rejections() == {"handshake-bad-proof": 1}
        assert b.counters()["c"].accepts == 0


async def test_unknown_member_is_refused_even_with_the_secret() -> None:
    async with target() as b, Intruder.connect(b.listen_address) as intruder:
        dialer = DialerHandshake(SECRET, "zz", "b", bytes(NONCE_BYTES))
        await intruder.stream.send(dialer.hello())
        await intruder.stream.send(dialer.on_challenge(await intruder.next_frame()))
        await intruder.wait_closed()
        assert b.rejections() == {"handshake-unknown-member": 1}
        assert "zz" not in b.counters()


async def test_forged_and_replayed_frames_are_dropped_and_the_connection_survives() -> None:
    async with target() as b, Intruder.connect(b.listen_address) as intruder:
        session = await authenticated(intruder)
        forged = Sealer(bytes(32)).seal(
            FrameKind.DATA, pack_batch([codec.encode(envelope("c", "b", 1))])
        )
        await intruder.stream.send(forged)
        genuine = session.sealer.seal(
            FrameKind.DATA, pack_batch([codec.encode(envelope("c", "b", 2))])
        )
        await intruder.stream.send(genuine)
        await intruder.stream.send(genuine)  # replayed: its sequence number is used up
        await intruder.send_envelopes(envelope("c", "b", 3))
        assert await receive(b, 2) == [envelope("c", "b", 2), envelope("c", "b", 3)]
        counters = b.counters()["c"]
        assert counters.rejected_mac == 2
        assert counters.messages_received == 2
        assert b.inbound_peers() == {"c"}


async def test_spoofed_misaddressed_and_undecodable_envelopes_are_dropped() -> None:
    async with target() as b, Intruder.connect(b.listen_address) as intruder:
        await authenticated(intruder)
        await intruder.send_envelopes(
            envelope("a", "b", 1),  # claims to come from someone else
            envelope("c", "x", 2),  # addressed to another node
            b"\xc1 not msgpack",
            codec.encode(envelope("c", "b", 3))[:-1],  # truncated
            envelope("c", "b", 4),
        )
        assert await receive(b, 1) == [envelope("c", "b", 4)]
        counters = b.counters()["c"]
        assert counters.rejected_spoofed == 1
        assert counters.rejected_misaddressed == 1
        assert counters.rejected_decode == 2
        assert counters.messages_received == 1
        assert counters.bytes_received == len(codec.encode(envelope("c", "b", 4)))


async def test_garbage_after_the_handshake_closes_that_connection_only() -> None:
    async with target() as b:
        async with Intruder.connect(b.listen_address) as intruder:
            await authenticated(intruder)
            await intruder.stream.send(b"\xff" * 64)  # a length no frame may have
            await intruder.wait_closed()
        assert b.rejections() == {"framing": 1}
        async with Intruder.connect(b.listen_address) as intruder:  # the peer redials
            await authenticated(intruder)
            await intruder.send_envelopes(envelope("c", "b", 5))
            assert await receive(b, 1) == [envelope("c", "b", 5)]
        assert b.counters()["c"].accepts == 2


async def test_pings_are_answered_on_the_same_connection() -> None:
    async with target() as b, Intruder.connect(b.listen_address) as intruder:
        session = await authenticated(intruder)
        await intruder.stream.send(session.sealer.seal(FrameKind.PING, pack_ping(77)))
        with anyio.fail_after(DEADLINE):
            pong = await intruder.next_frame()
        assert pong.kind is FrameKind.PONG
        assert session.opener.open(pong) == pack_ping(77)


# ---- link shaper ---------------------------------------------------------------------------------


async def test_one_way_partition_drops_one_direction_only() -> None:
    async with mesh("a", "b") as nodes:
        a, b = nodes["a"], nodes["b"]
        a.shaper.update_link("b", partitioned=True)
        for n in range(10):
            a.send(envelope("a", "b", n))
        assert await a.probe_rtt("b", timeout=DEADLINE) is None  # pings are cut too
        b.send(envelope("b", "a", 1))  # the other direction still works
        assert await receive(a, 1) == [envelope("b", "a", 1)]
        counters = a.counters()["b"]
        assert counters.dropped_partition == 10
        assert counters.messages_sent == 0
        a.shaper.update_link("b", partitioned=False)
        a.send(envelope("a", "b", 99))
        assert await receive(b, 1) == [envelope("a", "b", 99)]  # none of the ten arrived first


async def test_partition_also_cuts_frames_already_queued() -> None:
    port = await unused_port()
    async with make("a", {"b": PeerAddress(HOST, port)}) as a:
        for n in range(5):  # admitted by the shaper, waiting for the peer to come up
            a.send(envelope("a", "b", n))
        a.shaper.update_link("b", partitioned=True)
        async with make("b", {"a": a.listen_address}, port=port) as b:
            with anyio.fail_after(DEADLINE):
                await a.wait_connected("b")
                await anyio.wait_all_tasks_blocked()  # the writer has been through the queue
            assert a.counters()["b"].dropped_partition == 5
            a.shaper.update_link("b", partitioned=False)
            a.send(envelope("a", "b", 99))
            assert await receive(b, 1) == [envelope("a", "b", 99)]


async def test_two_way_partition_isolates_both_sides() -> None:
    async with mesh("a", "b", "c") as nodes:
        nodes["a"].shaper.update_link("b", partitioned=True)
        nodes["b"].shaper.update_link("a", partitioned=True)
        nodes["a"].send(envelope("a", "b", 1))
        nodes["b"].send(envelope("b", "a", 1))
        nodes["a"].send(envelope("a", "c", 2))
        nodes["b"].send(envelope("b", "c", 3))
        got = await receive(nodes["c"], 2)
        assert sorted(e.src for e in got) == ["a", "b"]
        assert nodes["a"].counters()["b"].dropped_partition == 1
        assert nodes["b"].counters()["a"].dropped_partition == 1


async def test_configured_delay_is_a_lower_bound_of_the_achieved_rtt() -> None:
    async with mesh("a", "b") as nodes:
        a, b = nodes["a"], nodes["b"]
        a.shaper.update_link("b", delay=0.05)
        b.shaper.update_link("a", delay=0.03)
        samples = []
        for _ in range(3):
            rtt = await a.probe_rtt("b", timeout=DEADLINE)
            assert rtt is not None
            samples.append(rtt)
        summary = a.rtt_summaries()["b"]
        assert summary.count == 3
        # Both shapers' delays are in the path; 1e-6 absorbs float rounding of the clock.
        assert summary.minimum >= 0.08 - 1e-6
        assert summary.minimum == min(samples)
        assert summary.median == sorted(samples)[1]
        started = anyio.current_time()
        a.send(envelope("a", "b", 1))
        await receive(b, 1)
        assert anyio.current_time() - started >= 0.05 - 1e-6  # data is delayed one way


async def test_loss_one_drops_all_and_zero_drops_none() -> None:
    async with mesh("a", "b") as nodes:
        a, b = nodes["a"], nodes["b"]
        a.shaper.update_link("b", loss=1.0)
        for n in range(100):
            a.send(envelope("a", "b", n))
        assert a.counters()["b"].dropped_loss == 100
        a.shaper.update_link("b", loss=0.0)
        for n in range(100, 200):
            a.send(envelope("a", "b", n))
        assert await receive(b, 100) == [envelope("a", "b", n) for n in range(100, 200)]
        counters = a.counters()["b"]
        assert counters.dropped_loss == 100
        assert counters.messages_sent == 100


def test_rtt_summary_uses_nearest_rank_over_a_bounded_window() -> None:
    tracker = RttTracker(keep=100)
    assert tracker.summary() is None
    for sample in range(1, 201):  # only the last 100 (101..200) are kept
        tracker.add(sample / 1000)
    summary = tracker.summary()
    assert summary is not None
    assert (summary.count, summary.window) == (200, 100)
    assert (summary.minimum, summary.maximum, summary.last) == (0.101, 0.2, 0.2)
    assert summary.median == 0.150
    assert summary.p99 == 0.199


async def test_egress_caps_hold_on_loopback_over_five_seconds() -> None:
    """An uplink cap shared by two links and a pipe cap on one of them: whatever the machine's
    speed, the bytes delivered by any moment never exceed what the caps let through by then
    (5% and one frame of slack), and the last frame cannot arrive before bytes / rate."""
    uplink, west = 40_000.0, 20_000.0
    value = "v" * 1000
    async with mesh("a", "b", "c") as nodes:
        a, b, c = nodes["a"], nodes["b"], nodes["c"]
        a.shaper.set_egress(EgressCaps(total=uplink, pipes={"west": west}, pipe_of={"b": "west"}))
        per_peer = 100  # ~100 KB each: b alone needs 5 s through its 20 KB/s pipe
        started = anyio.current_time()
        for n in range(per_peer):
            for peer in ("b", "c"):
                a.send(Envelope("a", peer, _append(n, value)))
        frame = len(codec.encode(Envelope("a", "b", _append(0, value))))
        arrivals: dict[str, list[float]] = {"b": [], "c": []}

        async def collect(node: PeerTransport, name: str) -> None:
            with anyio.fail_after(DEADLINE):
                for _ in range(per_peer):
                    await node.incoming.receive()
                    arrivals[name].append(anyio.current_time() - started)

        async with anyio.create_task_group() as group:
            group.start_soon(collect, b, "b")
            group.start_soon(collect, c, "c")
    both = sorted(arrivals["b"] + arrivals["c"])
    for i, t in enumerate(both):
        assert (i + 1) * frame <= uplink * t * 1.05 + frame
    for i, t in enumerate(arrivals["b"]):
        assert (i + 1) * frame <= west * t * 1.05 + frame
    assert arrivals["b"][-1] >= 0.95 * (per_peer - 1) * frame / west  # about 5 s
    assert a.counters()["b"].bytes_sent == per_peer * frame


def _append(n: int, value: str) -> AppendEntries:
    command = Command(Op.PUT, key=f"k{n:06d}", value=value, client_id="c", seq=n + 1)
    return AppendEntries(1, n, 1, (Entry(1, n + 1, command),), 0)
