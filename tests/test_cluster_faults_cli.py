"""Faults from the shell: `raftbench cluster kill|restart|pause|resume|isolate|partition|heal|
slow-link|slow-disk|recover` and what `cluster status` shows of them.

The real-cluster test drives one 3-node cluster per protocol through separate `raftbench`
processes only (each command reopens the cluster from its folder, as from a shell), and reads
the effects back from the nodes (/status, signed GET /admin/shaper, /metrics). Waits are bounded
polls of real processes; nothing is asserted about elapsed time. Bad input is checked in
process on a cluster folder whose nodes were never started: exit 2 and nothing changed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster import fault_record, netns
from cluster.admin import AUTH_HEADER, admin_signature
from cluster.launcher import STATE_FILE, ClusterSpec, LocalCluster
from cluster.nemesis import DesiredFaults
from raftbench.cli import main
from raftbench.commands.cluster_faults import describe_faults

DEADLINE = 60.0  # guards against hangs only


def cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "raftbench", *args],
        capture_output=True,
        text=True,
        timeout=2 * DEADLINE,
        check=False,
    )
    assert result.returncode == expect, (args, result.stdout, result.stderr)
    return result


class Shell:
    """`raftbench` commands in this process (`raftbench.cli.main`), each reopening the cluster
    from its folder as a fresh command would. Commands that start node processes (`up`,
    `restart`) run as separate processes, so the nodes are not children of the test."""

    def __init__(self, capsys: pytest.CaptureFixture[str], directory: str) -> None:
        self.capsys = capsys
        self.directory = directory

    def __call__(self, *args: str, expect: int = 0) -> tuple[str, str]:
        self.capsys.readouterr()
        code = run_main([*args, "--dir", self.directory])
        out, err = self.capsys.readouterr()
        assert code == expect, (args, out, err)
        return out, err

    def spawn(self, *args: str) -> str:
        return cli(*args, "--dir", self.directory).stdout

    def faults(self) -> list[str]:
        """The lines of the `faults in force` section of `cluster status`."""
        out = self("cluster", "status")[0].splitlines()
        start = next(i for i, line in enumerate(out) if line.startswith("faults in force:"))
        if out[start] == "faults in force: none":
            return []
        lines = []
        for line in out[start + 1 :]:
            if not line.startswith("  "):
                break
            lines.append(line.strip())
        return lines


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"not within {DEADLINE} s: {what}"
        time.sleep(0.05)


def commit_of(cluster: LocalCluster, node: str) -> int:
    status = cluster.statuses()[node]
    return -1 if status is None else int(status["commit_index"])


def caught_up(cluster: LocalCluster, node: str) -> bool:
    """`node` follows the current leader and has committed everything the leader has."""
    leader = cluster.leader()
    statuses = cluster.statuses()
    mine = statuses[node]
    theirs = statuses[leader] if leader is not None else None
    if mine is None or theirs is None:
        return False
    return mine.get("leader") == leader and mine["commit_index"] >= theirs["commit_index"]


def shaper_links(cluster: LocalCluster, node: str) -> dict[str, dict[str, Any]]:
    path = "/admin/shaper"
    signature = admin_signature(cluster.secret, "GET", path, b"")
    with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
        answer = http.get(cluster.url(node) + path, headers={AUTH_HEADER: signature})
    assert answer.status_code == 200, answer.text
    links: dict[str, dict[str, Any]] = answer.json()["links"]
    return links


def fsync_delay_metric(cluster: LocalCluster, node: str) -> str:
    with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
        metrics = http.get(cluster.url(node) + "/metrics").text
    line = next(m for m in metrics.splitlines() if m.startswith("raftbench_store_fsync_delay"))
    return line.split()[-1]


# ---- a real cluster, per protocol --------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["push", "pull"])
def test_faults_from_the_shell_on_a_real_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], protocol: str
) -> None:
    sh = Shell(capsys, str(tmp_path / "c"))
    quick = ("--election-timeout", "0.5", "--heartbeat", "0.05")
    sh.spawn("cluster", "up", "--nodes", "3", "--protocol", protocol, *quick)
    try:
        cluster = LocalCluster.open(sh.directory)  # the test only reads; the commands act
        assert sh("kv", "put", "k", "v1")[0] == "OK\n"

        # kill leader: another is elected and takes writes; status shows the dead one.
        cluster.wait_for_leader(DEADLINE)
        killed = sh("cluster", "kill", "leader")[0]
        # The command finds the leader itself ("leader: nX"); under load it may have changed
        # since the test looked, so take the name from what the command says.
        old = killed.split()[1]
        assert killed.startswith(f"leader: {old}\n") and f"kill {old}" in killed
        assert not LocalCluster.open(sh.directory).is_alive(old)
        assert sh.faults() == [f"{old} killed"]
        cluster.wait_for_leader(DEADLINE, exclude=old)
        assert sh("kv", "put", "k", "v2")[0] == "OK\n"
        assert f"{old} is not running" in sh("cluster", "kill", old, expect=1)[1]

        # restart: it comes back (a new process) and catches up with the leader's commits.
        sh.spawn("cluster", "restart", old)
        cluster = LocalCluster.open(sh.directory)
        assert cluster.process_state(old) == "running" and cluster.records[old].starts == 2
        wait_until(lambda: caught_up(cluster, old), f"{old} catches up with the leader")
        assert sh.faults() == []
        assert f"{old} is running" in sh("cluster", "restart", old, expect=1)[1]

        # isolate the leader: the others elect another; heal: everyone converges.
        cluster.wait_for_leader(DEADLINE)
        isolated = sh("cluster", "isolate", "leader")[0].split()[1]  # "leader: nX"
        rest = [n for n in cluster.node_ids if n != isolated]
        assert sh.faults() == [f"partition {{{isolated}}} | {{{','.join(rest)}}}"]
        majority = cluster.wait_for_leader(DEADLINE, exclude=isolated)
        assert sh("kv", "put", "k", "v3")[0] == "OK\n"
        index = commit_of(cluster, majority)
        sh("cluster", "heal")
        assert sh.faults() == []

        def converged() -> bool:
            statuses = cluster.statuses()
            leaders = {s["leader"] for s in statuses.values() if s is not None}
            commits = {s["commit_index"] for s in statuses.values() if s is not None}
            return (
                all(s is not None for s in statuses.values())
                and len(leaders) == 1
                and None not in leaders
                and len(commits) == 1
                and commits.pop() >= index
            )

        wait_until(converged, "every node follows one leader and has committed the same")

        # pause / resume a follower.
        leader = cluster.wait_for_leader(DEADLINE)
        follower = next(n for n in cluster.node_ids if n != leader)
        sh("cluster", "pause", follower)
        assert LocalCluster.open(sh.directory).process_state(follower) == "paused"
        assert sh.faults() == [f"{follower} paused"]
        assert f"{follower} is paused" in sh("cluster", "pause", follower, expect=1)[1]
        sh("cluster", "resume", follower)
        assert LocalCluster.open(sh.directory).process_state(follower) == "running"
        assert sh.faults() == []
        assert "not paused" in sh("cluster", "resume", follower, expect=1)[1]

        # slow links and a slow disk, kept across a kill and restart, undone by recover.
        sh("cluster", "slow-link", "n1", "--to", "n2", "--delay-ms", "20", "--jitter-ms", "5",
           "--loss", "0.1")  # fmt: skip
        sh("cluster", "slow-disk", "n2", "--fsync-delay", "0.05")
        assert sh.faults() == [
            "slow-link n1<->n2 delay 20ms jitter 5ms loss 0.1",
            "slow-disk n2 0.05s",
        ]
        link = shaper_links(cluster, "n1")["n2"]
        assert (link["delay_ms"], link["jitter_ms"], link["loss"]) == (20.0, 5.0, 0.1)
        assert shaper_links(cluster, "n1")["n3"]["delay_ms"] == 0.0
        assert fsync_delay_metric(cluster, "n2") == "0.05"
        sh("cluster", "kill", "n2")
        assert "n2 is stopped, not paused" in sh("cluster", "resume", "n2", expect=1)[1]
        assert "only a running node can be paused" in sh("cluster", "pause", "n2", expect=1)[1]
        sh("cluster", "partition", "n1", "n2,n3")  # n2 is told when it is back
        assert sh.faults()[:2] == ["n2 killed", "partition {n1} | {n2,n3}"]
        sh.spawn("cluster", "restart", "n2")
        cluster = LocalCluster.open(sh.directory)
        assert fsync_delay_metric(cluster, "n2") == "0.05"
        back = shaper_links(cluster, "n2")
        assert back["n1"]["delay_ms"] == 20.0 and back["n1"]["partitioned"]
        assert not back["n3"]["partitioned"]

        sh("cluster", "pause", "n3")
        recovered = sh("cluster", "recover")[0]  # starts no process: nothing is down
        assert "resume n3" in recovered and "heal" in recovered
        cluster = LocalCluster.open(sh.directory)
        assert all(cluster.process_state(n) == "running" for n in cluster.node_ids)
        assert sh.faults() == []
        assert not (Path(sh.directory) / fault_record.FAULTS_FILE).exists()
        assert fsync_delay_metric(cluster, "n2") == "0"
        for node in cluster.node_ids:
            links = shaper_links(cluster, node).values()
            assert all(link["delay_ms"] == 0.0 and not link["partitioned"] for link in links)
        assert sh("cluster", "recover")[0] == "no fault is in force\n"
        assert sh("kv", "get", "k")[0] == "v3\n"
    finally:
        sh("cluster", "down", "--purge")


def test_netns_faults_are_nftables_rules_and_come_back_with_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    netns.check_prerequisites()  # fails with what to install, rather than skipping
    sh = Shell(capsys, str(tmp_path / "c"))
    quick = ("--election-timeout", "0.5", "--heartbeat", "0.05")
    sh.spawn("cluster", "up", "--netns", "--protocol", "pull", *quick)
    cluster = LocalCluster.open(sh.directory)
    layout = cluster.layout
    assert layout is not None
    others = {h.address for h in layout.hosts if h.node_id != "n1"}
    try:
        sh("cluster", "isolate", "n1")
        sh("cluster", "slow-disk", "n2", "--fsync-delay", "0.05")
        assert netns.blocked_outgoing(layout, "n1") == others
        assert shaper_links(cluster, "n1")["n2"]["partitioned"] is False  # not the shaper

        # Every node killed, then `up`: the recorded faults are put back on the new processes.
        for node in cluster.node_ids:
            sh("cluster", "kill", node)
        shown = sh.faults()
        assert shown[:3] == ["n1 killed", "n2 killed", "n3 killed"]
        assert "partition {n1} | {n2,n3}" in shown
        assert "faults in force again" in sh.spawn("cluster", "up")
        cluster = LocalCluster.open(sh.directory)
        assert sh.faults() == ["partition {n1} | {n2,n3}", "slow-disk n2 0.05s"]
        assert fsync_delay_metric(cluster, "n2") == "0.05"
        assert netns.blocked_outgoing(layout, "n1") == others
        cluster.wait_for_leader(DEADLINE)

        sh("cluster", "recover")
        assert all(netns.blocked_outgoing(layout, n) == set() for n in cluster.node_ids)
        assert fsync_delay_metric(cluster, "n2") == "0"
        assert sh.faults() == []
    finally:
        sh("cluster", "down", "--purge")
    assert not any(h.namespace in netns.list_namespaces() for h in layout.hosts)


# ---- bad input: exit 2, nothing done -----------------------------------------------------------


def run_main(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse refuses a value
        return int(exit_.code or 0)


@pytest.fixture
def idle(tmp_path: Path) -> LocalCluster:
    """A 3-node cluster folder whose nodes were never started."""
    return LocalCluster.create(tmp_path / "c", ClusterSpec(nodes=3))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["kill", "n9"], "'n9' is not a member (members: n1, n2, n3; or 'leader')"),
        (["isolate", "N1"], "'N1' is not a member"),
        (["slow-disk", "n4", "--fsync-delay", "1"], "'n4' is not a member"),
        (["partition", "n1,n2", "n2,n3"], "n2 is in two groups"),
        (["partition", "n1,n2"], "give two or more groups"),
        (["partition", "n1,n9", "n3"], "'n9' is not a member"),
        (["partition", "leader,n9", "n3"], "'n9' is not a member"),  # before asking for a leader
        (["partition", "n1,,n2", "n3"], "an empty name"),
        (["partition", "n1,n1", "n3"], "n1 is named twice"),
        (["slow-link", "n1", "--delay-ms", "-5"], "--delay-ms: must be >= 0, got -5"),
        (["slow-link", "n1", "--delay-ms", "inf"], "--delay-ms: must be finite"),
        (["slow-link", "n1", "--jitter-ms", "x"], "--jitter-ms: not a number: 'x'"),
        (["slow-link", "n1", "--loss", "1.5"], "--loss: must be a probability in [0, 1]"),
        (["slow-link", "n1", "--loss", "-0.1"], "--loss: must be a probability"),
        (["slow-link", "n1"], "give at least one of --delay-ms, --jitter-ms, --loss"),
        (["slow-link", "n1", "--to", "n1", "--delay-ms", "5"], "--to names n1 itself"),
        (["slow-link", "n1", "--to", "n7", "--delay-ms", "5"], "'n7' is not a member"),
        (["slow-disk", "n1", "--fsync-delay", "-1"], "--fsync-delay: must be >= 0"),
        (["slow-disk", "n1", "--fsync-delay", "61"], "--fsync-delay: must be <= 60 s"),
        (["slow-disk", "n1"], "the following arguments are required: --fsync-delay"),
    ],
)
def test_bad_input_is_a_usage_error_that_changes_nothing(
    idle: LocalCluster, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    state = (idle.directory / STATE_FILE).read_bytes()
    code = run_main(["cluster", *argv, "--dir", str(idle.directory)])
    assert code == 2
    assert message in capsys.readouterr().err
    assert (idle.directory / STATE_FILE).read_bytes() == state
    assert not (idle.directory / fault_record.FAULTS_FILE).exists()


@pytest.mark.parametrize(
    "argv",
    [["kill", "n1"], ["restart", "n1"], ["heal"], ["recover"], ["isolate", "leader"]],
)
def test_faults_on_a_cluster_that_is_not_running_are_refused(
    idle: LocalCluster, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert run_main(["cluster", *argv, "--dir", str(idle.directory)]) == 1
    assert f"no node of the cluster in {idle.directory} is running" in capsys.readouterr().err
    assert not any(idle.is_alive(n) for n in idle.node_ids)
    assert not (idle.directory / fault_record.FAULTS_FILE).exists()


def test_no_cluster_in_the_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(["cluster", "kill", "n1", "--dir", str(tmp_path / "none")]) == 1
    assert "no cluster-state.json" in capsys.readouterr().err


# ---- the record of faults ----------------------------------------------------------------------


def test_the_record_round_trips_and_status_lines_read_well(idle: LocalCluster) -> None:
    desired = DesiredFaults(
        cuts={("n1", "n2"), ("n1", "n3")},
        groups=[["n1"], ["n2", "n3"]],
        one_way=True,
        slow={
            ("n1", "n2"): {"delay_ms": 50.0, "jitter_ms": 0.0, "loss": 0.0},
            ("n3", "n1"): {"delay_ms": 7.5, "jitter_ms": 1.0, "loss": 0.25},
        },
        bandwidth={"n3": 125000.0},
        disk={"n2": 0.2},
        killed={"n2"},
    )
    fault_record.save(idle, desired)
    assert fault_record.load(idle) == desired
    assert describe_faults(idle, desired) == [
        "n2 killed",
        "one-way partition {n1} -/-> {n2,n3}",
        "slow-link n1->n2 delay 50ms jitter 0ms loss 0",
        "slow-link n3->n1 delay 7.5ms jitter 1ms loss 0.25",
        "bandwidth n3 125000 B/s",
        "slow-disk n2 0.2s",
    ]
    fault_record.save(idle, DesiredFaults())  # nothing in force: no file
    assert not (idle.directory / fault_record.FAULTS_FILE).exists()


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        '{"version": 7, "faults": {}}',
        '{"version": 1, "faults": {"killed": ["n9"]}}',
        '{"version": 1, "faults": {"disk": {"n1": -1}}}',
        '{"version": 1, "faults": []}',
    ],
)
def test_a_damaged_record_is_reported_not_trusted(
    idle: LocalCluster, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    (idle.directory / fault_record.FAULTS_FILE).write_text(content)
    assert run_main(["cluster", "heal", "--dir", str(idle.directory)]) == 1
    assert "faults.json: unreadable" in capsys.readouterr().err
    assert run_main(["cluster", "status", "--dir", str(idle.directory)]) == 0
    assert "faults in force: unknown" in capsys.readouterr().out
