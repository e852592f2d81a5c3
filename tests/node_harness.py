"""An in-process cluster for API and client tests: real engine loops, stores and apps, no sockets.

Each node is an `EngineLoop` over a real `FileLogStore` (fsync off: these tests are about the
API, not the disk) with its own Starlette app. Peer envelopes travel through an in-memory
network that consults each sender's real `LinkShaper`, so `/admin/shaper` partitions and loss
act here too (delays are not modelled: a message that is not dropped arrives at once).
HTTP requests reach the apps through `httpx.ASGITransport`, routed by host name
(``http://n1.test`` is node n1).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

from cluster.api import ApiLimits, NodeServices, create_app
from cluster.engine_loop import EngineLoop
from cluster.shaper import Drop, LinkShaper
from cluster.storage import FileLogStore, FsyncPolicy, open_store
from protocols.config import Config
from protocols.engines import engine_factory
from protocols.messages import Envelope
from protocols.types import NodeId, Role

SECRET = b"in-process-cluster-secret-0123456789"
DEADLINE = 20.0  # guards against hangs only


@dataclass(slots=True)
class Node:
    node_id: NodeId
    loop: EngineLoop
    store: FileLogStore
    shaper: LinkShaper
    services: NodeServices
    app: httpx.ASGITransport
    delivered: int = 0


@dataclass(slots=True)
class InProcessCluster:
    nodes: dict[NodeId, Node] = field(default_factory=dict)

    @property
    def urls(self) -> dict[NodeId, str]:
        return {node_id: url_of(node_id) for node_id in self.nodes}

    def transport(self) -> httpx.AsyncBaseTransport:
        return _Router({f"{n}.test": node.app for n, node in self.nodes.items()})

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self.transport(), timeout=DEADLINE)

    def settled_leader(self, exclude: NodeId | None = None) -> NodeId | None:
        """The leader every other node follows, once it has committed an entry of its term."""
        statuses = {n: node.loop.status() for n, node in self.nodes.items() if n != exclude}
        leaders = [s.node_id for s in statuses.values() if s.role is Role.LEADER]
        if len(leaders) != 1:
            return None
        leader = statuses[leaders[0]]
        if any(s.leader != leader.node_id for s in statuses.values()):
            return None
        if leader.last_term != leader.term or leader.commit != leader.last_index:
            return None
        return leader.node_id

    async def leader(self, exclude: NodeId | None = None) -> NodeId:
        """Wait until there is a settled leader (other than `exclude`)."""
        with anyio.fail_after(DEADLINE):
            while (leader := self.settled_leader(exclude)) is None:
                await self.any_change()
        return leader

    async def any_change(self) -> None:
        """Wait until some node's loop has done something."""
        async with anyio.create_task_group() as group:

            async def watch(node: Node) -> None:
                await node.loop.next_change()
                group.cancel_scope.cancel()

            for node in self.nodes.values():
                group.start_soon(watch, node)


def url_of(node_id: NodeId) -> str:
    return f"http://{node_id}.test"


@asynccontextmanager
async def in_process_cluster(
    tmp_path: Path,
    size: int = 3,
    *,
    protocol: str = "push",
    request_timeout: float = 2.0,
    election_timeout: float = 0.2,
    limits: ApiLimits | None = None,
    seed: int = 7,
) -> AsyncIterator[InProcessCluster]:
    ids = tuple(f"n{i + 1}" for i in range(size))
    cluster = InProcessCluster()
    rng = random.Random(seed)
    factory = engine_factory(protocol)

    def send_from(src: NodeId) -> Callable[[Envelope], None]:
        def send(envelope: Envelope) -> None:
            verdict = cluster.nodes[src].shaper.schedule(envelope.dst, 1, anyio.current_time())
            if isinstance(verdict, Drop):
                return
            target = cluster.nodes[envelope.dst]
            target.delivered += 1
            target.loop.deliver_nowait([envelope])

        return send

    async with AsyncExitStack() as stack:
        for node_id in ids:
            store = stack.enter_context(open_store(tmp_path / node_id, FsyncPolicy.NEVER))
            config = Config(
                node_id=node_id,
                members=ids,
                election_timeout=election_timeout,
                heartbeat_interval=election_timeout / 5,
            )
            engine = factory(
                config, store.load(), random.Random(rng.random()), anyio.current_time()
            )
            loop = EngineLoop(engine, store, send_from(node_id))
            shaper = LinkShaper(random.Random(rng.random()))
            services = NodeServices(
                node_id=node_id,
                protocol=protocol,
                loop=loop,
                client_urls={n: url_of(n) for n in ids},
                secret=SECRET,
                request_timeout=request_timeout,
                limits=limits or ApiLimits(),
                shaper=shaper,
                disk=store,
            )
            app = httpx.ASGITransport(app=create_app(services))
            cluster.nodes[node_id] = Node(node_id, loop, store, shaper, services, app)
        async with anyio.create_task_group() as group:
            for node in cluster.nodes.values():
                group.start_soon(node.loop.run)
            try:
                yield cluster
            finally:
                for node in cluster.nodes.values():
                    node.loop.close()


class _Router(httpx.AsyncBaseTransport):
    """Sends each request to the app named by its host."""

    def __init__(self, apps: dict[str, httpx.ASGITransport]) -> None:
        self._apps = apps

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        app = self._apps.get(request.url.host)
        if app is None:
            raise httpx.ConnectError(f"no node at {request.url.host}", request=request)
        return await app.handle_async_request(request)
