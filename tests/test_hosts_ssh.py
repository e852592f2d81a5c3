"""Real SSH on one machine: network namespaces, each running Debian's sshd, as the hosts.

The flow of the README's "Running on your own machines": `hosts deploy`, `cluster
up|status|down --hosts`, `compare --hosts` of quick and leader-crash for push and pull; then
nothing is left running in any namespace. And every host problem (unreachable, unknown or wrong
host key, no Python, nothing deployed) is a clear error before anything starts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import anyio.to_thread
import pytest
from ssh_hosts import NamespaceHosts, namespace_hosts

from cluster import netns
from cluster.host_agent import proc_stat
from cluster.inventory import load_inventory
from cluster.launcher import ClusterSpec
from cluster.nemesis import Nemesis
from cluster.ssh import HostPool
from cluster.ssh_cluster import SshCluster
from raftbench.cli import main


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NamespaceHosts]:
    with namespace_hosts(tmp_path_factory.mktemp("ssh-hosts"), 3) as made:
        yield made
        assert made.leftovers() == {}


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _started_anything(work: Path) -> bool:
    return work.exists()


@pytest.fixture(scope="module")
def deployed(hosts: NamespaceHosts, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(inventory, wheel cache) of hosts where `raftbench hosts deploy` has run once."""
    folder = tmp_path_factory.mktemp("deployed")
    inventory = hosts.inventory(folder / "hosts.toml")
    cache = folder / "wheels"
    code = main(["hosts", "deploy", "--hosts", str(inventory), "--cache", str(cache)])
    assert code == 0
    for name in hosts.names:  # each host has its own venv, installed over SSH
        assert (hosts.folder / "work" / name / "venv" / "bin" / "raftbench").exists()
    return inventory, cache


def test_host_problems_are_clear_errors_before_anything_starts(
    hosts: NamespaceHosts, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    # A host that does not answer on its SSH port.
    inventory = hosts.inventory(
        tmp_path / "refused.toml",
        work=work,
        extra=f'[[host]]\nname = "gone"\naddress = "{hosts.address("h1")}"\nport = 2222\n'
        f'work_dir = "{tmp_path}/gone"',
    )
    code, _, err = _cli(capsys, "hosts", "check", "--hosts", str(inventory))
    assert code == 1
    assert "gone (root@" in err and "unreachable" in err

    # A host whose key is not the one known_hosts holds for its address.
    wrong = tmp_path / "wrong_known_hosts"
    lines = [f"{hosts.address(n)} {hosts.host_keys[n]}" for n in hosts.names]
    lines[0] = f"{hosts.address('h1')} {hosts.host_keys['h2']}"
    wrong.write_text("\n".join(lines) + "\n")
    inventory = hosts.inventory(tmp_path / "wrong.toml", work=work, known_hosts=wrong)
    code, _, err = _cli(capsys, "cluster", "up", "--hosts", str(inventory), "--dir", str(tmp_path))
    assert code == 1
    assert "h1 (root@" in err and "does not match" in err
    assert "h2" not in err.replace("h2 ", "")  # only h1 is named
    assert wrong.read_text() == "\n".join(lines) + "\n"  # never rewritten

    # A host with no entry at all: refused unless asked, then its key is added.
    empty = tmp_path / "new_known_hosts"
    inventory = hosts.inventory(tmp_path / "new.toml", work=work, known_hosts=empty)
    code, _, err = _cli(capsys, "hosts", "check", "--hosts", str(inventory))
    assert code == 1 and "no host key in" in err and "--accept-new-host-keys" in err
    assert not empty.exists()
    code, out, _ = _cli(
        capsys, "hosts", "check", "--hosts", str(inventory), "--accept-new-host-keys"
    )
    assert code == 0, out
    added = empty.read_text().splitlines()
    assert sorted(added) == sorted(f"{hosts.address(n)} {hosts.host_keys[n]}" for n in hosts.names)

    # A host without that Python.
    inventory = hosts.inventory(
        tmp_path / "nopy.toml", work=work, python={"h2": "/nonexistent/python3"}
    )
    code, _, err = _cli(capsys, "cluster", "up", "--hosts", str(inventory), "--dir", str(tmp_path))
    assert code == 1 and "h2 (root@" in err and "no usable Python" in err

    # Everything fine, but nothing deployed yet.
    inventory = hosts.inventory(tmp_path / "fresh.toml", work=work)
    code, _, err = _cli(
        capsys, "cluster", "up", "--hosts", str(inventory), "--dir", str(tmp_path / "c")
    )
    assert code == 1 and "not deployed on h1, h2, h3" in err

    # A malformed inventory: usage error.
    broken = tmp_path / "broken.toml"
    broken.write_text(inventory.read_text().replace('user = "root"', "user = 1"))
    code, _, err = _cli(capsys, "hosts", "deploy", "--hosts", str(broken))
    assert code == 2 and "defaults.user" not in err and "user: expected" in err

    assert not _started_anything(work)
    assert hosts.leftovers() == {}


def test_deploy_cluster_and_compare_over_ssh(
    hosts: NamespaceHosts,
    deployed: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    inventory, cache = str(deployed[0]), str(deployed[1])
    code, out, err = _cli(capsys, "hosts", "deploy", "--hosts", inventory, "--cache", cache)
    assert code == 0, err
    assert out.count(": unchanged") == 3  # idempotent: nothing copied or installed again

    folder = str(tmp_path / "cluster")
    code, out, err = _cli(
        capsys, "cluster", "up", "--hosts", inventory, "--dir", folder, "--protocol", "pull"
    )
    assert code == 0, err
    for name in hosts.names:
        assert hosts.address(name) in out
    code, out, err = _cli(capsys, "cluster", "status", "--dir", folder)
    assert code == 0, err
    assert out.count("running") == 3 and "leader" in out
    # A clean stop may take a loaded machine more than the default 5 s.
    code, out, err = _cli(capsys, "cluster", "down", "--dir", folder, "--grace", "30")
    assert code == 0, err
    assert "stopped: n1, n2, n3" in out
    assert hosts.leftovers() == {}
    assert (Path(folder) / "logs" / "n1.out").read_text().startswith("ready n1 ")

    results, reports = tmp_path / "results", tmp_path / "reports"
    for scenario in ("quick", "leader-crash"):
        code, out, err = _cli(
            capsys, "compare", "--scenario", scenario, "--hosts", inventory, "--trials", "1",
            "--results-dir", str(results), "--reports-dir", str(reports),
        )  # fmt: skip
        assert code == 0, out + err
        assert hosts.leftovers() == {}
    for name in hosts.names:  # the runs took their folders away; `cluster up`'s stays
        assert len(list((hosts.folder / "work" / name / "clusters").iterdir())) == 1
    runs = sorted(p for p in results.iterdir() if (p / "metadata.json").exists())
    assert len(runs) == 4
    for run in runs:
        metadata = json.loads((run / "metadata.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        assert summary["verdict"] == "linearizable" and summary["acked_lost"] == 0
        target = metadata["target"]
        assert metadata["real"]["hosts"] is True
        assert [h["address"] for h in target["hosts"]] == [hosts.address(n) for n in hosts.names]
        for host in target["hosts"]:
            assert host["clock"]["residual_ms"] >= 0
        rtt = target["rtt_matrix_ms"]
        assert set(rtt) == {"n1", "n2", "n3"}
        assert any(v is not None and v > 0 for row in rtt.values() for v in row.values())
        cpu = [n["cpu_seconds"] for n in json.loads((run / "nodes.json").read_text()).values()]
        assert cpu and all(c > 0 for c in cpu)  # sampled through the hosts' monitors
        if "leader-crash" in run.name:
            lines = (run / "faults.jsonl").read_text().splitlines()
            kinds = [json.loads(line)["kind"] for line in lines]
            assert "crash" in kinds and "restart" in kinds
    made = [p / "report.md" for p in reports.iterdir() if (p / "report.md").exists()]
    assert len(made) == 2
    for report in made:
        text = report.read_text()
        assert "**Hosts (SSH):**" in text and "measured RTT" in text
        assert all(hosts.address(name) in text for name in hosts.names)


@pytest.mark.anyio
async def test_nemesis_on_hosts_kills_pauses_and_partitions_with_nftables(
    hosts: NamespaceHosts, deployed: tuple[Path, Path], tmp_path: Path
) -> None:
    with HostPool(load_inventory(deployed[0])) as pool:
        spec = ClusterSpec(nodes=3, protocol="push", election_timeout=0.5, heartbeat_interval=0.05)
        cluster = SshCluster.create_on_hosts(pool, tmp_path / "c", spec)
        try:
            cluster.start()
            host_of = {n: h.name for n, h in cluster.hosts.items()}
            assert cluster.firewall  # root in each namespace may run nft
            nemesis = Nemesis(cluster)
            assert nemesis.use_nft
            leader = cluster.wait_for_leader(30.0)
            event = await nemesis.isolate(leader)
            assert event.detail.endswith("(nftables)")
            others = {hosts.address(host_of[n]) for n in cluster.node_ids if n != leader}
            assert netns.blocked_outgoing(hosts.layout, host_of[leader]) == others
            new = await anyio.to_thread.run_sync(cluster.wait_for_leader, 30.0, leader)
            assert new != leader
            await nemesis.heal()
            assert all(netns.blocked_outgoing(hosts.layout, h) == set() for h in hosts.names)

            # The host's agent answers once the signal is sent; the process stops (or runs
            # again) when it is next scheduled, and the host's monitor says so a line later.
            await nemesis.pause(new)
            await _until(lambda: cluster.process_state(new) == "paused")
            assert cluster.process_state(new) == "paused"
            await nemesis.resume(new)
            await _until(lambda: cluster.process_state(new) == "running")
            assert cluster.process_state(new) == "running"

            old_pid = cluster.records[new].pid
            await nemesis.kill(new)
            assert not cluster.is_alive(new) and cluster.process_stat(new) is None
            assert old_pid is not None
            gone = proc_stat(old_pid)  # the hosts share this machine's pids
            assert gone is None or gone[0] == "Z"  # reaped, or a zombie of whoever adopted it
            await nemesis.restart(new)
            assert cluster.is_alive(new) and cluster.records[new].pid != old_pid
            # The host's monitor reports the new process a line or more later: poll, bounded.
            await _until(lambda: cluster.process_stat(new) is not None)
            stat = cluster.process_stat(new)
            assert stat is not None and stat[0] == cluster.records[new].pid and stat[1] != "T"
        finally:
            report = cluster.down()
    assert sorted(report.stopped + report.killed) == ["n1", "n2", "n3"]
    assert report.problems == ()
    assert hosts.leftovers() == {}


async def _until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait (bounded) until `condition` holds; the caller then asserts it."""
    deadline = time.monotonic() + timeout
    while not await anyio.to_thread.run_sync(condition) and time.monotonic() < deadline:
        await anyio.sleep(0.05)
