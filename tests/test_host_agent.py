"""cluster.host_agent, run here as it runs on a host: start, watch, signal only its own nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cluster import host_agent
from cluster.launcher import ClusterSpec, LocalCluster


def _cluster_dir(tmp_path: Path) -> Path:
    LocalCluster.create(tmp_path / "c", ClusterSpec(nodes=1, protocol="push"))
    return tmp_path / "c"


def _agent(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-m", "cluster.host_agent", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    answer = json.loads(done.stdout.splitlines()[-1])
    assert isinstance(answer, dict)
    return answer


def test_start_signal_and_stop_a_node(tmp_path: Path) -> None:
    directory = _cluster_dir(tmp_path)
    start = ["start", "--dir", str(directory), "--id", "n1", "--", "--protocol", "push"]
    answer = _agent(*start)
    assert "error" not in answer, answer
    pid = answer["pid"]
    assert isinstance(pid, int)
    try:
        assert (directory / "logs" / "n1.out").read_text().startswith("ready n1 ")
        # Two readings of a live process: its state may be D for a moment (a write to disk)
        # and its resident size may move between them while it settles after start. Poll,
        # bounded, for a pair taken close together that agrees.
        deadline = time.monotonic() + 30.0
        while True:
            found = host_agent.stats(directory)["n1"]
            rss = _vm_rss(pid)
            agrees = found[1] in ("R", "S") and abs(found[3] - rss) < 2**20
            if agrees or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert found[0] == pid and found[1] in ("R", "S")
        assert abs(found[3] - rss) < 2**20  # its resident bytes, as /proc says
        assert _agent(*start) == {"error": "n1 is already running"}
        assert host_agent.send(directory, "n1", "STOP", 5.0) == {"result": "signalled"}
        deadline = time.monotonic() + 30.0
        while host_agent.stats(directory)["n1"][1] != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert host_agent.stats(directory)["n1"][1] == "T"
        # A clean exit within the wait (SIGKILL only after it): generous, for a loaded machine.
        assert host_agent.send(directory, "n1", "TERM", 60.0) == {"result": "stopped"}
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid)
        assert host_agent.stats(directory) == {}  # its pid file went with it
        assert host_agent.send(directory, "n1", "KILL", 5.0) == {"result": "not-running"}
    finally:
        if Path(f"/proc/{pid}").exists() and not _zombie(pid):
            os.kill(pid, 9)


def test_a_pid_file_naming_another_process_is_never_signalled(tmp_path: Path) -> None:
    directory = _cluster_dir(tmp_path)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = host_agent.proc_stat(stranger.pid)
        assert ticks is not None
        (directory / "pids").mkdir()
        (directory / "pids" / "n1.pid").write_text(f"{stranger.pid} {ticks[1]}\n")
        assert host_agent.stats(directory) == {"n1": None}  # not started from this cluster
        assert host_agent.send(directory, "n1", "KILL", 1.0) == {"result": "not-running"}
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_monitor_streams_stats_and_answers_signal_requests(tmp_path: Path) -> None:
    directory = tmp_path / "empty"
    requests = (
        '{"id": 3, "node": "n1", "signal": "KILL"}\n'
        "not json\n"
        '{"id": 4, "node": "a/b", "signal": "KILL"}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "cluster.host_agent", "monitor", "--dir", str(directory)],
        input=requests,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert lines[0]["nodes"] == {}
    replies = [line for line in lines if "reply" in line]
    assert replies[0] == {"reply": 3, "result": "not-running"}
    assert replies[1]["reply"] is None and "bad request" in replies[1]["error"]
    assert replies[2]["reply"] is None and "not a member id" in replies[2]["error"]


def _vm_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _zombie(pid: int) -> bool:
    found = host_agent.proc_stat(pid)
    return found is None or found[0] == "Z"
