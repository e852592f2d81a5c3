"""One node process: the engine loop, the durable store, the peer transport, the HTTP API.

`run_node` wires them together on one anyio event loop (the engine loop is described in
`cluster.engine_loop`, the API in `cluster.api`):

* the store is opened first (it locks the data directory, so a second node on the same
  directory fails here, before anything listens) and the engine is rebuilt from it;
* the peer transport and the HTTP socket are bound; then one line goes to stdout::

      ready n1 peer=127.0.0.1:7001 client=http://127.0.0.1:8001

  which is what a launcher waits for (the addresses are the bound ones);
* SIGTERM or SIGINT stops the node cleanly: waiting clients are answered, HTTP stops,
  the transport closes, the store is closed; exit status 0.

A broken invariant, a failed disk or a contract error inside the engine stops the node with
exit status 1 and a message on stderr: a node that cannot trust itself must not keep serving.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from cluster.api import NodeServices, create_app
from cluster.config import Address, ClusterConfig, load_cluster_config
from cluster.engine_loop import EngineLoop
from cluster.heap_trim import HeapTrimError, run_heap_trims, trim_period
from cluster.memtrace import MemtraceError, run_memtrace, settings_from_env
from cluster.metrics import Family, Registry
from cluster.shaper import LinkShaper
from cluster.storage import FileLogStore, FsyncPolicy, open_store
from cluster.transport import PeerTransport
from protocols.engine import Engine
from protocols.engines import engine_factory
from protocols.errors import CallerError, InvariantViolation, StorageError
from protocols.types import NodeId

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1  # the node had to stop: invariant, storage, a bug
EXIT_START = 2  # it could not start: configuration, data directory, address in use


class StartError(Exception):
    """The node cannot start; the message says why."""


@dataclass(frozen=True, slots=True)
class NodeOptions:
    config: ClusterConfig
    node_id: NodeId
    protocol: str
    data_dir: Path
    fsync: FsyncPolicy | None = None  # None: the cluster file's setting
    snapshot_entries: int | None = None  # None: the cluster file's compaction thresholds
    snapshot_bytes: int | None = None
    seed: int | None = None  # engine and transport randomness; None: from the OS
    announce: Callable[[str], None] | None = None  # where the ready line goes (stdout)
    config_path: Path | None = None  # re-read when the configuration names a new member
    start_as: str | None = None  # "bootstrap" (a cluster of one) or "join"; None: the file's


EVENT_LOOP_ENV = "RAFTBENCH_EVENT_LOOP"  # "uvloop" (the default) or "asyncio"


def event_loop_options() -> dict[str, Any]:
    """anyio's asyncio backend options: uvloop unless the environment asks for asyncio's own
    loop (kept selectable so `raftbench bench` can measure what uvloop is worth)."""
    choice = os.environ.get(EVENT_LOOP_ENV, "uvloop")
    if choice not in ("uvloop", "asyncio"):
        raise StartError(f"{EVENT_LOOP_ENV}={choice!r}: must be uvloop or asyncio")
    return {"use_uvloop": choice == "uvloop"}


def main(options: NodeOptions) -> int:
    """Run a node until it is told to stop; the process exit status."""
    try:
        return anyio.run(run_node, options, backend_options=event_loop_options())
    except StartError as error:
        print(f"raftbench node: error: {error}", file=sys.stderr)
        return EXIT_START


async def run_node(options: NodeOptions) -> int:
    """Run until SIGTERM/SIGINT (EXIT_OK) or a fatal error (EXIT_FAILED). StartError if it
    cannot start."""
    config = options.config
    try:
        factory = engine_factory(options.protocol)
        member = config.member(options.node_id)
        engine_config = config.engine_config(options.node_id)
        if options.snapshot_entries is not None:
            engine_config = replace(engine_config, snapshot_entries=options.snapshot_entries)
        if options.snapshot_bytes is not None:
            engine_config = replace(engine_config, snapshot_bytes=options.snapshot_bytes)
        if options.start_as is not None:
            joining = options.start_as == "join"
            engine_config = replace(engine_config, bootstrap=not joining, joining=joining)
        engine_config.validate()
    except CallerError as error:
        raise StartError(str(error)) from None
    fsync = options.fsync or config.fsync
    try:
        store = open_store(options.data_dir, fsync)
    except StorageError as error:
        raise StartError(str(error)) from None
    with contextlib.closing(store):
        rng = random.Random(options.seed if options.seed is not None else secrets.randbits(64))
        try:
            engine = factory(engine_config, store.load(), rng, anyio.current_time())
        except CallerError as error:  # e.g. a snapshot that verifies but does not decode
            raise StartError(f"{options.data_dir}: {error}") from None
        shaper = LinkShaper(
            random.Random(rng.random()),
            config.link_specs(options.node_id),
            egress=config.egress_caps(options.node_id),
        )
        engine.egress_gauge = shaper  # the engine's back-pressure on capped pipes
        peers = {m.id: m.peer.peer_address() for m in config.members if m.id != member.id}
        transport = PeerTransport(
            member.id,
            config.secret_bytes,
            member.peer.peer_address(),
            peers,
            rng=random.Random(rng.random()),
            shaper=shaper,
        )
        with _listening_socket(member.client) as http_socket:
            return await _serve(options, config, engine, store, transport, http_socket)


async def _serve(
    options: NodeOptions,
    config: ClusterConfig,
    engine: Engine,
    store: FileLogStore,
    transport: PeerTransport,
    http_socket: socket.socket,
) -> int:
    registry = Registry()
    loop = EngineLoop(engine, store, transport.send, registry=registry)
    transport.deliver_to(loop.deliver)
    client_urls = config.client_urls()
    members = _MemberBook(options, transport, client_urls)
    registry.collector(lambda: transport_families(transport))
    registry.collector(lambda: store_families(store))
    services = NodeServices(
        node_id=options.node_id,
        protocol=options.protocol,
        loop=loop,
        client_urls=client_urls,
        secret=config.secret_bytes,
        request_timeout=config.request_timeout,
        shaper=transport.shaper,
        disk=store,
        peers_view=lambda: peers_view(transport),
        refresh_peers=members.refresh,
    )
    server = _Server(
        uvicorn.Config(
            create_app(services),
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
    )
    try:
        memtrace = settings_from_env(options.node_id)
        trims = trim_period()
    except (MemtraceError, HeapTrimError) as error:
        raise StartError(str(error)) from None
    code = EXIT_OK
    stop = anyio.Event()
    http_done = anyio.Event()
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(transport)
            except OSError as error:
                peer = config.member(options.node_id).peer
                raise StartError(f"cannot listen on {peer} (peer transport): {error}") from None
            async with anyio.create_task_group() as group:
                await group.start(_watch_signals, stop)
                group.start_soon(_run_loop, loop, stop)
                group.start_soon(members.follow, loop)
                group.start_soon(_serve_http, server, http_socket, http_done)
                if memtrace is not None:  # a diagnostic, off unless the environment asks
                    group.start_soon(run_memtrace, memtrace)
                if trims is not None:
                    group.start_soon(run_heap_trims, trims)
                bound = transport.listen_address
                http_host, http_port = http_socket.getsockname()[:2]
                announce = options.announce or _print_flush
                peer_text = Address(bound.host, bound.port)
                announce(
                    f"ready {options.node_id} peer={peer_text} "
                    f"client={Address(http_host, http_port).url}"
                )
                await stop.wait()
                loop.close()
                server.should_exit = True
                with anyio.move_on_after(5):
                    await http_done.wait()
                group.cancel_scope.cancel()
    except* InvariantViolation as group_error:
        _report_fatal("safety invariant violated", group_error)
        code = EXIT_FAILED
    except* StorageError as group_error:
        _report_fatal("storage failed", group_error)
        code = EXIT_FAILED
    except* CallerError as group_error:
        _report_fatal("engine contract broken", group_error)
        code = EXIT_FAILED
    return code


def _report_fatal(what: str, group: BaseExceptionGroup[Exception]) -> None:
    for error in group.exceptions:
        logger.critical("%s: %s", what, error, exc_info=error)
        print(f"raftbench node: fatal: {what}: {error}", file=sys.stderr, flush=True)


def _print_flush(line: str) -> None:
    print(line, flush=True)


async def _run_loop(loop: EngineLoop, stop: anyio.Event) -> None:
    try:
        await loop.run()
    finally:
        stop.set()


class _MemberBook:
    """Peer addresses for members added after this node started (from the cluster file).

    The engine follows the configuration in its log; the transport and the client API need
    addresses, which `raftbench cluster add-node` writes into the cluster file. When the
    configuration names a member this node has no address for, the file is read again.
    """

    def __init__(
        self, options: NodeOptions, transport: PeerTransport, client_urls: dict[NodeId, str]
    ) -> None:
        self._options = options
        self._transport = transport
        self._client_urls = client_urls

    def refresh(self) -> None:
        path = self._options.config_path
        if path is None:
            return
        try:
            config = load_cluster_config(path)
        except CallerError as error:
            logger.warning("cannot re-read %s: %s", path, error)
            return
        me = self._options.node_id
        self._transport.set_peers(
            {m.id: m.peer.peer_address() for m in config.members if m.id != me}
        )
        self._client_urls.update(config.client_urls())

    async def follow(self, loop: EngineLoop) -> None:
        """Re-read the file when the configuration names a member without an address."""
        while not loop.closed:
            pause = 0.2
            membership = loop.status().membership
            if membership is not None and any(
                m not in self._client_urls for m in membership.members
            ):
                self.refresh()
                if any(m not in self._client_urls for m in membership.members):
                    pause = 2.0  # the file does not name it (yet): look again later
            await anyio.sleep(pause)


async def _serve_http(server: _Server, sock: socket.socket, done: anyio.Event) -> None:
    try:
        await server.serve(sockets=[sock])
    finally:
        done.set()


async def _watch_signals(
    stop: anyio.Event, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """Turn SIGTERM/SIGINT into a clean stop. Started with `group.start`, so the handlers are
    in place before the ready line: a supervisor may signal as soon as it reads that line."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        task_status.started()
        async for signum in signals:
            logger.info("received %s: stopping", signal.Signals(signum).name)
            stop.set()
            return


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the node owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def _listening_socket(address: Address) -> Iterator[socket.socket]:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP,
    # and without it every keep-alive response (headers, then body) waits ~40 ms for a
    # delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.bind((address.host, address.port))
        except OSError as error:
            raise StartError(f"cannot listen on {address} (client API): {error}") from None
        sock.listen(2048)
        sock.setblocking(False)
        yield sock
    finally:
        sock.close()


# ---- what /status and /metrics show about the transport and the store --------------------------


def peers_view(transport: PeerTransport) -> dict[str, Any]:
    rtts = transport.rtt_summaries()
    inbound = transport.inbound_peers()
    out: dict[str, Any] = {}
    for peer in sorted(transport.counters()):
        rtt = rtts.get(peer)
        out[peer] = {
            "connected": transport.is_connected(peer),
            "inbound": peer in inbound,
            "rtt_ms": None if rtt is None else round(rtt.median * 1000.0, 3),
        }
    return out


_DIRECTIONS = (
    ("raftbench_peer_messages_total", "Peer messages (encoded envelopes).", "messages"),
    ("raftbench_peer_bytes_total", "Bytes of encoded peer envelopes.", "bytes"),
    ("raftbench_peer_wire_bytes_total", "Bytes on peer connections incl. framing.", "wire_bytes"),
)
_DROPS = ("partition", "loss", "overflow", "disconnect", "oversize")
_REJECTS = ("mac", "decode", "spoofed", "misaddressed")
_CONNECTIONS = ("connects", "connect_failures", "disconnects", "accepts")


def transport_families(transport: PeerTransport) -> list[Family]:
    """Per-peer transport counters, rejections before authentication, and measured RTTs."""
    counters = {peer: c.as_dict() for peer, c in sorted(transport.counters().items())}
    families = []
    for name, help, stem in _DIRECTIONS:
        family = Family(name, "counter", help)
        for peer, values in counters.items():
            family.add(values[f"{stem}_sent"], peer=peer, direction="sent")
            family.add(values[f"{stem}_received"], peer=peer, direction="received")
        families.append(family)
    dropped = Family(
        "raftbench_peer_dropped_total", "counter", "Outgoing peer messages dropped, by reason."
    )
    rejected = Family(
        "raftbench_peer_rejected_total",
        "counter",
        "Incoming frames or messages from an authenticated peer refused, by reason.",
    )
    connections = Family(
        "raftbench_peer_connection_events_total", "counter", "Peer connection events."
    )
    for peer, values in counters.items():
        for reason in _DROPS:
            dropped.add(values[f"dropped_{reason}"], peer=peer, reason=reason)
        for reason in _REJECTS:
            rejected.add(values[f"rejected_{reason}"], peer=peer, reason=reason)
        for event in _CONNECTIONS:
            connections.add(values[event], peer=peer, event=event)
    refusals = Family(
        "raftbench_transport_rejections_total",
        "counter",
        "Peer connections or frames refused before a peer was authenticated, by reason.",
    )
    for reason, count in sorted(transport.rejections().items()):
        refusals.add(count, reason=reason)
    rtt = Family("raftbench_peer_rtt_seconds", "gauge", "Measured peer round trips (recent).")
    for peer, summary in sorted(transport.rtt_summaries().items()):
        rtt.add(summary.median, peer=peer, quantile="0.5")
        rtt.add(summary.p99, peer=peer, quantile="0.99")
    return [*families, dropped, rejected, connections, refusals, rtt]


def store_families(store: FileLogStore) -> list[Family]:
    out = []
    for name, kind, help, value in (
        ("raftbench_store_fsyncs_total", "counter", "fsync calls of the log.", store.fsync_count),
        (
            "raftbench_store_fsync_seconds_total",
            "counter",
            "Time spent in fsync of the log.",
            store.fsync_seconds,
        ),
        (
            "raftbench_store_bytes_written_total",
            "counter",
            "Bytes appended to the log file.",
            store.bytes_written,
        ),
        (
            "raftbench_store_fsync_delay_seconds",
            "gauge",
            "Injected delay per persist (slow-disk fault).",
            store.fsync_delay_seconds,
        ),
        (
            "raftbench_store_snapshots_total",
            "counter",
            "Snapshots saved (taken here or received), each followed by a log rewrite.",
            store.snapshots_saved,
        ),
        (
            "raftbench_store_snapshot_bytes",
            "gauge",
            "Size of the last snapshot file written.",
            store.snapshot_bytes,
        ),
        (
            "raftbench_store_log_file_bytes",
            "gauge",
            "Size of the log file (shrinks when a snapshot compacts it).",
            store.file_bytes,
        ),
    ):
        family = Family(name, kind, help)
        family.add(float(value))
        out.append(family)
    return out
