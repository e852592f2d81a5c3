"""The local-cluster launcher: files it writes, processes it starts and stops, the CLI.

Real node processes on loopback with ports from the OS. Waits are bounded polls of real
processes (their `ready` lines, /status); nothing is asserted about elapsed time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from real_cluster import DEADLINE, put_at_leader

from cluster.admin import AUTH_HEADER, admin_signature
from cluster.config import CLUSTER_FILE, Topology, load_cluster_config
from cluster.launcher import (
    SECRET_FILE,
    STATE_FILE,
    ClusterSpec,
    LauncherError,
    LocalCluster,
    load_topology_file,
)


def fast(
    nodes: int, regions: tuple[str, ...] = (), topology: Topology | None = None
) -> ClusterSpec:
    """A spec with short timeouts, so elections after start and restarts are quick."""
    return ClusterSpec(
        nodes=nodes,
        election_timeout=0.5,
        heartbeat_interval=0.05,
        regions=regions,
        topology=topology or Topology(),
    )


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "raftbench", *args],
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        check=False,
    )
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster.up(tmp_path / "c", fast(3)) as running:
        yield running


def test_up_writes_the_cluster_folder_and_down_stops_every_node(cluster: LocalCluster) -> None:
    directory = cluster.directory
    secret = directory / SECRET_FILE
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    config = load_cluster_config(directory / CLUSTER_FILE)
    assert config.secret == secret.read_text().strip() and len(config.secret) == 64
    assert config.member_ids == ("n1", "n2", "n3")
    ports = {m.peer.port for m in config.members} | {m.client.port for m in config.members}
    assert len(ports) == 6

    state = json.loads((directory / STATE_FILE).read_text())
    assert state["protocol"] == "push"
    pids = {n["node_id"]: n["pid"] for n in state["nodes"]}
    for node_id, pid in pids.items():
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert str(directory / CLUSTER_FILE).encode() in cmdline
        assert node_id.encode() in cmdline
        assert cluster.process_state(node_id) == "running"

    # Poll, bounded: under load a node's /status may miss the 1 s view timeout, or the
    # leader may change between finding it and reading the views.
    deadline = time.monotonic() + DEADLINE
    while True:
        leader = cluster.wait_for_leader(DEADLINE)
        views = {v.node_id: v for v in cluster.views()}
        leader_status = views[leader].status
        if leader_status is not None and leader_status["role"] == "leader":
            break
        assert time.monotonic() < deadline, (leader, views)
        time.sleep(0.05)

    report = cluster.down(grace=DEADLINE)  # a loaded machine may take > 5 s to stop 3 nodes
    assert sorted(report.stopped) == ["n1", "n2", "n3"] and not report.killed
    assert not any(pid_exists(pid) for pid in pids.values())
    assert all(n["pid"] is None for n in json.loads((directory / STATE_FILE).read_text())["nodes"])
    assert (directory / "data" / "n1").is_dir()  # data stays without purge


def test_kill_pause_resume_and_restart_keep_the_data(cluster: LocalCluster) -> None:
    with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
        body = {"value": "v1", "client_id": "t", "seq": 1}
        leader = put_at_leader(cluster, http, "k", body, cluster.wait_for_leader(DEADLINE))

        follower = next(n for n in cluster.node_ids if n != leader)
        cluster.pause(follower)
        assert cluster.process_state(follower) == "paused"
        assert cluster.statuses(timeout=0.3)[follower] is None
        cluster.resume(follower)
        assert cluster.process_state(follower) == "running"

        old_pid = cluster.records[leader].pid
        assert cluster.kill(leader)
        assert cluster.process_state(leader) == "stopped"
        assert old_pid is not None and not pid_exists(old_pid)
        assert not cluster.kill(leader)  # already gone

        cluster.restart(leader)
        assert cluster.records[leader].pid != old_pid
        assert cluster.records[leader].starts == 2
        cluster.wait_for_leader(DEADLINE)
        # The restarted node still holds the write: it applies it from its own log.
        deadline = time.monotonic() + DEADLINE
        while True:  # bounded poll of a real process
            answer = http.get(cluster.url(leader) + "/kv/k?consistency=local")
            if answer.json().get("value") == "v1":
                break
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.05)


def test_down_signals_only_the_processes_it_started(tmp_path: Path) -> None:
    mine = LocalCluster.up(tmp_path / "mine", fast(1))
    other = LocalCluster.up(tmp_path / "other", fast(1))
    # An unrelated process that got the recorded pid (pid reuse): same start time in the
    # state file, but not our command line.
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        real = mine.records["n1"]
        state_path = mine.directory / STATE_FILE
        state = json.loads(state_path.read_text())
        ticks = int(Path(f"/proc/{stranger.pid}/stat").read_text().split(") ")[1].split()[19])
        state["nodes"][0].update(pid=stranger.pid, start_ticks=ticks)
        state_path.write_text(json.dumps(state))

        report = LocalCluster.open(mine.directory).down()
        assert report.not_ours == ("n1",) and not report.stopped
        assert stranger.poll() is None  # left alone
        assert real.pid is not None and pid_exists(real.pid)  # not what the file named

        # The same cluster object still knows its real process: its down stops it alone.
        real_pid = real.pid
        assert mine.down(grace=DEADLINE).stopped == ("n1",)
        assert not pid_exists(real_pid)
        assert other.process_state("n1") == "running"
    finally:
        stranger.kill()
        stranger.wait()
        other.down()
        mine.down()


def test_a_node_that_cannot_start_is_reported_with_its_stderr(tmp_path: Path) -> None:
    cluster = LocalCluster.create(tmp_path / "c", fast(2))
    taken = cluster.config.member("n2").client
    with socket.socket() as squatter:
        squatter.bind((taken.host, taken.port))
        squatter.listen()
        with pytest.raises(LauncherError) as error:
            cluster.start()
    message = str(error.value)
    assert "n2 exited before it was ready" in message
    assert f"cannot listen on {taken}" in message
    assert not any(cluster.is_alive(n) for n in cluster.node_ids)  # n1 was stopped too


def test_create_refuses_a_folder_that_holds_a_cluster(tmp_path: Path) -> None:
    LocalCluster.create(tmp_path / "c", ClusterSpec(nodes=1))
    with pytest.raises(LauncherError, match="already holds a cluster"):
        LocalCluster.create(tmp_path / "c", ClusterSpec(nodes=1))
    with pytest.raises(LauncherError, match=r"no cluster-state\.json"):
        LocalCluster.open(tmp_path / "nothing")
    with pytest.raises(LauncherError, match="--protocol: unknown 'raft'"):
        ClusterSpec(protocol="raft").validate()


def test_topology_file_sets_regions_and_delays_that_nodes_apply(tmp_path: Path) -> None:
    topology = tmp_path / "topo.toml"
    topology.write_text(
        'regions = ["near", "near", "far"]\n'
        "[topology]\n"
        "default_delay_ms = 1.0\n"
        "[[topology.links]]\n"
        'from = "near"\nto = "far"\ndelay_ms = 25.0\n'
    )
    regions, topo = load_topology_file(topology, ["n1", "n2", "n3"])
    assert regions == ("near", "near", "far")
    spec = fast(3, regions, topo)
    with LocalCluster.up(tmp_path / "c", spec) as cluster:
        assert cluster.expected_rtt_matrix()["n1"] == {"n2": 2.0, "n3": 50.0}
        path = "/admin/shaper"
        signature = admin_signature(cluster.secret, "GET", path, b"")
        with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
            links = http.get(cluster.url("n3") + path, headers={AUTH_HEADER: signature}).json()
        assert links["links"]["n1"]["delay_ms"] == 25.0
        assert links["links"]["n2"]["delay_ms"] == 25.0
        # Pings go once a second: wait for the far link's first sample. A measured round
        # trip can never beat the delays the shaper adds on the way there and back.
        deadline = time.monotonic() + DEADLINE
        while (rtt := cluster.rtt_matrix()["n1"]["n3"]) is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert rtt >= 50.0


def test_topology_file_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[topology]\n[[topology.links]]\nfrom = "mars"\nto = "n1"\ndelay_ms = 1.0\n')
    with pytest.raises(LauncherError, match=r"topology.links\[0\].from: 'mars' is neither"):
        load_topology_file(bad, ["n1", "n2"])
    bad.write_text('regions = ["a", "b", "c"]\n')
    with pytest.raises(LauncherError, match="3 given for 2 nodes"):
        load_topology_file(bad, ["n1", "n2"])
    bad.write_text("speed = 3\n")
    with pytest.raises(LauncherError, match="speed: unknown field"):
        load_topology_file(bad, ["n1"])


@pytest.mark.parametrize("protocol", ["push", "pull"])
def test_cli_up_kv_status_down(tmp_path: Path, protocol: str) -> None:
    directory = str(tmp_path / "cluster")
    quick = ("--election-timeout", "0.5", "--heartbeat", "0.05")
    out = cli("cluster", "up", "--nodes", "3", "--protocol", protocol, "--dir", directory, *quick)
    try:
        assert f"started a {protocol} cluster" in out.stdout
        assert cli("kv", "put", "k", "v", "--dir", directory).stdout == "OK\n"
        assert cli("kv", "get", "k", "--dir", directory).stdout == "v\n"
        # Roles are one sample of a converging state: under load a node may be a candidate,
        # or miss the 1 s /status timeout ("-"), at the moment `status` asks. Poll, bounded.
        deadline = time.monotonic() + DEADLINE
        while True:
            status = cli("cluster", "status", "--dir", directory).stdout
            lines = status.splitlines()
            assert lines[1].split()[:4] == ["id", "pid", "process", "role"]
            rows = [line.split() for line in lines[2:5]]
            assert [r[0] for r in rows] == ["n1", "n2", "n3"]
            assert all(r[2] == "running" for r in rows)
            roles = sorted(r[3] for r in rows)
            if roles == ["follower", "follower", "leader"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert roles == ["follower", "follower", "leader"], status
        again = cli("cluster", "up", "--dir", directory, check=False)
        assert again.returncode == 1 and "already running" in again.stderr
    finally:
        pids = [n["pid"] for n in json.loads((Path(directory) / STATE_FILE).read_text())["nodes"]]
        # A clean stop of three nodes may take a loaded machine more than the default 5 s.
        down = cli("cluster", "down", "--dir", directory, "--grace", "30")
    assert down.stdout.startswith("stopped: n1, n2, n3")
    assert not any(pid_exists(pid) for pid in pids)
    stopped = cli("cluster", "status", "--dir", directory).stdout
    assert stopped.count("stopped") == 3
    # Up again on the same folder: the same cluster, with its data.
    cli("cluster", "up", "--dir", directory)
    try:
        assert cli("kv", "get", "k", "--dir", directory).stdout == "v\n"
    finally:
        cli("cluster", "down", "--dir", directory, "--purge")
    assert not Path(directory).exists()


def test_cli_explains_what_is_wrong(tmp_path: Path) -> None:
    missing = cli("cluster", "status", "--dir", str(tmp_path / "none"), check=False)
    assert missing.returncode == 1 and "no cluster-state.json" in missing.stderr
    bad = cli("cluster", "up", "--protocol", "raft", "--dir", str(tmp_path), check=False)
    assert bad.returncode == 2 and "invalid choice: 'raft'" in bad.stderr


def test_signals_go_through_a_pidfd_only_to_live_processes(cluster: LocalCluster) -> None:
    # SIGTERM from outside: the launcher notices the node is gone and does not signal its pid.
    pid = cluster.records["n1"].pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    child = cluster._children[pid]
    assert child.wait(DEADLINE) == 0
    assert cluster.process_state("n1") == "stopped"
    assert cluster.stop_node("n1") is None
    with pytest.raises(LauncherError, match="n1 is not running"):
        cluster.pause("n1")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "not a JSON object"),
        ("{not json", "unreadable state"),
        ('{"version": 99}', "unknown state version 99"),
        ('{"version": 1, "protocol": "push", "nodes": [{"node_id": "n7"}]}', "are not the members"),
        ('{"version": 1, "protocol": "push", "nodes": [{"node_id": "n1", "pid": "x"}]}', "int"),
    ],
)
def test_a_damaged_state_file_is_reported_not_trusted(
    tmp_path: Path, content: str, message: str
) -> None:
    cluster = LocalCluster.create(tmp_path / "c", fast(1))
    (cluster.directory / STATE_FILE).write_text(content)
    with pytest.raises(LauncherError, match=message):
        LocalCluster.open(cluster.directory)
