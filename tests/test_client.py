"""The async client against an in-process cluster: discovery, redirects, retries, errors, batches.

Requests go through a recording transport, so the tests see what the client actually sent
(which node, which sequence number) and not only what it returned.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from node_harness import InProcessCluster, in_process_cluster, url_of

from cluster.client import (
    BadRequest,
    Cas,
    Delete,
    Get,
    NotLeader,
    Put,
    RaftbenchClient,
    ReadResult,
    Unavailable,
    WriteResult,
)
from protocols.types import NodeId

pytestmark = pytest.mark.anyio


@dataclass(frozen=True, slots=True)
class Sent:
    method: str
    host: str
    path: str
    body: Any
    status: int


class Recorder(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: list[Sent] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.ConnectError:
            self.sent.append(Sent(request.method, request.url.host, request.url.path, None, 0))
            raise
        body = json.loads(content) if content else None
        self.sent.append(
            Sent(request.method, request.url.host, request.url.path, body, response.status_code)
        )
        return response


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    async with in_process_cluster(tmp_path, 3, request_timeout=0.5) as running:
        await running.leader()
        yield running


def cut_off(cluster: InProcessCluster, node_id: NodeId, partitioned: bool = True) -> None:
    """Partition `node_id` from everyone, both ways."""
    for other, node in cluster.nodes.items():
        if other == node_id:
            for peer in cluster.nodes:
                if peer != node_id:
                    node.shaper.update_link(peer, partitioned=partitioned)
        else:
            node.shaper.update_link(node_id, partitioned=partitioned)


async def test_finds_the_leader_from_a_follower_and_remembers_it(
    cluster: InProcessCluster,
) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    recorder = Recorder(cluster.transport())
    # Only a follower is listed: the client must follow the redirect to a node it was not given.
    async with RaftbenchClient([url_of(follower)], transport=recorder) as client:
        written = await client.put("k", "v")
        assert isinstance(written, WriteResult) and written.ok and written.prev is None
        assert client.leader == url_of(leader)
        assert (await client.get("k")).value == "v"
        assert (await client.cas("k", "v", "w")).ok
        swapped = await client.cas("k", "v", "x")
        assert not swapped.ok and swapped.prev == "w"
        deleted = await client.delete("k")
        assert deleted.prev == "w"
        missing = await client.get("k")
        assert missing == ReadResult(None, missing.index) and not missing.found
    hosts = [sent.host for sent in recorder.sent]
    assert hosts[0] == f"{follower}.test" and recorder.sent[0].status == 421
    assert set(hosts[1:]) == {f"{leader}.test"}  # remembered: no more detours


async def test_local_reads_stay_on_the_node_asked(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    recorder = Recorder(cluster.transport())
    async with RaftbenchClient([url_of(follower)], transport=recorder) as client:
        result = await client.get("absent", consistency="local")
        assert result.value is None
        assert client.leader is None  # a follower answering a local read is no leader
    assert [s.host for s in recorder.sent] == [f"{follower}.test"]


async def test_a_write_is_retried_with_the_same_seq_until_a_new_leader_takes_it(
    cluster: InProcessCluster,
) -> None:
    old = await cluster.leader()
    recorder = Recorder(cluster.transport())
    async with RaftbenchClient(
        list(cluster.urls.values()), transport=recorder, timeout=20, backoff=0.01
    ) as client:
        await client.put("k", "before")
        assert client.leader == url_of(old)
        cut_off(cluster, old)
        result = await client.put("k", "after")
        assert result.ok
        new = await cluster.leader(exclude=old)
        assert client.leader == url_of(new)
        assert (await client.get("k")).value == "after"
        await client.put("k", "later")

    puts = [s for s in recorder.sent if s.method == "PUT"]
    assert len({s.body["client_id"] for s in puts}) == 1
    seqs = [s.body["seq"] for s in puts]
    assert seqs == sorted(seqs) and set(seqs) == {1, 2, 3}  # retries reuse, new writes move on
    after = [s for s in puts if s.body["seq"] == 2]
    assert len(after) >= 2  # the old leader could not answer in time, then the new one did
    # First to the old leader (which cannot commit: 503/504; or, had it noticed the cut
    # already, 421), then on until the new leader took it.
    assert after[0].host == f"{old}.test" and after[0].status in (421, 503, 504)
    assert after[-1].host == f"{new}.test" and after[-1].status == 200
    assert all(s.status != 200 for s in after[:-1])


async def test_no_leader_anywhere_raises_not_leader(tmp_path: Path) -> None:
    async with in_process_cluster(tmp_path, 3) as cluster:
        for node_id in cluster.nodes:  # before any election could finish
            cut_off(cluster, node_id)
        async with RaftbenchClient(
            list(cluster.urls.values()), transport=cluster.transport(), timeout=0.3
        ) as client:
            with pytest.raises(NotLeader, match="not-leader"):
                await client.put("k", "v")
            with pytest.raises(NotLeader):
                await client.get("k")


async def test_unreachable_endpoints_raise_unavailable() -> None:
    recorder = Recorder(httpx.MockTransport(_refuse))
    async with RaftbenchClient(
        ["http://a.test", "b.test:80"], transport=recorder, timeout=0.2
    ) as client:
        with pytest.raises(Unavailable, match="cannot connect"):
            await client.put("k", "v")
    assert {s.host for s in recorder.sent} == {"a.test", "b.test"}  # it tried both


def _refuse(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("refused", request=request)


async def test_a_bad_request_is_not_retried(cluster: InProcessCluster) -> None:
    recorder = Recorder(cluster.transport())
    async with RaftbenchClient(list(cluster.urls.values()), transport=recorder) as client:
        await client.put("warm-up", "v")
        before = len(recorder.sent)
        with pytest.raises(BadRequest) as caught:
            await client.put("k" * 5000, "v")
        assert caught.value.status == 413 and caught.value.error == "too-large"
        with pytest.raises(BadRequest, match="consistency"):
            await client.get("k", consistency="eventual")
        assert len(recorder.sent) == before + 2


async def test_batch_answers_in_order_with_one_session_lane_per_position(
    cluster: InProcessCluster,
) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    recorder = Recorder(cluster.transport())
    async with RaftbenchClient([url_of(follower)], "bc", transport=recorder) as client:
        results = await client.batch(
            [
                Put("a", "1"),
                Put("b", "2"),
                Cas("a", "1", "3"),
                Delete("b"),
                Get("a"),
                Get("zzz", consistency="leader"),
            ]
        )
        assert [type(r).__name__ for r in results] == ["WriteResult"] * 4 + ["ReadResult"] * 2
        cas, delete, get_a, get_z = results[2:]
        assert isinstance(cas, WriteResult) and cas.ok and cas.prev == "1"
        assert isinstance(delete, WriteResult) and delete.prev == "2"
        assert isinstance(get_a, ReadResult) and get_a.value in ("1", "3")
        assert isinstance(get_z, ReadResult) and get_z.value is None
        assert (await client.get("a")).value == "3"

        with pytest.raises(BadRequest, match=r"ops\[2\]\.key"):  # refused as a whole
            await client.batch([Put("a", "4"), Get("a"), Put("k" * 5000, "x")])
        second = await client.batch([Put("a", "4"), Get("a"), Put("c", "x")])
        assert all(isinstance(r, WriteResult | ReadResult) for r in second)

    batches = [s for s in recorder.sent if s.path == "/batch"]
    assert batches[0].host == f"{follower}.test"  # every op was redirected, then retried
    assert batches[1].host == f"{leader}.test"
    ops = batches[1].body["ops"]
    lanes = [(op.get("client_id"), op.get("seq")) for op in ops]
    assert lanes == [("bc", 1), ("bc/1", 1), ("bc/2", 1), ("bc/3", 1), (None, None), (None, None)]
    assert batches[0].body["ops"] == ops  # the retry carried the same sequence numbers
    assert [op.get("seq") for op in batches[-1].body["ops"]] == [3, None, 3]


async def test_one_call_at_a_time(cluster: InProcessCluster) -> None:
    async with RaftbenchClient(
        list(cluster.urls.values()), transport=cluster.transport()
    ) as client:
        errors: list[BaseException] = []

        async def put(value: str) -> None:
            try:
                await client.put("k", value)
            except RuntimeError as error:
                errors.append(error)

        async with anyio.create_task_group() as group:
            group.start_soon(put, "a")
            group.start_soon(put, "b")
        assert len(errors) == 1 and "one call at a time" in str(errors[0])
