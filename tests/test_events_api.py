"""`GET /events`: a node's protocol events, numbered, with the clocks to place them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from node_harness import InProcessCluster, in_process_cluster, url_of

pytestmark = pytest.mark.anyio


@pytest.fixture
async def single(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    async with in_process_cluster(tmp_path, 1, protocol="pull", election_timeout=0.02) as running:
        await running.leader()
        yield running


async def test_a_leader_lists_its_election_and_catch_up(single: InProcessCluster) -> None:
    async with single.http() as http:
        r = await http.get(url_of("n1") + "/events")
        assert r.status_code == 200
        body = r.json()
        kinds = [event["kind"] for event in body["events"]]
        assert kinds[:3] == ["pre-vote", "candidate", "elected"]
        assert "catchup-end" in kinds and "term-committed" in kinds
        seqs = [event["seq"] for event in body["events"]]
        assert seqs == sorted(seqs) and body["last"] == seqs[-1]
        # The engine clock and CLOCK_MONOTONIC, read together; events happened before.
        assert all(event["t"] <= body["now"] for event in body["events"])
        assert abs(body["monotonic"] - time.clock_gettime(time.CLOCK_MONOTONIC)) < 60

        r = await http.get(url_of("n1") + f"/events?after={seqs[1]}")
        assert [event["seq"] for event in r.json()["events"]] == seqs[2:]


async def test_a_bad_cursor_is_refused(single: InProcessCluster) -> None:
    async with single.http() as http:
        r = await http.get(url_of("n1") + "/events?after=soon")
        assert r.status_code == 400
        assert r.json()["error"] == "bad-request"
