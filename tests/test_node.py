"""Three real node processes on loopback: election, writes and reads, the kv command, peer
authentication counted in /metrics, the data-directory lock, clean shutdown.

Ports are chosen by the OS. The test waits for each node's "ready" line and then for a leader
through the client (bounded by a generous deadline); nothing is asserted about elapsed time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import msgpack
import pytest

from cluster.client import RaftbenchClient, set_disk_delay, set_links
from cluster.config import CLUSTER_FILE, ClusterConfig, local_cluster_config, write_cluster_config
from cluster.framing import (
    NONCE_BYTES,
    DialerHandshake,
    FrameDecoder,
    FrameKind,
    RawFrame,
    pack_frame,
)

pytestmark = pytest.mark.anyio

DEADLINE = 60.0  # guards against hangs only
PYTHON = sys.executable


@dataclass
class RunningCluster:
    directory: Path
    config: ClusterConfig
    processes: dict[str, anyio.abc.Process]

    @property
    def endpoints(self) -> list[str]:
        return list(self.config.client_urls().values())


def node_command(directory: Path, node_id: str, *extra: str) -> list[str]:
    return [
        PYTHON,
        "-m",
        "raftbench",
        "node",
        "--config",
        str(directory / CLUSTER_FILE),
        "--id",
        node_id,
        "--protocol",
        "push",
        *extra,
    ]


async def read_line(process: anyio.abc.Process) -> str:
    assert process.stdout is not None
    data = b""
    while not data.endswith(b"\n"):
        data += await process.stdout.receive(1)
    return data.decode().strip()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[RunningCluster]:
    config = local_cluster_config(3, election_timeout=0.5, heartbeat_interval=0.05)
    write_cluster_config(config, tmp_path / CLUSTER_FILE)
    processes: dict[str, anyio.abc.Process] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for member in config.members:
            processes[member.id] = await anyio.open_process(
                node_command(tmp_path, member.id), stderr=subprocess.PIPE, env=env
            )
        with anyio.fail_after(DEADLINE):
            for member in config.members:
                line = await read_line(processes[member.id])
                assert line == (
                    f"ready {member.id} peer={member.peer} client={member.client.url}"
                ), line
        yield RunningCluster(tmp_path, config, processes)
    finally:
        for process in processes.values():
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def stop(process: anyio.abc.Process) -> int:
    process.send_signal(signal.SIGTERM)
    with anyio.fail_after(DEADLINE):
        return await process.wait()


async def test_three_nodes_elect_a_leader_and_serve_writes_and_reads(
    cluster: RunningCluster,
) -> None:
    async with RaftbenchClient(cluster.endpoints, timeout=DEADLINE) as client:
        assert (await client.put("greeting", "hello")).ok
        assert (await client.get("greeting")).value == "hello"
        assert (await client.cas("greeting", "hello", "bye")).ok
        assert client.leader is not None
        async with httpx.AsyncClient(trust_env=False, timeout=DEADLINE) as http:
            # A follower applies the write when the leader's next message tells it the commit
            # index, and under load the leader may change after the client last saw it: poll
            # (a real process offers nothing to wait on) for one leader that the others
            # follow, each having applied the write.
            with anyio.fail_after(DEADLINE):
                while True:
                    found = await settled_leader(http, cluster.endpoints)
                    if found is not None:
                        leader_url, statuses = found
                        followers = [e for e in cluster.endpoints if e != leader_url]
                        values = [
                            (await http.get(f"{e}/kv/greeting?consistency=local")).json()["value"]
                            for e in followers
                        ]
                        if values == ["bye"] * len(followers):
                            break
                    await anyio.sleep(0.05)
        leader = statuses[leader_url]
        assert leader["role"] == "leader" and leader["commit_index"] >= 3
        for endpoint in followers:
            status = statuses[endpoint]
            assert status["role"] == "follower" and status["leader_url"] == leader_url

        # The signed admin hooks reach the running node.
        secret = cluster.config.secret_bytes
        answer = await set_disk_delay(leader_url, secret, 0.001)
        assert answer == {"fsync_delay_seconds": 0.001}
        peer = leader["peers_seen"][0]
        answer = await set_links(leader_url, secret, {peer: {"delay_ms": 1.0}})
        assert answer["links"][peer]["delay_ms"] == 1.0
        assert (await client.put("greeting", "again")).ok

    for node_id, process in cluster.processes.items():
        assert await stop(process) == 0, node_id


async def settled_leader(
    http: httpx.AsyncClient, endpoints: list[str]
) -> tuple[str, dict[str, dict[str, Any]]] | None:
    """(leader URL, every node's /status) when exactly one node leads and every other one
    follows it; None while that is not so."""
    statuses = {e: (await http.get(f"{e}/status")).json() for e in endpoints}
    leaders = [e for e, s in statuses.items() if s["role"] == "leader"]
    if len(leaders) != 1:
        return None
    (leader,) = leaders
    for endpoint, status in statuses.items():
        if endpoint != leader and (status["role"], status["leader_url"]) != ("follower", leader):
            return None
    return leader, statuses


async def test_kv_command_puts_and_gets_through_the_cluster_folder(
    cluster: RunningCluster,
) -> None:
    async def kv(*args: str) -> tuple[int, str, str]:
        command = [PYTHON, "-m", "raftbench", "kv", *args, "--dir", str(cluster.directory)]
        with anyio.fail_after(DEADLINE):
            done = await anyio.run_process(command, check=False)
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    assert await kv("put", "k", "v") == (0, "OK\n", "")
    assert await kv("get", "k") == (0, "v\n", "")
    code, _, err = await kv("cas", "k", "nope", "w")
    assert code == 1 and "cas failed: k is 'v', not 'nope'" in err
    assert await kv("delete", "k") == (0, "OK\n", "")
    code, out, err = await kv("get", "k")
    assert (code, out) == (0, "") and "not found" in err


async def test_forged_peer_messages_are_refused_and_counted_in_metrics(
    cluster: RunningCluster,
) -> None:
    target = cluster.config.members[0]
    # 1. Someone without the secret: the handshake fails at the proof.
    stream = await anyio.connect_tcp(target.peer.host, target.peer.port)
    async with stream:
        dialer = DialerHandshake(b"not-the-cluster-secret!!", "n2", target.id, bytes(NONCE_BYTES))
        await stream.send(dialer.hello())
        await _next_frame(stream)  # the challenge, which we cannot answer
        await stream.send(pack_frame(FrameKind.AUTH, msgpack.packb([bytes(32)])))
        await _wait_closed(stream)
    # 2. A member's session with a frame whose MAC is forged. The real n3 is stopped first:
    # alive, it would redial when our session replaced its own, and its new session would end
    # ours, perhaps before the node has read the forged frame.
    assert await stop(cluster.processes["n3"]) == 0
    stream = await anyio.connect_tcp(target.peer.host, target.peer.port)
    async with stream:
        decoder = FrameDecoder(1 << 20)
        dialer = DialerHandshake(cluster.config.secret_bytes, "n3", target.id, b"\x01" * 16)
        await stream.send(dialer.hello())
        await stream.send(dialer.on_challenge(await _next_frame(stream, decoder)))
        dialer.on_welcome(await _next_frame(stream, decoder))
        await stream.send(pack_frame(FrameKind.DATA, b"\x00" * 40))

    async with httpx.AsyncClient(trust_env=False) as http:
        with anyio.fail_after(DEADLINE):
            while True:
                metrics = (await http.get(target.client.url + "/metrics")).text
                if 'reason="mac"} 1' in metrics.replace('peer="n3",', ""):
                    break
    assert 'raftbench_transport_rejections_total{reason="handshake-bad-proof"} 1' in metrics
    assert 'raftbench_peer_rejected_total{peer="n3",reason="mac"} 1' in metrics


async def _next_frame(
    stream: anyio.abc.SocketStream, decoder: FrameDecoder | None = None
) -> RawFrame:
    decoder = decoder or FrameDecoder(1 << 20)
    with anyio.fail_after(DEADLINE):
        while True:
            frames = decoder.feed(await stream.receive())
            if frames:
                return frames[0]


async def _wait_closed(stream: anyio.abc.SocketStream) -> None:
    with anyio.fail_after(DEADLINE):
        try:
            while await stream.receive():
                pass
        except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
            return


async def test_a_second_node_on_the_same_data_directory_fails_clearly(
    cluster: RunningCluster,
) -> None:
    command = node_command(cluster.directory, "n1")
    result = await anyio.run_process(command, check=False)
    assert result.returncode == 2
    assert b"in use by another store" in result.stderr
    assert result.stdout == b""
