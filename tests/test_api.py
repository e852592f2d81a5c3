"""The HTTP API in-process (httpx.ASGITransport): answers, redirects, limits, every bad input.

The nodes are real engine loops over real stores (see tests/node_harness.py); only the
sockets are missing. Nothing here waits on a clock: a leader is awaited on the loops' own
change notifications, under a deadline that only guards against hangs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from node_harness import DEADLINE, SECRET, InProcessCluster, in_process_cluster, url_of

from cluster.admin import AUTH_HEADER, admin_signature
from cluster.api import ApiLimits
from protocols.types import Role

pytestmark = pytest.mark.anyio

LIMITS = ApiLimits(max_key_bytes=64, max_value_bytes=256, max_body_bytes=4096, max_batch_ops=8)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    async with in_process_cluster(tmp_path, 3, limits=LIMITS) as running:
        await running.leader()
        yield running


@pytest.fixture
async def single(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    """One node, so it leads at once and for good: the bad-input cases need no more."""
    async with in_process_cluster(tmp_path, 1, limits=LIMITS, election_timeout=0.02) as running:
        await running.leader()
        yield running


async def leader_http(cluster: InProcessCluster) -> tuple[httpx.AsyncClient, str]:
    leader = await cluster.leader()
    return httpx.AsyncClient(
        transport=cluster.transport(), base_url=url_of(leader), timeout=20
    ), leader


async def test_put_get_delete_cas_on_the_leader(cluster: InProcessCluster) -> None:
    http, _ = await leader_http(cluster)
    async with http:
        r = await http.put("/kv/fruit", json={"value": "apple", "client_id": "c1", "seq": 1})
        assert r.status_code == 200
        written = r.json()
        assert written["ok"] is True and written["prev"] is None and written["index"] > 0

        r = await http.get("/kv/fruit")
        assert r.status_code == 200
        assert r.json()["value"] == "apple" and r.json()["found"] is True

        r = await http.post("/cas/fruit", json={"expected": "pear", "new": "fig"})
        assert r.status_code == 200 and r.json()["ok"] is False and r.json()["prev"] == "apple"
        r = await http.post("/cas/fruit", json={"expected": "apple", "new": "fig"})
        assert r.status_code == 200 and r.json() | {"index": 0} == {
            "ok": True,
            "prev": "apple",
            "duplicate": False,
            "index": 0,
        }
        r = await http.post("/cas/new-key", json={"expected": None, "new": "created"})
        assert r.json()["ok"] is True

        r = await http.request("DELETE", "/kv/fruit", json={"client_id": "c1", "seq": 2})
        assert r.status_code == 200 and r.json()["prev"] == "fig"
        r = await http.delete("/kv/new-key")  # no body: no session
        assert r.status_code == 200 and r.json()["prev"] == "created"

        r = await http.get("/kv/fruit", params={"consistency": "leader"})
        assert r.json() == {"value": None, "found": False, "index": r.json()["index"]}


async def test_keys_may_hold_any_character_including_slashes(cluster: InProcessCluster) -> None:
    http, _ = await leader_http(cluster)
    async with http:
        for key in ["a/b/c", "spaces and ?&=#", "ünï €"]:
            path = "/kv/" + "".join(f"%{b:02X}" for b in key.encode())
            r = await http.put(path, json={"value": key})
            assert r.status_code == 200, r.text
            r = await http.get(path)
            assert r.json()["value"] == key


NOT_UTF8_KEYS = ["%FF", "%FE", "%C3", "ok%C3", "%ED%A0%80", "%C0%AF"]  # last: overlong "/"


async def test_keys_that_are_not_utf8_are_refused_and_write_nothing(
    single: InProcessCluster,
) -> None:
    http, _ = await leader_http(single)
    async with http:
        before = (await http.get("/status")).json()["last_index"]
        for raw in NOT_UTF8_KEYS:
            requests: list[tuple[str, str, dict[str, Any] | None]] = [
                ("PUT", f"/kv/{raw}", {"value": "x"}),
                ("GET", f"/kv/{raw}", None),
                ("DELETE", f"/kv/{raw}", None),
                ("POST", f"/cas/{raw}", {"expected": None, "new": "x"}),
            ]
            for method, path, body in requests:
                r = await http.request(method, path, json=body)
                assert r.status_code == 400, (method, path, r.text)
                assert r.json()["error"] == "bad-request"
                assert "key: not valid UTF-8" in r.json()["detail"]
        # JSON accepts a lone surrogate escape; it is no key either, and the batch is refused.
        lone = b'{"ops": [{"op": "put", "key": "ok", "value": "x"}, '
        lone += b'{"op": "put", "key": "\\ud800", "value": "x"}]}'
        r = await http.post("/batch", content=lone)
        assert r.status_code == 400 and "ops[1].key: not valid Unicode" in r.json()["detail"]
        assert (await http.get("/status")).json()["last_index"] == before

        # None of them landed on the key that lenient decoding would have made of them.
        r = await http.get("/kv/%EF%BF%BD")
        assert r.status_code == 200 and r.json()["found"] is False
        r = await http.put("/kv/%C3%A9", json={"value": "e-acute"})
        assert r.status_code == 200
        r = await http.post("/batch", json={"ops": [{"op": "get", "key": "é"}]})
        assert r.json()["results"][0]["value"] == "e-acute"
        assert (await http.put("/kv/a%2Fb", json={"value": "slash"})).status_code == 200
        r = await http.post("/batch", json={"ops": [{"op": "get", "key": "a/b"}]})
        assert r.json()["results"][0]["value"] == "slash"


async def test_a_read_answers_with_an_index_no_lower_than_the_write_it_reflects(
    cluster: InProcessCluster,
) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    async with cluster.http() as http:
        written = (await http.put(f"{url_of(leader)}/kv/idx", json={"value": "one"})).json()
        with anyio.fail_after(DEADLINE):
            while cluster.nodes[follower].loop.status().applied < written["index"]:
                await cluster.any_change()
        for node, level in [(leader, "linearizable"), (leader, "leader"), (follower, "local")]:
            r = await http.get(f"{url_of(node)}/kv/idx", params={"consistency": level})
            assert r.status_code == 200, (level, r.text)
            assert r.json()["value"] == "one", level
            assert r.json()["index"] >= written["index"], level

        # A read proposed together with a write starts its leadership round before the write
        # commits; served after the write applied, it must not carry the older read index.
        ops = [{"op": "put", "key": "idx", "value": "two"}, {"op": "get", "key": "idx"}]
        put, get = (await http.post(f"{url_of(leader)}/batch", json={"ops": ops})).json()["results"]
        assert put["status"] == get["status"] == 200
        assert get["value"] in ("one", "two")
        if get["value"] == "two":
            assert get["index"] >= put["index"]
        else:
            assert get["index"] < put["index"]


async def test_a_retried_write_applies_once(cluster: InProcessCluster) -> None:
    http, _ = await leader_http(cluster)
    async with http:
        body = {"expected": None, "new": "first", "client_id": "c9", "seq": 5}
        first = (await http.post("/cas/once", json=body)).json()
        again = (await http.post("/cas/once", json=body)).json()
        assert first["ok"] is True and again["ok"] is True and again["duplicate"] is True
        # The retry did not apply a second time: a different writer's CAS still sees "first".
        r = await http.post("/cas/once", json={"expected": "first", "new": "second"})
        assert r.json()["ok"] is True


async def test_followers_redirect_to_the_leader_and_serve_local_reads(
    cluster: InProcessCluster,
) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    async with cluster.http() as http:
        await http.put(f"{url_of(leader)}/kv/k", json={"value": "v"})
        base = url_of(follower)
        for request in [
            http.build_request("PUT", f"{base}/kv/k", json={"value": "w"}),
            http.build_request("GET", f"{base}/kv/k"),
            http.build_request("GET", f"{base}/kv/k", params={"consistency": "leader"}),
            http.build_request("DELETE", f"{base}/kv/k"),
            http.build_request("POST", f"{base}/cas/k", json={"expected": "v", "new": "x"}),
        ]:
            r = await http.send(request)
            assert r.status_code == 421
            assert r.json()["error"] == "not-leader"
            assert r.json()["leader"] == url_of(leader)
            assert r.json()["leader_id"] == leader
        # A local read is served by the follower itself, once it has applied the write.
        await cluster.nodes[follower].loop.wait_until(lambda s: s.applied >= 2)
        r = await http.get(f"{base}/kv/k", params={"consistency": "local"})
        assert r.status_code == 200 and r.json()["value"] == "v"


async def test_without_a_leader_the_redirect_says_unknown(tmp_path: Path) -> None:
    async with in_process_cluster(tmp_path, 3) as cluster:
        for node in cluster.nodes.values():  # nobody hears anybody: no election can succeed
            node.shaper.update_link("n1", partitioned=True)
            node.shaper.update_link("n2", partitioned=True)
            node.shaper.update_link("n3", partitioned=True)
        async with cluster.http() as http:
            r = await http.put(f"{url_of('n1')}/kv/k", json={"value": "v"})
            if r.status_code != 421:  # n1 may lead from before the cut: wait until it steps down
                await cluster.nodes["n1"].loop.wait_until(lambda s: s.role is not Role.LEADER)
                r = await http.put(f"{url_of('n1')}/kv/k", json={"value": "v"})
            assert r.status_code == 421
            assert r.json()["leader"] == "unknown" and r.json()["leader_id"] is None


async def test_a_write_cut_off_from_its_quorum_has_an_unknown_outcome_then_applies_once(
    tmp_path: Path,
) -> None:
    # The election timeout is long next to the request timeout, so the cut-off leader is
    # still leading when the write times out (a step-down would answer 503, also "unknown").
    async with in_process_cluster(
        tmp_path, 3, request_timeout=0.3, election_timeout=1.0
    ) as cluster:
        leader = await cluster.leader()
        base = url_of(leader)
        peers = [n for n in cluster.nodes if n != leader]
        # A compare-and-set shows a double application: the second one would fail.
        body = {"expected": None, "new": "maybe", "client_id": "c1", "seq": 1}
        async with cluster.http() as http:
            cut = {"links": {"*": {"partitioned": True}}}
            r = await _admin(http, base, "/admin/shaper", cut)
            assert r.status_code == 200
            assert all(r.json()["links"][p]["partitioned"] for p in peers)

            r = await http.post(f"{base}/cas/k", json=body)
            assert r.status_code in (503, 504)
            assert r.json()["error"] == "unknown-outcome"

            heal = {"links": {"*": {"partitioned": False}}}
            assert (await _admin(http, base, "/admin/shaper", heal)).status_code == 200
            # Retry with the same seq wherever the leader now is, as a client would.
            target = base
            with anyio.fail_after(DEADLINE):
                while True:
                    r = await http.post(f"{target}/cas/k", json=body)
                    if r.status_code == 200:
                        break
                    if r.status_code == 421 and r.json()["leader"] != "unknown":
                        target = r.json()["leader"]
                    else:
                        await cluster.any_change()
            assert r.json()["ok"] is True
            r = await http.get(f"{target}/kv/k")
            assert r.json()["value"] == "maybe"
            metrics = (await http.get(f"{target}/metrics")).text
            assert 'raftbench_client_replies_total{kind="write",status="ok"}' in metrics


async def test_batch_runs_mixed_operations_in_order(cluster: InProcessCluster) -> None:
    http, _ = await leader_http(cluster)
    async with http:
        ops: list[dict[str, Any]] = [
            {"op": "put", "key": "a", "value": "1", "client_id": "b/0", "seq": 1},
            {"op": "put", "key": "b", "value": "2", "client_id": "b/1", "seq": 1},
            {"op": "cas", "key": "a", "expected": "1", "new": "3"},
            {"op": "delete", "key": "b"},
            {"op": "get", "key": "a", "consistency": "linearizable"},
            {"op": "get", "key": "b", "consistency": "local"},
        ]
        r = await http.post("/batch", json={"ops": ops})
        assert r.status_code == 200
        results = r.json()["results"]
        assert [x["status"] for x in results] == [200] * 6
        assert results[2]["ok"] is True and results[2]["prev"] == "1"
        assert results[3]["prev"] == "2"
        indexes = [x["index"] for x in results[:4]]
        assert indexes == sorted(indexes) and len(set(indexes)) == 4  # proposed in order
        r = await http.get("/kv/a")
        assert r.json()["value"] == "3"


async def test_batch_on_a_follower_answers_per_operation(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    async with cluster.http() as http:
        ops = [{"op": "put", "key": "a", "value": "1"}, {"op": "get", "key": "a"}]
        r = await http.post(f"{url_of(follower)}/batch", json={"ops": ops})
        assert r.status_code == 200
        assert [x["status"] for x in r.json()["results"]] == [421, 421]
        assert r.json()["results"][0]["leader"] == url_of(leader)


async def test_status_and_metrics(cluster: InProcessCluster) -> None:
    http, leader = await leader_http(cluster)
    async with http:
        for i in range(3):
            assert (await http.put(f"/kv/k{i}", json={"value": "v"})).status_code == 200
        status = (await http.get("/status")).json()
        assert status["id"] == leader and status["role"] == "leader" and status["is_leader"]
        assert status["leader"] == leader and status["leader_url"] == url_of(leader)
        assert status["commit_index"] == status["last_index"] >= 4
        assert status["protocol"] == "push" and status["term"] >= 1
        assert sorted(status["peers_seen"]) == sorted(n for n in cluster.nodes if n != leader)
        # The sync tree's fields are there for every protocol; push has no tree.
        assert (status["sync_source"], status["sync_depth"], status["pullers"]) == (None, None, [])

        r = await http.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        samples = _samples(r.text)
        assert samples["raftbench_proposals_total"] >= 3
        assert samples["raftbench_commit_latency_seconds_count"] >= 3
        assert samples['raftbench_commit_latency_seconds_bucket{le="+Inf"}'] >= 3
        assert samples["raftbench_commits_total"] >= 4
        assert samples["raftbench_elections_won_total"] >= 1
        assert samples["raftbench_is_leader"] == 1
        assert "# TYPE raftbench_commit_latency_seconds histogram" in r.text


# ---- bad input: every case is a 4xx with a JSON error naming the problem -------------------------

BIG_KEY = "k" * 65
BIG_VALUE = "v" * 257
WIDE_KEY = "é" * 33  # 33 characters, 66 UTF-8 bytes


BAD_REQUESTS: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    # (id, method, path, request kwargs, status, text the detail must contain)
    ("put no body", "PUT", "/kv/k", {}, 400, "body: not valid JSON"),
    ("put not json", "PUT", "/kv/k", {"content": b"value=1"}, 400, "body: not valid JSON"),
    ("put array", "PUT", "/kv/k", {"json": ["v"]}, 400, "body: expected a JSON object"),
    ("put no value", "PUT", "/kv/k", {"json": {}}, 400, "value: missing"),
    ("put null value", "PUT", "/kv/k", {"json": {"value": None}}, 400, "value: missing"),
    ("put number", "PUT", "/kv/k", {"json": {"value": 1}}, 400, "value: expected a string"),
    ("put bool", "PUT", "/kv/k", {"json": {"value": True}}, 400, "value: expected a string"),
    ("put object", "PUT", "/kv/k", {"json": {"value": {}}}, 400, "value: expected a string"),
    ("unknown field", "PUT", "/kv/k", {"json": {"value": "v", "ttl": 1}}, 400, "ttl: unknown"),
    (
        "lone surrogate",
        "PUT",
        "/kv/k",
        {"content": b'{"value": "\\ud800"}'},
        400,
        "value: not valid Unicode",
    ),
    ("nan", "PUT", "/kv/k", {"content": b'{"value": NaN}'}, 400, "not valid JSON"),
    ("deep json", "PUT", "/kv/k", {"content": b"[" * 2040 + b"]" * 2040}, 400, "not valid JSON"),
    ("bad utf-8", "PUT", "/kv/k", {"content": b'{"value": "\xff"}'}, 400, "not valid JSON"),
    (
        "id without seq",
        "PUT",
        "/kv/k",
        {"json": {"value": "v", "client_id": "c"}},
        400,
        "seq: client_id and seq go together",
    ),
    (
        "seq without id",
        "PUT",
        "/kv/k",
        {"json": {"value": "v", "seq": 1}},
        400,
        "client_id: client_id and seq go together",
    ),
    ("seq zero", "PUT", "/kv/k", {"json": {"value": "v", "client_id": "c", "seq": 0}}, 400, "seq"),
    (
        "seq negative",
        "PUT",
        "/kv/k",
        {"json": {"value": "v", "client_id": "c", "seq": -3}},
        400,
        "seq",
    ),
    (
        "seq float",
        "PUT",
        "/kv/k",
        {"json": {"value": "v", "client_id": "c", "seq": 1.5}},
        400,
        "seq",
    ),
    (
        "seq bool",
        "PUT",
        "/kv/k",
        {"json": {"value": "v", "client_id": "c", "seq": True}},
        400,
        "seq",
    ),
    (
        "seq text",
        "PUT",
        "/kv/k",
        {"json": {"value": "v", "client_id": "c", "seq": "1"}},
        400,
        "seq",
    ),
    (
        "empty client id",
        "PUT",
        "/kv/k",
        {"json": {"value": "v", "client_id": "", "seq": 1}},
        400,
        "client_id: expected a non-empty string",
    ),
    (
        "numeric client id",
        "PUT",
        "/kv/k",
        {"json": {"value": "v", "client_id": 7, "seq": 1}},
        400,
        "client_id: expected a non-empty string",
    ),
    (
        "long client id",
        "PUT",
        "/kv/k",
        {"json": {"value": "v", "client_id": "c" * 257, "seq": 1}},
        413,
        "client_id: longer than",
    ),
    ("empty key", "PUT", "/kv/", {"json": {"value": "v"}}, 400, "key: must not be empty"),
    ("long key", "PUT", f"/kv/{BIG_KEY}", {"json": {"value": "v"}}, 413, "key: 65 bytes"),
    ("wide key", "GET", "/kv/" + "%C3%A9" * 33, {}, 413, "key: 66 bytes"),
    ("long value", "PUT", "/kv/k", {"json": {"value": BIG_VALUE}}, 413, "value: 257 bytes"),
    ("big body", "PUT", "/kv/k", {"json": {"value": "v", "pad": "x" * 5000}}, 413, "body: larger"),
    ("big stream", "PUT", "/kv/k", {"stream": True}, 413, "body: larger"),
    (
        "consistency",
        "GET",
        "/kv/k",
        {"params": {"consistency": "eventual"}},
        400,
        "consistency: unknown level 'eventual'",
    ),
    (
        "consistency twice",
        "GET",
        "/kv/k?consistency=local&consistency=leader",
        {},
        400,
        "consistency: given more than once",
    ),
    ("query typo", "GET", "/kv/k", {"params": {"consistancy": "local"}}, 400, "consistancy"),
    ("delete array", "DELETE", "/kv/k", {"json": [1]}, 400, "body: expected a JSON object"),
    ("delete value", "DELETE", "/kv/k", {"json": {"value": "v"}}, 400, "value: unknown field"),
    ("cas no expected", "POST", "/cas/k", {"json": {"new": "v"}}, 400, "expected: missing"),
    ("cas no new", "POST", "/cas/k", {"json": {"expected": "v"}}, 400, "new: missing"),
    (
        "cas expected number",
        "POST",
        "/cas/k",
        {"json": {"expected": 3, "new": "v"}},
        400,
        "expected: expected a string",
    ),
    ("cas big new", "POST", "/cas/k", {"json": {"expected": None, "new": BIG_VALUE}}, 413, "new:"),
    ("batch not list", "POST", "/batch", {"json": {"ops": {}}}, 400, "ops: expected a list"),
    ("batch missing", "POST", "/batch", {"json": {}}, 400, "ops: expected a list"),
    ("batch empty", "POST", "/batch", {"json": {"ops": []}}, 400, "ops: must not be empty"),
    (
        "batch too long",
        "POST",
        "/batch",
        {"json": {"ops": [{"op": "get", "key": "k"}] * 9}},
        413,
        "ops: at most 8",
    ),
    ("batch op type", "POST", "/batch", {"json": {"ops": [1]}}, 400, "ops[0]: expected an object"),
    (
        "batch op name",
        "POST",
        "/batch",
        {"json": {"ops": [{"op": "incr", "key": "k"}]}},
        400,
        "ops[0].op: expected put, get, delete or cas",
    ),
    (
        "batch op field",
        "POST",
        "/batch",
        {"json": {"ops": [{"op": "get", "key": "k"}, {"op": "put", "key": "k", "value": 5}]}},
        400,
        "ops[1].value: expected a string",
    ),
    (
        "batch op key",
        "POST",
        "/batch",
        {"json": {"ops": [{"op": "get"}]}},
        400,
        "ops[0].key: expected a string, got null",
    ),
    (
        "batch consistency",
        "POST",
        "/batch",
        {"json": {"ops": [{"op": "get", "key": "k", "consistency": 1}]}},
        400,
        "ops[0].consistency: unknown level",
    ),
    (
        "batch extra",
        "POST",
        "/batch",
        {"json": {"ops": [{"op": "delete", "key": "k", "value": "v"}]}},
        400,
        "ops[0].value: unknown field",
    ),
    ("no route", "GET", "/keys/k", {}, 404, "Not Found"),
    ("wrong method", "POST", "/kv/k", {"json": {"value": "v"}}, 405, "Method Not Allowed"),
    ("metrics post", "POST", "/metrics", {}, 405, "Method Not Allowed"),
    ("admin unsigned", "POST", "/admin/shaper", {"json": {"reset": True}}, 403, "signature"),
    (
        "admin forged",
        "POST",
        "/admin/disk",
        {"json": {"fsync_delay_seconds": 1}, "headers": {AUTH_HEADER: "0" * 64}},
        403,
        "signature",
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "detail"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
async def test_bad_input_gets_a_4xx_json_error(
    single: InProcessCluster,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    detail: str,
) -> None:
    http, _ = await leader_http(single)
    async with http:
        kwargs = dict(kwargs)
        if kwargs.pop("stream", False):  # a body with no content-length, over the limit

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(10):
                    yield b"x" * 1000

            kwargs["content"] = chunks()
        r = await http.request(method, path, **kwargs)
        assert r.status_code == status, r.text
        body = r.json()
        assert isinstance(body["error"], str) and body["error"]
        assert detail in body["detail"], body
        # The node is unharmed: a valid write still succeeds.
        r = await http.put("/kv/after", json={"value": "fine"})
        assert r.status_code == 200


async def test_refused_admin_requests_change_nothing_and_are_counted(
    cluster: InProcessCluster,
) -> None:
    http, leader = await leader_http(cluster)
    node = cluster.nodes[leader]
    peer = next(n for n in cluster.nodes if n != leader)
    async with http:
        body = {"links": {peer: {"delay_ms": 50, "partitioned": True}}}
        unsigned = await http.post("/admin/shaper", json=body)
        wrong_key = await _admin(http, "", "/admin/shaper", body, secret=b"x" * 32)
        other_path = await _admin(http, "", "/admin/shaper", body, sign_path="/admin/disk")
        assert [r.status_code for r in (unsigned, wrong_key, other_path)] == [403] * 3
        assert node.shaper.links() == {}

        bad_bodies: list[dict[str, Any]] = [
            {"links": {"n9": {"loss": 0.1}}},
            {"links": {peer: {"loss": 2}}},
            {"links": {peer: {"delay_ms": -1}}},
            {"links": {peer: {"delay_ms": 5, "latency": 1}}},
            {"links": {peer: {"partitioned": "yes"}}},
            {"links": {peer: {"bandwidth": 0}}},
            {"links": [peer]},
            {"reset": "true"},
            {"heal": True},
        ]
        for bad in bad_bodies:
            r = await _admin(http, "", "/admin/shaper", bad)
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["error"] == "bad-request"
        assert node.shaper.links() == {}

        bad_disk: list[dict[str, Any]] = [{"fsync_delay_seconds": -1}, {"x": 1}, {}]
        for bad in [*bad_disk, {"fsync_delay_seconds": "1"}, {"fsync_delay_seconds": 61}]:
            assert (await _admin(http, "", "/admin/disk", bad)).status_code == 400
        assert node.store.fsync_delay_seconds == 0.0

        metrics = _samples((await http.get("/metrics")).text)
        assert metrics["raftbench_admin_refused_total"] == 3


async def test_signed_admin_requests_change_the_shaper_and_the_disk(
    cluster: InProcessCluster,
) -> None:
    http, leader = await leader_http(cluster)
    node = cluster.nodes[leader]
    peers = sorted(n for n in cluster.nodes if n != leader)
    async with http:
        body = {"links": {peers[0]: {"delay_ms": 40, "jitter_ms": 2, "loss": 0.25}}}
        r = await _admin(http, "", "/admin/shaper", body)
        assert r.status_code == 200
        link = node.shaper.link(peers[0])
        assert (link.delay, link.jitter, link.loss, link.partitioned) == (0.04, 0.002, 0.25, False)
        assert r.json()["links"][peers[0]]["delay_ms"] == 40.0
        assert r.json()["links"][peers[1]]["delay_ms"] == 0.0

        r = await _admin(http, "", "/admin/shaper", {"links": {peers[0]: {"partitioned": True}}})
        link = node.shaper.link(peers[0])
        assert link.partitioned and link.delay == 0.04  # fields left out keep their value

        r = await _admin(http, "", "/admin/shaper", {"reset": True})
        assert r.status_code == 200 and node.shaper.links() == {}

        r = await _admin(http, "", "/admin/disk", {"fsync_delay_seconds": 0.001})
        assert r.status_code == 200 and r.json() == {"fsync_delay_seconds": 0.001}
        assert node.store.fsync_delay_seconds == 0.001
        assert (await http.put("/kv/slow", json={"value": "v"})).status_code == 200

        signature = admin_signature(SECRET, "GET", "/admin/shaper", b"")
        r = await http.get("/admin/shaper", headers={AUTH_HEADER: signature})
        assert r.status_code == 200 and set(r.json()["links"]) == set(peers)


async def test_a_request_that_gets_no_reply_in_time_times_out(tmp_path: Path) -> None:
    async with in_process_cluster(tmp_path, 3, request_timeout=0.2) as cluster:
        leader = await cluster.leader()
        base = url_of(leader)
        for node in cluster.nodes.values():
            if node.node_id != leader:
                node.loop.close()  # the followers stop: nothing can commit any more
        async with cluster.http() as http:
            r = await http.put(f"{base}/kv/k", json={"value": "v"})
            assert r.status_code in (503, 504) and r.json()["error"] == "unknown-outcome"
            r = await http.get(f"{base}/kv/k")
            assert r.status_code in (421, 504)
            assert r.json()["error"] in ("timeout", "not-leader")


async def test_a_closed_node_answers_unavailable(tmp_path: Path) -> None:
    async with in_process_cluster(tmp_path, 1) as cluster:
        await cluster.leader()
        cluster.nodes["n1"].loop.close()
        async with cluster.http() as http:
            r = await http.put(f"{url_of('n1')}/kv/k", json={"value": "v"})
            assert r.status_code == 503 and r.json()["error"] == "unavailable"


async def _admin(
    http: httpx.AsyncClient,
    base: str,
    path: str,
    body: Any,
    *,
    secret: bytes = SECRET,
    sign_path: str | None = None,
) -> httpx.Response:
    data = json.dumps(body).encode()
    signature = admin_signature(secret, "POST", sign_path or path, data)
    return await http.post(base + path, content=data, headers={AUTH_HEADER: signature})


def _samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


# ---- membership ----------------------------------------------------------------------------------


async def test_membership_changes_at_the_leader_and_in_status(cluster: InProcessCluster) -> None:
    http, leader = await leader_http(cluster)
    follower = next(n for n in cluster.nodes if n != leader)
    async with http:
        unsigned = await http.post("/admin/membership", json={"change": "remove", "node": follower})
        assert unsigned.status_code == 403
        r = await _admin(http, "", "/admin/membership", {"change": "remove", "node": follower})
        assert r.status_code == 200, r.text
        answer = r.json()
        assert answer["ok"] and answer["index"] > 0 and answer["change"] == "remove"
        assert follower not in answer["membership"]["voters"]
        status = (await http.get("/status")).json()
        assert status["membership"]["committed"] and status["membership"]["role"] == "voter"
        assert sorted(status["membership"]["voters"]) == sorted(
            n for n in cluster.nodes if n != follower
        )
        rows = {row["node"]: row for row in status["progress"]}
        assert set(rows) == set(status["membership"]["voters"]) - {leader}
        assert all(row["role"] == "voter" and row["entries_behind"] >= 0 for row in rows.values())
        # Taking it back as a learner: the configuration says so.
        r = await _admin(http, "", "/admin/membership", {"change": "add-learner", "node": follower})
        assert r.status_code == 200 and r.json()["membership"]["learners"] == [follower]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"change": "add-voter", "node": "n9"}, 400, "unknown node"),
        ({"change": "demote", "node": "n2"}, 400, "change: one of"),
        ({"change": "remove"}, 400, "node: expected"),
        ({"change": "remove", "node": "n2", "extra": 1}, 400, "extra"),
        ({"change": "promote", "node": "n2"}, 409, "already a voter"),
        ({"change": "add-voter", "node": "n3"}, 409, "already a voter"),
        ({"change": "remove", "node": "n9"}, 409, "not a member"),
    ],
)
async def test_bad_membership_changes_get_clear_errors(
    cluster: InProcessCluster, body: dict[str, Any], status: int, words: str
) -> None:
    http, _ = await leader_http(cluster)
    async with http:
        r = await _admin(http, "", "/admin/membership", body)
        assert r.status_code == status, r.text
        assert words in r.json()["detail"]
        after = (await http.get("/status")).json()["membership"]
        assert sorted(after["voters"]) == sorted(cluster.nodes)  # nothing changed


async def test_a_membership_change_at_a_follower_is_redirected(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    follower = next(n for n in cluster.nodes if n != leader)
    async with cluster.http() as http:
        r = await _admin(
            http, url_of(follower), "/admin/membership", {"change": "remove", "node": follower}
        )
        assert r.status_code == 421 and r.json()["leader"] == url_of(leader)
