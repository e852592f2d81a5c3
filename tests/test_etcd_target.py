"""etcd as a target: the extra's etcd binary, the v3 JSON gateway client's results and error
mapping, and a short scenario with the etcd leader killed and restarted, run by the real driver
and checked like any other run (linearizable history, every member's final state agreeing).

These tests need the `[etcd]` extra (scripts/check installs it); without it they fail."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from cluster import netns
from cluster.client import Delete, Get, OutcomeUnknown, Put, ReadResult, Unavailable, WriteResult
from cluster.etcd import EtcdCluster, EtcdError, EtcdSpec, find_binary, free_ports
from cluster.etcd_client import EtcdClient, _checked
from workloads.checker import LINEARIZABLE, check_operations
from workloads.loadgen import _Op, txn_lanes
from workloads.lost_writes import acked_writes_lost
from workloads.real_driver import member_divergence, run_real, settings_not_applied
from workloads.runner import run_trial
from workloads.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from workloads.summary import summarize

CRASH_AT, CRASH_FOR = 1.0, 1.5


def test_the_extra_provides_an_etcd_binary() -> None:
    binary = find_binary()
    assert binary.name == "etcd" and binary.is_file()


def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EtcdError, match="not an executable"):
        find_binary(tmp_path / "no-etcd")


def test_member_ports_are_below_the_ephemeral_range() -> None:
    # A port from that range, released until etcd binds it, could meanwhile become the local
    # port of a member dialing a peer that is not up yet.
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = free_ports(6)
    assert len(set(ports)) == 6 and all(port < low for port in ports), ports


def test_an_election_timeout_etcd_refuses_is_refused_before_starting(tmp_path: Path) -> None:
    with pytest.raises(EtcdError, match="5 heartbeat"):
        EtcdCluster(tmp_path, EtcdSpec(3, 0.2, 0.1, find_binary()))


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    cluster = EtcdCluster.up(tmp_path_factory.mktemp("etcd"), EtcdSpec(3, 0.5, 0.05, find_binary()))
    try:
        cluster.wait_for_leader(30.0)
        yield cluster
    finally:
        cluster.down()


def test_the_client_maps_kv_operations_onto_etcd(etcd: EtcdCluster) -> None:
    async def main() -> None:
        async with EtcdClient(etcd.endpoints, lanes=2) as client:
            assert (await client.get("absent")).value is None
            assert (await client.cas("k", None, "a")).ok  # absent -> a
            refused = await client.cas("k", None, "b")
            assert refused == WriteResult(False, "a", refused.index)
            put = await client.put("k", "")  # an empty value is a value, not absence
            assert put.ok and put.prev == "a"
            assert (await client.get("k")).value == ""
            assert (await client.cas("k", "", "c")).ok
            assert (await client.get("k", "local")).value in ("", "c")  # serializable
            answers = await client.batch([Put("x", "1"), Put("y", "2")])
            assert all(isinstance(a, WriteResult) and a.ok for a in answers)
            # One txn: each operation answered as if alone at the txn's point.
            moved, read, gone = await client.txn([Put("x", "3"), Get("y"), Delete("z")])
            assert isinstance(moved, WriteResult) and moved.ok and moved.prev == "1"
            assert isinstance(read, ReadResult) and read.value == "2"
            assert isinstance(gone, WriteResult) and gone.prev is None
            assert moved.index == read.index == gone.index
            with pytest.raises(ValueError, match="distinct keys"):
                await client.txn([Put("x", "4"), Get("x")])
            deleted = await client.delete("k")
            assert deleted.ok and deleted.prev == "c"
            assert (await client.get("k")).value is None

    anyio.run(main)


def test_a_write_never_sent_fails_and_one_sent_to_a_frozen_member_is_unknown(
    etcd: EtcdCluster,
) -> None:
    (closed,) = free_ports(1)
    follower = next(n for n in etcd.node_ids if n != etcd.wait_for_leader(10.0))

    async def main() -> None:
        async with EtcdClient([f"http://127.0.0.1:{closed}"], timeout=0.5) as client:
            refused = await client.run(Put("k", "v"))
            assert isinstance(refused, Unavailable)  # connection refused: certainly not applied
        assert etcd.signal(follower, signal.SIGSTOP)
        try:
            frozen = etcd.members[follower].url
            async with EtcdClient([frozen], timeout=2.0, attempt_timeout=0.3) as client:
                sent = await client.run(Put("k", "v"))
                assert isinstance(sent, OutcomeUnknown)  # went out, no answer: may apply
        finally:
            etcd.signal(follower, signal.SIGCONT)

    anyio.run(main)


def crash_scenario() -> Scenario:
    return parse_scenario(
        {
            "name": "etcd-test",
            "cluster": {"nodes": 3, "election_timeout": 0.5, "heartbeat_interval": 0.05},
            "workload": {
                "mix": {
                    "read": 0.3,
                    "write": 0.4,
                    "cas": 0.2,
                    "rmw": 0.1,
                    "consistency": {"linearizable": 0.8, "local": 0.2},
                },
                "key_count": 8,
                "value_size": 16,
                "clients": 4,
            },
            "run": {"warmup": 0.5, "duration": 4.0, "cooldown": 1.0},
            "load": {"processes": 1, "batch": 2},
            "faults": [
                {"at": CRASH_AT, "action": "crash", "node": "leader", "duration": CRASH_FOR},
                {"at": 0.5, "action": "partition", "node": "leader", "duration": 0.5},
            ],
        }
    )


def test_etcd_runs_the_scenario_with_its_leader_killed_and_restarted(tmp_path: Path) -> None:
    scenario = crash_scenario()
    record = run_real(scenario, "etcd", None, 3, 0, "etcd", "test", work_dir=tmp_path / "run")
    meta = record.metadata
    assert meta["target"]["kind"] == "etcd" and meta["label"] == "etcd"
    assert meta["driver"]["batching"].startswith("one txn per round")

    verdict = check_operations(record.history())
    assert verdict.verdict == LINEARIZABLE, verdict.detail
    loss = acked_writes_lost(record.ops, verdict.verdict, meta["final_state"])
    assert loss.lost == 0, loss.detail

    # The leader at the crash was killed, restarted, and another member led meanwhile.
    (crash,) = [f for f in record.faults if f.kind == "crash"]
    (restart,) = [f for f in record.faults if f.kind == "restart"]
    assert crash.nodes == restart.nodes and restart.t > crash.t
    leaders = [c["event"].split()[0] for c in meta["real"]["leader_changes"]]
    assert any(leader != crash.nodes[0] for leader in leaders[1:]), leaders
    assert any(op.outcome == "ok" and op.invoke > restart.t for op in record.ops)

    # The partition was not applied, and the record says so.
    (skipped,) = [f for f in record.faults if f.kind == "skipped"]
    assert "not applied to etcd" in skipped.detail

    # Every member's own state equals the linearizable final state.
    divergence = meta["real"]["member_divergence"]
    assert divergence["members_read"] == ["n1", "n2", "n3"] and not divergence["members_unread"]
    assert divergence["keys"] == {}
    assert meta["real"]["final_state_unread"] == []
    assert set(meta["final_state"]) == {scenario.workload.key(i) for i in range(8)}

    # CPU was sampled from the members' pids; per-peer traffic is n/a, not zero.
    assert sum(node["cpu_seconds"] for node in record.nodes.values()) > 0
    assert record.links == []
    assert all(node["bytes_sent"] is None for node in record.nodes.values())
    summary = summarize(record)
    assert summary.member_divergence == 0 and summary.leader_egress_per_write is None


def test_a_member_whose_own_state_differs_is_named_with_the_key() -> None:
    final: dict[str, str | None] = {"a": "1", "b": None}
    members: dict[str, dict[str, str | None]] = {
        "n1": {"a": "1", "b": None},
        "n2": {"a": "0", "b": None},
        "n3": {"a": "1", "b": "x"},
    }
    found = member_divergence(final, members, ["n1", "n2", "n3", "n4"])
    assert found == {
        "keys": {"a": {"final": "1", "n2": "0"}, "b": {"final": None, "n3": "x"}},
        "members_read": ["n1", "n2", "n3"],
        "members_unread": ["n4"],
    }
    assert member_divergence(final, None) is None


def test_in_namespaces_the_etcd_leader_is_cut_off_by_nftables_and_the_rest_elect(
    tmp_path: Path,
) -> None:
    netns.check_prerequisites()  # fails with what to install, rather than skipping
    before = set(netns.list_namespaces())
    scenario = parse_scenario(
        {
            "name": "etcd-netns-test",
            "cluster": {"nodes": 3, "election_timeout": 0.5, "heartbeat_interval": 0.05},
            "workload": {
                "mix": {"read": 0.3, "write": 0.7},
                "key_count": 8,
                "value_size": 16,
                "clients": 4,
            },
            "run": {"warmup": 0.5, "duration": 4.0, "cooldown": 1.0},
            "load": {"processes": 1, "batch": 2},
            "faults": [{"at": 1.0, "action": "partition", "node": "leader", "duration": 1.5}],
        }
    )
    record = run_real(
        scenario, "etcd", None, 3, 0, "etcd", "test", netns=True, work_dir=tmp_path / "run"
    )
    meta = record.metadata
    assert meta["target"]["addresses"] == "network namespaces"
    assert "partition" not in meta["target"]["not_applied"]
    verdict = check_operations(record.history())
    assert verdict.verdict == LINEARIZABLE, verdict.detail

    (cut,) = [f for f in record.faults if f.kind == "partition"]
    (heal,) = [f for f in record.faults if f.kind == "heal"]
    assert "nftables" in cut.detail and heal.t > cut.t
    changes = meta["real"]["leader_changes"]
    isolated = cut.detail.split(" | ")[0]  # the leader when the fault fired
    assert any(c["event"].split()[0] != isolated and c["t"] > cut.t for c in changes), changes
    assert meta["real"]["member_divergence"]["keys"] == {}
    assert set(netns.list_namespaces()) <= before  # the members' namespaces are gone


def test_geo_delays_and_priorities_are_named_as_not_applied_to_etcd() -> None:
    geo = load_scenario("geo")
    gaps = settings_not_applied(geo, "etcd")
    assert set(gaps) == {"topology", "priorities"}
    assert gaps["topology"] == "n/a: no latency emulation for external targets"
    assert settings_not_applied(geo, "raftbench") == {}
    assert settings_not_applied(load_scenario("steady-write"), "etcd") == {}


def test_a_round_shares_a_txn_only_where_each_operation_would_mean_the_same_alone() -> None:
    ops = [
        _Op("write", "a", "1"),
        _Op("read", "b", consistency="linearizable"),
        _Op("cas", "c", "2", "1"),  # its own compare: alone
        _Op("read", "d", consistency="local"),  # serializable: alone
        _Op("delete", "e"),
        _Op("write", "a", "3"),  # a second operation on "a": alone
    ]
    assert txn_lanes(ops) == [0, 1, 4]


def test_etcd_on_the_simulator_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="real engine only"):
        run_trial(load_scenario("quick"), "etcd", "sim", 1, 0, tmp_path, "test")
    assert not any(tmp_path.iterdir())


def test_an_unreadable_answer_is_unknown_for_a_write_and_unavailable_for_a_read() -> None:
    garbage = {"header": {"revision": "7"}, "kvs": [{"key": "!!", "value": "%%%notbase64"}]}
    assert isinstance(_checked(Get("k"), garbage), Unavailable)
    not_utf8 = {"header": {"revision": "7"}, "prev_kv": {"key": "aw==", "value": "/w=="}}
    assert isinstance(_checked(Put("k", "v"), not_utf8), OutcomeUnknown)
