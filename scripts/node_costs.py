"""What a real node does per second at rest and per write at W=1: CPU, wake-ups, messages.

    .venv/bin/python scripts/node_costs.py [--protocols push pull] [--idle 10] [--writes 500]

For each protocol: a fresh local 3-member cluster (fsync on, election 1 s, heartbeat 100 ms,
as `raftbench bench`), a leader, 2 s to settle; then `--idle` seconds at rest and `--writes`
sequential writes of 100 bytes (one at a time, one HTTP connection to the leader). For every
member it prints, at rest per second and under load per write: CPU milliseconds (utime+stime),
the engine loop's turns (`raftbench_loop_turns_total`: one per wake-up), the threads'
voluntary context switches (every sleep of every thread: the event loop, the persist thread)
and the peer messages it sent. These are counts, not timings: valid on a loaded machine.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import httpx

from cluster.launcher import ClusterSpec, LocalCluster
from cluster.procfs import read_stat

_SAMPLE = re.compile(
    r"^(raftbench_loop_turns_total|raftbench_peer_messages_total)(\{[^}]*\})? (\S+)$"
)


def _switches(pid: int) -> int:
    """Voluntary context switches of all of `pid`'s threads."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        match = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", text, re.M)
        if match:
            total += int(match.group(1))
    return total


_CAUSES = ("input", "timer", "nothing")


def _reading(cluster: LocalCluster, http: httpx.Client) -> dict[str, tuple[float, ...]]:
    """Per member: CPU seconds, loop turns by cause, context switches, peer messages sent."""
    out = {}
    for node in cluster.node_ids:
        pid = cluster.records[node].pid
        assert pid is not None
        stat = read_stat(pid)
        assert stat is not None
        turns = dict.fromkeys(_CAUSES, 0.0)
        sent = 0.0
        for line in http.get(cluster.url(node) + "/metrics").text.splitlines():
            match = _SAMPLE.match(line)
            if match is None:
                continue
            labels = match.group(2) or ""
            if match.group(1) == "raftbench_loop_turns_total":
                turns[labels.split('"')[1]] = float(match.group(3))
            elif 'direction="sent"' in labels:
                sent += float(match.group(3))
        out[node] = (stat.cpu, *turns.values(), float(_switches(pid)), sent)
    return out


def _print(
    title: str,
    before: dict[str, tuple[float, ...]],
    after: dict[str, tuple[float, ...]],
    per: float,
    leader: str,
) -> None:
    print(f"  {title}")
    rows = {}
    for node, start in before.items():
        deltas = [(a - b) / per for a, b in zip(after[node], start, strict=True)]
        deltas[0] *= 1000.0
        rows[node + (" (leader)" if node == leader else "")] = deltas
    rows["all"] = [sum(column) for column in zip(*rows.values(), strict=True)]
    for name, (cpu, inputs, timers, nothing, switches, sent) in rows.items():
        turns = inputs + timers + nothing
        print(
            f"    {name:12} cpu {cpu:7.3f} ms  turns {turns:6.2f} (input {inputs:.2f}, "
            f"timer {timers:.2f}, nothing {nothing:.2f})  switches {switches:6.2f}  "
            f"sent {sent:6.2f}"
        )


def measure(protocol: str, idle: float, writes: int) -> None:
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster.up(
            Path(tmp) / "c", ClusterSpec(nodes=3, protocol=protocol, seed=1)
        ) as cluster,
    ):
        leader = cluster.wait_for_leader()
        with httpx.Client(trust_env=False, timeout=5.0) as http:
            time.sleep(2.0)
            before = _reading(cluster, http)
            time.sleep(idle)
            after = _reading(cluster, http)
            print(f"{protocol}: leader {leader}")
            _print(f"at rest, per second ({idle:.0f} s)", before, after, idle, leader)
            url = cluster.url(leader)
            value = "x" * 100
            with httpx.Client(trust_env=False, timeout=5.0) as writer:
                for i in range(20):  # warm the connection and the code paths
                    writer.put(f"{url}/kv/w{i}", json={"value": value})
                before = _reading(cluster, http)
                failed = []
                for i in range(writes):
                    response = writer.put(f"{url}/kv/k{i % 1000}", json={"value": value})
                    if response.status_code != 200:
                        failed.append(f"{response.status_code} {response.text}")
                after = _reading(cluster, http)
            _print(f"W=1, per write ({writes} writes)", before, after, writes, leader)
            for failure in failed:  # e.g. a leader change on a starved machine
                print(f"    failed: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", nargs="+", default=["push", "pull"])
    parser.add_argument("--idle", type=float, default=10.0)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    for protocol in args.protocols:
        measure(protocol, args.idle, args.writes)


if __name__ == "__main__":
    main()
