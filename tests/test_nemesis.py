"""The nemesis: seeded schedules, and each fault action on real node processes.

Loopback tests read the effect back from the nodes themselves (signed GET /admin/shaper,
/metrics, /status) and check that a cut really cuts (the majority elects another leader).
The namespace test builds real network namespaces (root, iproute2, nftables: .ci/run installs
them) and checks the nftables rules, the tbf qdisc and the teardown.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest

from cluster import netns
from cluster.admin import AUTH_HEADER, admin_signature
from cluster.client import RaftbenchClient
from cluster.config import LinkRule, Topology
from cluster.launcher import ClusterSpec, LocalCluster
from cluster.nemesis import (
    FAULT_KINDS,
    Nemesis,
    NemesisError,
    PlannedFault,
    random_schedule,
    run_schedule,
)

DEADLINE = 60.0  # guards against hangs only

# ---- schedules (pure) --------------------------------------------------------------------------


def test_schedule_is_a_function_of_its_seed() -> None:
    first = random_schedule(random.Random(5), 30.0)
    assert first == random_schedule(random.Random(5), 30.0)
    assert first != random_schedule(random.Random(6), 30.0)


@pytest.mark.parametrize("seed", range(20))
def test_schedule_faults_never_overlap_and_end_in_time(seed: int) -> None:
    plan = random_schedule(
        random.Random(seed), 20.0, kinds=FAULT_KINDS, hold=(0.5, 3.0), gap=(0.0, 1.0)
    )
    assert plan
    assert plan[0].at == 1.0
    for before, after in itertools.pairwise(plan):
        assert before.at + before.hold <= after.at
    assert plan[-1].at + plan[-1].hold <= 20.0
    assert all(0.5 <= p.hold <= 3.0 and p.target in ("leader", "random") for p in plan)


def test_schedule_deals_every_kind_before_repeating_one() -> None:
    kinds = ("kill", "pause", "partition", "one-way")
    for seed in range(10):
        plan = random_schedule(random.Random(seed), 100.0, kinds=kinds, hold=(1.0, 1.0))
        dealt = [p.kind for p in plan]
        for start in range(0, len(dealt) - 3, 4):
            assert sorted(dealt[start : start + 4]) == sorted(kinds)


def test_schedule_refuses_unknown_kinds_and_bad_ranges() -> None:
    with pytest.raises(NemesisError, match="unknown fault kind 'fire'"):
        random_schedule(random.Random(1), 10.0, kinds=("fire",))
    with pytest.raises(NemesisError, match="hold and gap"):
        random_schedule(random.Random(1), 10.0, hold=(2.0, 1.0))
    assert random_schedule(random.Random(1), 1.5) == []  # no room for a 1-2.5 s fault


# ---- on real processes (loopback) --------------------------------------------------------------


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    topology = Topology(links=(LinkRule("n1", "n3", 2.0),))  # a base the nemesis must keep
    spec = ClusterSpec(nodes=3, election_timeout=0.5, heartbeat_interval=0.05, topology=topology)
    cluster = await anyio.to_thread.run_sync(LocalCluster.up, tmp_path / "c", spec)
    try:
        yield cluster
    finally:
        await anyio.to_thread.run_sync(cluster.down)


async def shaper_links(cluster: LocalCluster, node: str) -> dict[str, dict[str, Any]]:
    path = "/admin/shaper"
    signature = admin_signature(cluster.secret, "GET", path, b"")
    async with httpx.AsyncClient(trust_env=False, timeout=DEADLINE) as http:
        answer = await http.get(cluster.url(node) + path, headers={AUTH_HEADER: signature})
    assert answer.status_code == 200, answer.text
    links: dict[str, dict[str, Any]] = answer.json()["links"]
    return links


async def cut_peers(cluster: LocalCluster, node: str) -> set[str]:
    return {
        peer for peer, link in (await shaper_links(cluster, node)).items() if link["partitioned"]
    }


@pytest.mark.anyio
async def test_partitions_cut_the_right_links_and_survive_a_restart(
    running: LocalCluster,
) -> None:
    nemesis = Nemesis(running)
    event = await nemesis.partition([["n1"], ["n2"]])  # n3 forms the third group
    assert event.kind == "partition" and event.nodes == ("n1", "n2", "n3")
    assert "n1 | n2 | n3 (shaper)" in event.detail
    assert await cut_peers(running, "n1") == {"n2", "n3"}
    assert await cut_peers(running, "n3") == {"n1", "n2"}

    await nemesis.isolate("n2", one_way=True)  # replaces the first partition
    assert await cut_peers(running, "n2") == {"n1", "n3"}
    assert await cut_peers(running, "n1") == set()
    assert await cut_peers(running, "n3") == set()

    # A killed node comes back with an empty shaper; the nemesis puts the cut back.
    await nemesis.kill("n2")
    await nemesis.restart("n2")
    assert await cut_peers(running, "n2") == {"n1", "n3"}
    # The topology's own delay stays through all of it.
    assert (await shaper_links(running, "n1"))["n3"]["delay_ms"] == 2.0

    await nemesis.heal()
    for node in running.node_ids:
        assert await cut_peers(running, node) == set()
    assert (await shaper_links(running, "n3"))["n1"]["delay_ms"] == 2.0
    assert [e.kind for e in nemesis.events] == [
        "partition",
        "one-way",
        "kill",
        "restart",
        "heal",
    ]
    assert all(a.time <= b.time for a, b in itertools.pairwise(nemesis.events))


@pytest.mark.anyio
async def test_isolating_the_leader_makes_the_majority_elect_another(
    running: LocalCluster,
) -> None:
    nemesis = Nemesis(running)
    old = await nemesis.resolve("leader")
    await nemesis.isolate(old)
    async with RaftbenchClient(running.endpoints, timeout=DEADLINE) as client:
        # Under load the majority's leadership may move between its two nodes after the test
        # found it: then look again (bounded); the write lands at a leader of the majority.
        deadline = time.monotonic() + DEADLINE
        while True:
            new = await anyio.to_thread.run_sync(running.wait_for_leader, DEADLINE, old)
            assert (await client.put("k", "during")).ok
            if client.leader == running.url(new) or time.monotonic() > deadline:
                break
        assert client.leader == running.url(new)
    await nemesis.heal()
    async with RaftbenchClient([running.url(old)], timeout=DEADLINE) as client:
        # The old leader rejoins and learns the write (a linearizable read goes to the leader
        # through its redirect, so ask it for its local state until it has caught up).
        deadline = time.monotonic() + DEADLINE
        while (await client.get("k", consistency="local")).value != "during":
            assert time.monotonic() < deadline
            await anyio.sleep(0.05)


@pytest.mark.anyio
async def test_slow_links_slow_disk_and_pauses_while_a_node_cannot_listen(
    running: LocalCluster,
) -> None:
    nemesis = Nemesis(running)
    await nemesis.slow_link("n1", "n2", delay_ms=30.0, jitter_ms=5.0, loss=0.1, symmetric=True)
    link = (await shaper_links(running, "n1"))["n2"]
    assert (link["delay_ms"], link["jitter_ms"], link["loss"]) == (30.0, 5.0, 0.1)
    assert (await shaper_links(running, "n2"))["n1"]["delay_ms"] == 30.0
    assert (await shaper_links(running, "n1"))["n3"]["delay_ms"] == 2.0  # untouched

    await nemesis.slow_disk("n3", 0.02)
    async with httpx.AsyncClient(trust_env=False, timeout=DEADLINE) as http:
        metrics = (await http.get(running.url("n3") + "/metrics")).text
    assert "raftbench_store_fsync_delay_seconds 0.02" in metrics

    # A paused node cannot be told; it is told when it resumes.
    await nemesis.pause("n1")
    assert running.process_state("n1") == "paused"
    await nemesis.partition([["n1"], ["n2", "n3"]])
    await nemesis.resume("n1")
    assert await cut_peers(running, "n1") == {"n2", "n3"}
    assert (await shaper_links(running, "n1"))["n2"]["delay_ms"] == 30.0

    events = await nemesis.recover()
    assert [e.kind for e in events] == ["heal", "clear-slow-links", "slow-disk"]
    links = await shaper_links(running, "n1")
    assert links["n2"]["delay_ms"] == 0.0 and not links["n2"]["partitioned"]
    async with httpx.AsyncClient(trust_env=False, timeout=DEADLINE) as http:
        metrics = (await http.get(running.url("n3") + "/metrics")).text
    assert "raftbench_store_fsync_delay_seconds 0\n" in metrics


@pytest.mark.anyio
async def test_run_schedule_applies_and_undoes_each_fault(running: LocalCluster) -> None:
    nemesis = Nemesis(running)
    plan = [
        PlannedFault(0.0, "kill", "n3", 0.2),
        PlannedFault(0.3, "pause", "n2", 0.2),
        PlannedFault(0.6, "partition", "n1", 0.2),
    ]
    events = await run_schedule(nemesis, plan)
    assert [(e.kind, e.nodes) for e in events] == [
        ("kill", ("n3",)),
        ("restart", ("n3",)),
        ("pause", ("n2",)),
        ("resume", ("n2",)),
        ("partition", ("n1", "n2", "n3")),
        ("heal", ("n1", "n2", "n3")),
    ]
    assert all(running.process_state(n) == "running" for n in running.node_ids)


@pytest.mark.anyio
async def test_partition_arguments_are_checked(running: LocalCluster) -> None:
    nemesis = Nemesis(running)
    with pytest.raises(NemesisError, match="n1 is in two groups"):
        await nemesis.partition([["n1"], ["n1", "n2"]])
    with pytest.raises(NemesisError, match="at least two groups"):
        await nemesis.partition([["n1", "n2", "n3"]])
    with pytest.raises(NemesisError, match="nftables partitions need"):
        Nemesis(running, partitions="nftables")
    with pytest.raises(NemesisError, match="unknown target 'boss'"):
        await nemesis.resolve("boss")
    assert nemesis.events == []


# ---- network namespaces ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_netns_cluster_partitions_with_nftables_caps_with_tbf_and_cleans_up(
    tmp_path: Path,
) -> None:
    netns.check_prerequisites()  # fails with what to install, rather than skipping
    spec = ClusterSpec(
        nodes=3, protocol="pull", netns=True, election_timeout=0.5, heartbeat_interval=0.05
    )
    cluster = await anyio.to_thread.run_sync(LocalCluster.up, tmp_path / "c", spec)
    layout = cluster.layout
    assert layout is not None
    try:
        assert {m.client.host for m in cluster.config.members} == {h.address for h in layout.hosts}
        async with RaftbenchClient(cluster.endpoints, timeout=DEADLINE) as client:
            assert (await client.put("k", "v")).ok
            assert (await client.get("k")).value == "v"

        nemesis = Nemesis(cluster)
        assert nemesis.use_nft
        old = await nemesis.resolve("leader")
        event = await nemesis.isolate(old)
        assert event.detail.endswith("(nftables)")
        others = {h.address for h in layout.hosts if h.node_id != old}
        assert netns.blocked_outgoing(layout, old) == others
        for host in layout.hosts:
            if host.node_id != old:
                assert netns.blocked_outgoing(layout, host.node_id) == {layout.host(old).address}
        # The shaper is not used for the cut.
        assert await cut_peers(cluster, old) == set()
        new = await anyio.to_thread.run_sync(cluster.wait_for_leader, DEADLINE, old)
        assert new != old
        await nemesis.heal()
        assert all(netns.blocked_outgoing(layout, n) == set() for n in cluster.node_ids)

        await nemesis.bandwidth("n1", 125_000.0)
        assert "tbf" in netns.qdisc(layout, "n1") and "rate 1Mbit" in netns.qdisc(layout, "n1")
        await nemesis.bandwidth("n1", None)
        assert "tbf" not in netns.qdisc(layout, "n1")
    finally:
        report = await anyio.to_thread.run_sync(cluster.down)
    assert report.problems == ()
    remaining = netns.list_namespaces()
    assert not any(h.namespace in remaining for h in layout.hosts)
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True, check=True)
    assert layout.bridge not in links.stdout


def test_netns_layout_avoids_subnets_in_use_and_names_fit_interfaces() -> None:
    used = [ipaddress.IPv4Interface("10.77.0.1/24"), ipaddress.IPv4Interface("10.77.1.5/24")]
    layout = netns.plan_layout([f"n{i}" for i in range(1, 11)], used)
    assert layout.subnet == "10.77.2.0/24"
    assert layout.bridge_address == "10.77.2.1"
    assert layout.host("n10").address == "10.77.2.20"
    names = [layout.bridge] + [h.host_veth for h in layout.hosts]
    assert all(len(name) <= 15 for name in names)  # IFNAMSIZ - 1
    assert netns.NetnsLayout.from_json(layout.to_json()) == layout
    with pytest.raises(netns.NetnsError, match="malformed namespace layout"):
        netns.NetnsLayout.from_json({"tag": "x"})


def test_missing_netns_prerequisites_are_named_with_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("cluster.netns.os.geteuid", lambda: 1000)
    monkeypatch.setattr("cluster.netns.shutil.which", lambda tool: None if tool == "nft" else "/x")
    with pytest.raises(netns.NetnsError) as error:
        netns.check_prerequisites()
    message = str(error.value)
    assert "root privileges" in message
    assert "the `nft` command (Debian package nftables)" in message
    assert "`ip`" not in message
    assert message.endswith("Install: apt-get install -y iproute2 nftables")
