"""What runs on a remote host, over SSH, to start, signal and watch its node processes.

Why a module and not shell one-liners: the checks that keep `down` from hitting a stranger
(the recorded start time and a command line naming this cluster's file) and the wait for the
`ready` line are the same as the local launcher's, and are easier to get right once, in
Python, than quoted through a remote shell. It is deployed with the rest of the package and run
as ``<venv>/bin/python -m cluster.host_agent COMMAND --dir CLUSTER_DIR ...``; every answer is one
JSON line on stdout. Standard library only (with `cluster.procfs`, itself standard library
only), so it starts fast.

A cluster folder on a host::

    DIR/cluster.toml, DIR/data/<id>/, DIR/logs/<id>.out|.err, DIR/pids/<id>.pid ("pid ticks")
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cluster.procfs import rss_bytes

CLK_TCK = os.sysconf("SC_CLK_TCK")
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "STOP": signal.SIGSTOP}
SIGNALS["CONT"] = signal.SIGCONT


def proc_stat(pid: int) -> tuple[str, int, float] | None:
    """(state letter, start ticks, CPU seconds) of `pid`, None when there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest[0], int(rest[19]), (int(rest[11]) + int(rest[12])) / CLK_TCK


def _pid_file(directory: Path, node: str) -> Path:
    return directory / "pids" / f"{node}.pid"


def _ours(directory: Path, node: str) -> tuple[int, str, float, int | None] | None:
    """(pid, state, cpu, resident bytes) of the node's recorded process while it is still
    that process."""
    try:
        pid_text, ticks_text = _pid_file(directory, node).read_text().split()
        pid, ticks = int(pid_text), int(ticks_text)
    except (OSError, ValueError):
        return None
    stat = proc_stat(pid)
    if stat is None or stat[1] != ticks or stat[0] == "Z":
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if str(directory / "cluster.toml").encode() not in cmdline:
        return None
    return pid, stat[0], stat[2], rss_bytes(pid)


def _alive(pid: int, ticks: int | None) -> bool:
    """`pid` is still the process that started at `ticks` and has not exited (an exiting
    process loses its command line before it is a zombie: only this says it is gone)."""
    stat = proc_stat(pid)
    return stat is not None and stat[1] == ticks and stat[0] not in ("Z", "X")


def start(directory: Path, node: str, node_args: list[str], timeout: float) -> dict[str, Any]:
    if _ours(directory, node) is not None:
        return {"error": f"{node} is already running"}
    for sub in ("logs", "pids", "data"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    out_path = directory / "logs" / f"{node}.out"
    err_path = directory / "logs" / f"{node}.err"
    command = [sys.executable, "-m", "raftbench", "node", "--config"]
    command += [str(directory / "cluster.toml"), "--id", node, *node_args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(out_path, "wb") as out, open(err_path, "ab") as err:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=directory,
            start_new_session=True,
        )
    stat = proc_stat(process.pid)
    ticks = stat[1] if stat else 0
    _pid_file(directory, node).write_text(f"{process.pid} {ticks}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = out_path.read_text(encoding="utf-8", errors="replace")
        if any(line.startswith(f"ready {node} ") for line in text.splitlines()):
            return {"pid": process.pid, "ticks": ticks}
        if process.poll() is not None:
            _pid_file(directory, node).unlink(missing_ok=True)
            return {"error": f"{node} exited before it was ready" + _tail(err_path)}
        time.sleep(0.05)
    process.kill()
    process.wait()
    _pid_file(directory, node).unlink(missing_ok=True)
    return {"error": f"{node} did not print 'ready' within {timeout} s" + _tail(err_path)}


def send(directory: Path, node: str, name: str, wait: float) -> dict[str, Any]:
    """Signal the node if it is still ours; with `wait`, wait for its exit (KILL after)."""
    found = _ours(directory, node)
    if found is None:
        _pid_file(directory, node).unlink(missing_ok=True)
        return {"result": "not-running"}
    pid = found[0]
    ticks = proc_stat(pid)
    try:
        os.kill(pid, SIGNALS[name])
        if name in ("TERM", "KILL"):
            os.kill(pid, signal.SIGCONT)  # a paused process must run to exit
    except ProcessLookupError:
        _pid_file(directory, node).unlink(missing_ok=True)
        return {"result": "not-running"}
    if name in ("TERM", "KILL"):
        deadline = time.monotonic() + wait
        killed = name == "KILL"
        while _alive(pid, ticks[1] if ticks else None):
            if time.monotonic() >= deadline:
                if killed:
                    return {"result": "still-running"}
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed, deadline = True, time.monotonic() + 10.0
            time.sleep(0.01)
        _pid_file(directory, node).unlink(missing_ok=True)
        return {"result": "killed" if killed else "stopped"}
    return {"result": "signalled"}


def stats(directory: Path) -> dict[str, Any]:
    """Every node with a pid file: [pid, state, cpu seconds, resident bytes (or null)], or
    None when it is gone."""
    pids = directory / "pids"
    names = sorted(p.stem for p in pids.glob("*.pid")) if pids.is_dir() else []
    out: dict[str, Any] = {}
    for node in names:
        found = _ours(directory, node)
        out[node] = list(found) if found else None
    return out


def monitor(directory: Path, interval: float) -> None:
    """`stats` as a JSON line every `interval` s, until stdin closes.

    Also takes signal requests on stdin, one JSON object a line (``{"id": 7, "node": "n1",
    "signal": "KILL", "wait": 10}``), answered between stats lines as ``{"reply": 7, ...}``
    (what `send` says): a fault lands without starting a process on the host for it."""
    pending = b""
    while True:
        print(json.dumps({"t": time.time(), "nodes": stats(directory)}), flush=True)
        deadline = time.monotonic() + interval
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sys.stdin], [], [], left)
            if not ready:
                break
            chunk = os.read(sys.stdin.fileno(), 4096)
            if not chunk:
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    print(json.dumps(_request(directory, line)), flush=True)


def _request(directory: Path, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        name, node = str(request["signal"]), _node_id(str(request["node"]))
        if name not in SIGNALS:
            raise ValueError(f"unknown signal {name!r}")
        wait = float(request.get("wait", 10.0))
    except (ValueError, KeyError, TypeError, argparse.ArgumentTypeError) as error:
        return {"reply": None, "error": f"bad request: {error}"}
    return {"reply": request.get("id"), **send(directory, node, name, wait)}


def _tail(path: Path, lines: int = 10) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    return ("; stderr: " + " | ".join(text.splitlines()[-lines:])) if text else ""


def _node_id(text: str) -> str:
    if not text or "/" in text or text.startswith("."):
        raise argparse.ArgumentTypeError(f"not a member id: {text!r}")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.host_agent")
    parser.add_argument("command", choices=["start", "signal", "stats", "monitor", "clock"])
    parser.add_argument("--dir", type=Path, default=Path("."))
    parser.add_argument("--id", type=_node_id)
    parser.add_argument("--signal", choices=sorted(SIGNALS), default="TERM")
    parser.add_argument("--wait", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=0.1)
    given = list(sys.argv[1:] if argv is None else argv)
    split = given.index("--") if "--" in given else len(given)
    args = parser.parse_args(given[:split])
    node_args = given[split + 1 :]  # after "--": the `raftbench node` options
    directory = args.dir.absolute()
    if args.command in ("start", "signal") and args.id is None:
        parser.error(f"{args.command}: --id is needed")
    answer: dict[str, Any]
    match args.command:
        case "start":
            answer = start(directory, args.id, node_args, args.timeout)
        case "signal":
            answer = send(directory, args.id, args.signal, args.wait)
        case "stats":
            answer = stats(directory)
        case "monitor":
            monitor(directory, args.interval)
            return 0
        case _:
            answer = {"time": time.time()}
    print(json.dumps(answer), flush=True)
    return 1 if "error" in answer else 0


if __name__ == "__main__":
    sys.exit(main())
