"""A cluster of `raftbench node` processes on the inventory's hosts, driven over SSH.

Why a `LocalCluster` subclass: everything that talks to the nodes over HTTP (status, leader,
round trips, the nemesis's signed shaper and disk requests) is the same whether a node runs here
or on another machine; only starting, signalling and watching the processes differ, and those
go through `cluster.host_agent` on the host, over the pool's SSH connections. Partitions are
nftables rules on the sender's host when the SSH user may run `nft` there (`firewall`), else
the nodes' signed shaper API, as on loopback. So the nemesis,
`RaftbenchTarget`, the driver and the sampler take an `SshCluster` as they take a local one.

Locally (the control machine) a cluster folder holds `cluster.toml` (secret inline, mode 0600),
and `hosts-state.json` (the inventory it came from, the remote folder name, the pids). On each
node host it lives in ``WORK/clusters/<name>/`` (see cluster.host_agent); the node runs the
deployed venv's Python. Member i is the inventory's i-th node host, at its address with the
inventory's peer and client ports, in its region; the network between the hosts is the
topology (no emulated delay is added).

While nodes run, one `host_agent monitor` per host streams every node's pid, state and CPU over
SSH (every 100 ms): that is what `is_alive`, `process_state` and the sampler's CPU read. The
same stream takes the nemesis's signals (kill, pause, ...), so a fault lands about one round
trip after it is asked for, without a process started on the host for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shlex
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cluster.config import (
    CLUSTER_FILE,
    Address,
    ClusterConfig,
    ConfigError,
    MemberConfig,
    load_cluster_config,
    write_cluster_config,
)
from cluster.deploy import deployed_digest, venv_python
from cluster.inventory import Host, InventoryError, load_inventory
from cluster.launcher import (
    STDERR_TAIL_LINES,
    ClusterSpec,
    DownReport,
    LauncherError,
    LocalCluster,
    NodeRecord,
)
from cluster.netns import nft_script
from cluster.procfs import ProcStat
from cluster.ssh import ClockSample, HostError, HostPool, Stream
from cluster.target import RaftbenchTarget
from protocols.config import SyncSettings
from protocols.types import NodeId

HOSTS_STATE_FILE = "hosts-state.json"
HOSTS_STATE_VERSION = 1
MONITOR_INTERVAL = 0.1
MONITOR_FRESH = 1.0  # seconds a monitor reading stands in for asking the host


class SshCluster(LocalCluster):
    """See the module docstring."""

    def __init__(
        self,
        pool: HostPool,
        directory: Path,
        config: ClusterConfig,
        protocol: str,
        records: dict[NodeId, NodeRecord],
        *,
        name: str,
        start_timeout: float = 30.0,
        seed: int | None = None,
        log_level: str = "warning",
    ) -> None:
        super().__init__(
            directory,
            config,
            protocol,
            records,
            start_timeout=start_timeout,
            seed=seed,
            log_level=log_level,
        )
        self.pool = pool
        self.inventory = pool.inventory
        self.name = name
        self.hosts: dict[NodeId, Host] = pool.inventory.members(len(config.members))
        # node -> (when, pid, state, CPU seconds, resident bytes) as the host's monitor last said
        self._seen: dict[NodeId, tuple[float, int | None, str, float, int | None]] = {}
        self._changed: dict[NodeId, float] = {}
        self._monitors: dict[NodeId, Stream] = {}
        self._waiting: dict[int, tuple[threading.Event, dict[str, Any]]] = {}
        self._request_id = 0
        self._lock = threading.Lock()
        # `down` stops the nodes from one thread each, and each rewrites the state file: one
        # writer at a time, or two renames of the same temporary file race
        self._state_lock = threading.Lock()
        self._firewall: bool | None = None

    # ---- creating and opening --------------------------------------------------------------

    @classmethod
    def create_on_hosts(
        cls, pool: HostPool, directory: Path | str, spec: ClusterSpec
    ) -> SshCluster:
        """Write the cluster folder here and on every node host; start nothing yet.

        Fails before anything starts when a host is unreachable, untrusted, has no Python, or
        has no deployed raftbench."""
        spec.validate()
        directory = Path(directory).absolute()
        if (directory / CLUSTER_FILE).exists():
            raise LauncherError(f"{directory} already holds a cluster ({CLUSTER_FILE})")
        try:
            hosts = pool.inventory.members(spec.nodes)
        except InventoryError as error:
            raise LauncherError(str(error)) from None
        pool.check(tuple(hosts.values()))
        missing = [h.name for h in hosts.values() if deployed_digest(pool, h) is None]
        if missing:
            raise LauncherError(
                f"raftbench is not deployed on {', '.join(missing)}: run "
                f"`raftbench hosts deploy --hosts {pool.inventory.path}` first"
            )
        inventory = pool.inventory
        members = tuple(
            MemberConfig(
                id=node_id,
                peer=Address(host.address, inventory.peer_port),
                client=Address(host.address, inventory.client_port),
                region=host.region,
                priority=float(spec.priorities.get(node_id, 1.0)),
            )
            for node_id, host in hosts.items()
        )
        try:
            config = ClusterConfig.build(
                members=members,
                secret=secrets.token_hex(32),
                election_timeout=spec.election_timeout,
                heartbeat_interval=spec.heartbeat_interval,
                request_timeout=spec.request_timeout,
                fsync=spec.fsync,
                sync=SyncSettings(policy=spec.sync_policy) if spec.sync_policy else SyncSettings(),
            )
        except ConfigError as error:
            raise LauncherError(str(error)) from None
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CLUSTER_FILE
        write_cluster_config(config, path)
        os.chmod(path, 0o600)
        name = f"{directory.name[:40]}-{secrets.token_hex(3)}"
        cluster = cls(
            pool,
            directory,
            load_cluster_config(path),
            spec.protocol,
            {node_id: NodeRecord(node_id) for node_id in hosts},
            name=name,
            start_timeout=spec.start_timeout,
            seed=spec.seed,
            log_level=spec.log_level,
        )
        for node_id, host in hosts.items():
            pool.put(host, [(path, f"{cluster.remote_dir(node_id)}/{CLUSTER_FILE}")], 0o600)
        cluster._write_state()
        return cluster

    @classmethod
    def open_on_hosts(
        cls, directory: Path | str, *, accept_new_host_keys: bool = False
    ) -> SshCluster:
        """A folder written by `create_on_hosts`, with a new pool to its inventory's hosts."""
        directory = Path(directory).absolute()
        state_path = directory / HOSTS_STATE_FILE
        if not state_path.is_file():
            raise LauncherError(f"{directory}: no {HOSTS_STATE_FILE} (no cluster on hosts here)")
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            if state.get("version") != HOSTS_STATE_VERSION:
                raise ValueError(f"unknown state version {state.get('version')}")
            inventory = load_inventory(state["inventory"])
            config = load_cluster_config(directory / CLUSTER_FILE)
            records = {str(r["node_id"]): NodeRecord.from_json(r) for r in state["nodes"]}
            if sorted(records) != sorted(config.member_ids):
                raise ValueError(f"nodes {sorted(records)} are not the members of {CLUSTER_FILE}")
            seed = state.get("seed")
            pool = HostPool(inventory, accept_new_host_keys=accept_new_host_keys)
            return cls(
                pool,
                directory,
                config,
                str(state["protocol"]),
                records,
                name=str(state["name"]),
                start_timeout=float(state.get("start_timeout", 30.0)),
                seed=seed if isinstance(seed, int) else None,
                log_level=str(state.get("log_level", "warning")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise LauncherError(f"{state_path}: unreadable state: {error}") from None
        except (ConfigError, InventoryError) as error:
            raise LauncherError(str(error)) from None

    def remote_dir(self, node_id: NodeId) -> str:
        return f"{self.hosts[node_id].work_dir}/clusters/{self.name}"

    def _agent(self, node_id: NodeId, command: str, *args: str) -> str:
        host = self.hosts[node_id]
        line = [venv_python(host), "-m", "cluster.host_agent", command]
        line += ["--dir", self.remote_dir(node_id), "--id", node_id, *args]
        return shlex.join(line)

    # ---- processes ---------------------------------------------------------------------------

    def start(self, node_ids: Sequence[NodeId] | None = None) -> None:
        """Start the given nodes (default: all not running) on their hosts, in parallel, and
        wait for their `ready` lines; on failure the ones this call started are killed."""
        wanted = [n for n in (node_ids or self.node_ids) if not self.is_alive(n)]
        errors: list[str] = []
        started: list[NodeId] = []

        def one(node_id: NodeId) -> None:
            try:
                self._spawn(node_id)
                started.append(node_id)
            except (HostError, LauncherError) as error:
                errors.append(str(error))

        with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as workers:
            list(workers.map(one, wanted))
        if errors:
            for node_id in started:
                with contextlib.suppress(HostError, LauncherError):
                    self.kill(node_id)
            raise LauncherError("; ".join(sorted(errors)))
        self._start_monitors()

    def _spawn(self, node_id: NodeId) -> None:
        record = self.records[node_id]
        args = ["--timeout", str(self.start_timeout), "--", "--protocol", self.protocol]
        args += ["--log-level", self.log_level]
        if self.seed is not None:
            index = self.node_ids.index(node_id)
            args += ["--seed", str(self.seed + index + 1000 * record.starts)]
        answer = self.pool.run_json(
            self.hosts[node_id],
            self._agent(node_id, "start", *args),
            timeout=self.start_timeout + 30.0,
        )
        if "error" in answer:
            raise LauncherError(f"{node_id} on {self.hosts[node_id].name}: {answer['error']}")
        with self._lock:
            record.pid = int(answer["pid"])
            record.start_ticks = int(answer["ticks"])
            record.starts += 1
            self._changed[node_id] = time.monotonic()
            self._write_state()

    def _signal(self, node_id: NodeId, name: str, wait: float = 10.0) -> str:
        """Signal the node through its host's monitor (no process to start: the fault lands in
        about a round trip), or a one-off agent when no monitor runs."""
        answer = self._signal_by_monitor(node_id, name, wait)
        if answer is None:
            answer = self.pool.run_json(
                self.hosts[node_id],
                self._agent(node_id, "signal", "--signal", name, "--wait", str(wait)),
                timeout=wait + 30.0,
            )
        result = str(answer.get("result"))
        if result in ("not-running", "stopped", "killed"):
            self._forget(node_id)
        return result

    def _signal_by_monitor(self, node_id: NodeId, name: str, wait: float) -> dict[str, Any] | None:
        stream = self._monitors.get(node_id)
        if stream is None:
            return None
        with self._lock:
            self._request_id += 1
            request_id = self._request_id
            done = threading.Event()
            self._waiting[request_id] = (done, {})
        try:
            stream.write(
                json.dumps({"id": request_id, "node": node_id, "signal": name, "wait": wait})
            )
            if not done.wait(wait + 30.0):
                return None
            return self._waiting[request_id][1]
        except HostError:
            return None
        finally:
            self._waiting.pop(request_id, None)

    def kill(self, node_id: NodeId) -> bool:
        return self._signal(node_id, "KILL") == "killed"

    def stop_node(self, node_id: NodeId, grace: float = 5.0) -> str | None:
        result = self._signal(node_id, "TERM", grace)
        return result if result in ("stopped", "killed") else None

    def pause(self, node_id: NodeId) -> None:
        if self._signal(node_id, "STOP") != "signalled":
            raise LauncherError(f"{node_id} is not running")
        self._changed[node_id] = time.monotonic()
        self._seen.pop(node_id, None)

    def resume(self, node_id: NodeId) -> None:
        if self._signal(node_id, "CONT") != "signalled":
            raise LauncherError(f"{node_id} is not running")
        self._changed[node_id] = time.monotonic()
        self._seen.pop(node_id, None)

    def down(self, purge: bool = False, grace: float = 5.0) -> DownReport:
        """SIGTERM every node this cluster started (SIGKILL after `grace`), on every host;
        `purge` also removes the folders, here and there."""
        stopped: list[NodeId] = []
        killed: list[NodeId] = []
        problems: list[str] = []

        def one(node_id: NodeId) -> None:
            try:
                result = self._signal(node_id, "TERM", grace)
            except HostError as error:
                problems.append(str(error))
                return
            if result == "stopped":
                stopped.append(node_id)
            elif result == "killed":
                killed.append(node_id)
            elif result == "still-running":
                problems.append(f"{node_id}: still running after SIGKILL")

        with ThreadPoolExecutor(max_workers=max(1, len(self.node_ids))) as workers:
            list(workers.map(one, self.node_ids))
        self._stop_monitors()
        if self._firewall:  # no cut outlives the cluster (a crashed run's included)
            for node_id in self.node_ids:
                try:
                    self.block_outgoing(node_id, [])
                except LauncherError as error:
                    problems.append(str(error))
        if purge:
            self.purge_hosts()
            for path in (self.directory / CLUSTER_FILE, self.directory / HOSTS_STATE_FILE):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.directory.rmdir()
        else:
            self._write_state()
        return DownReport(
            tuple(sorted(stopped)), tuple(sorted(killed)), (), tuple(sorted(problems))
        )

    @property
    def firewall(self) -> bool:
        """Whether the SSH user may run nft on every node host (asked once): partitions are
        then nftables rules on the sender's host, else the nodes' signed shaper API."""
        if self._firewall is None:
            try:
                self._firewall = all(
                    self.pool.run(host, "nft list tables >/dev/null").exit_status == 0
                    for host in self.hosts.values()
                )
            except HostError:
                self._firewall = False
        return self._firewall

    def block_outgoing(self, node_id: NodeId, peers: Sequence[NodeId]) -> None:
        addresses = [self.config.member(peer).peer.host for peer in peers]
        try:
            done = self.pool.run(self.hosts[node_id], "nft -f -", stdin=nft_script(addresses))
        except (HostError, ValueError) as error:
            raise LauncherError(f"{node_id}: nft: {error}") from None
        if done.exit_status != 0:
            raise LauncherError(f"{node_id}: nft exited {done.exit_status}: {done.stderr.strip()}")

    def purge_hosts(self) -> None:
        """Remove the cluster's folder (data, logs, pid files) from every node host."""
        for node_id, host in self.hosts.items():
            with contextlib.suppress(HostError):
                self.pool.run(host, f"rm -rf {shlex.quote(self.remote_dir(node_id))}")

    def fetch_logs(self, into: Path) -> list[Path]:
        """Bring every node's stdout/stderr home over SFTP (into `into/<id>.out|.err`)."""
        fetched = []
        for node_id, host in self.hosts.items():
            for suffix in ("out", "err"):
                local = into / f"{node_id}.{suffix}"
                remote = f"{self.remote_dir(node_id)}/logs/{node_id}.{suffix}"
                with contextlib.suppress(HostError):
                    if self.pool.get(host, remote, local):
                        fetched.append(local)
        return fetched

    def stderr_tail(self, node_id: NodeId) -> str:
        remote = f"{self.remote_dir(node_id)}/logs/{node_id}.err"
        try:
            done = self.pool.run(
                self.hosts[node_id], f"tail -n {STDERR_TAIL_LINES} {shlex.quote(remote)}"
            )
        except HostError as error:
            return f" (its stderr could not be read: {error})"
        text = done.stdout.strip()
        if not text:
            return f" (nothing on stderr; see {self.hosts[node_id].name}:{remote})"
        return f"; its stderr ({self.hosts[node_id].name}:{remote}) ends with:\n  " + (
            "\n  ".join(text.splitlines())
        )

    # ---- watching ----------------------------------------------------------------------------

    def _identity(self, node_id: NodeId) -> str:
        record = self.records[node_id]
        if record.pid is None:
            return "gone"
        seen = self._seen.get(node_id)
        fresh = (
            seen is not None
            and seen[0] >= self._changed.get(node_id, 0.0)
            and time.monotonic() - seen[0] < MONITOR_FRESH
        )
        if not fresh:
            self._ask(node_id)
            seen = self._seen.get(node_id)
        if seen is None or seen[1] is None:
            return "gone"
        if seen[1] != record.pid:
            return "other"
        return "paused" if seen[2] in ("T", "t") else "running"

    def process_stat(self, node_id: NodeId) -> ProcStat | None:
        """State, CPU and resident bytes from the host's monitor (None: gone or unknown)."""
        record = self.records[node_id]
        seen = self._seen.get(node_id)
        if record.pid is None or seen is None or seen[1] != record.pid:
            return None
        return ProcStat(seen[1], seen[2], record.start_ticks or 0, seen[3], seen[4])

    def _ask(self, node_id: NodeId) -> None:
        answer = self.pool.run_json(self.hosts[node_id], self._agent(node_id, "stats"))
        self._note(node_id, answer.get(node_id), time.monotonic())

    def _note(self, node_id: NodeId, value: Any, at: float) -> None:
        """Keep what a host said of a node: [pid, state, cpu, rss] (rss: bytes or null)."""
        if isinstance(value, list) and len(value) == 4:
            rss = None if value[3] is None else int(value[3])
            self._seen[node_id] = (at, int(value[0]), str(value[1]), float(value[2]), rss)
        else:
            self._seen[node_id] = (at, None, "gone", 0.0, None)

    def _start_monitors(self) -> None:
        for node_id, host in self.hosts.items():
            if node_id in self._monitors:
                continue
            command = self._agent(node_id, "monitor", "--interval", str(MONITOR_INTERVAL))

            def on_line(line: str, node_id: NodeId = node_id) -> None:
                at = time.monotonic()
                try:
                    message = json.loads(line)
                    if "reply" in message:
                        waiting = self._waiting.get(message["reply"])
                        if waiting is not None:
                            waiting[1].update(message)
                            waiting[0].set()
                        return
                    nodes = message["nodes"]
                except (ValueError, KeyError, TypeError, AttributeError):
                    return
                self._note(node_id, nodes.get(node_id), at)

            self._monitors[node_id] = self.pool.start_stream(host, command, on_line)

    def _stop_monitors(self) -> None:
        monitors = list(self._monitors.values())
        self._monitors.clear()
        for stream in monitors:
            stream.stop()

    # ---- state -------------------------------------------------------------------------------

    def _reap(self, pid: int) -> None:
        """Nothing to reap: the node processes are the hosts' children, not ours."""

    def _write_state(self) -> None:
        with self._state_lock:
            self._write_state_alone()

    def _write_state_alone(self) -> None:
        if not self.directory.is_dir():
            return
        state = {
            "version": HOSTS_STATE_VERSION,
            "inventory": str(self.inventory.path),
            "name": self.name,
            "protocol": self.protocol,
            "start_timeout": self.start_timeout,
            "seed": self.seed,
            "log_level": self.log_level,
            "hosts": {n: h.name for n, h in self.hosts.items()},
            "nodes": [self.records[n].to_json() for n in self.node_ids],
        }
        path = self.directory / HOSTS_STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def clocks(self) -> dict[NodeId, ClockSample]:
        """Each node host's clock offset against this machine (see `HostPool.clock`)."""
        return {n: self.pool.clock(h, venv_python(h)) for n, h in self.hosts.items()}


class SshTarget(RaftbenchTarget):
    """The driver's seam (`cluster.target.Target`) over an `SshCluster`: the nodes on the
    hosts, with the hosts' clock offsets and the RTT matrix the nodes measured recorded in
    the run metadata (`describe`)."""

    def __init__(self, cluster: SshCluster, rng: random.Random | None = None) -> None:
        super().__init__(cluster, rng)
        self.ssh = cluster
        self.clock_samples: dict[NodeId, ClockSample] = {}
        self.rtt: dict[NodeId, dict[NodeId, float | None]] = {}

    def measure(self) -> None:
        """Clock offsets of the hosts and the nodes' RTT matrix, now."""
        self.clock_samples = self.ssh.clocks()
        matrix = self.ssh.rtt_matrix()
        if any(v is not None for row in matrix.values() for v in row.values()):
            self.rtt = matrix

    def describe(self) -> dict[str, Any]:
        hosts = []
        for node_id, host in self.ssh.hosts.items():
            sample = self.clock_samples.get(node_id)
            hosts.append(
                {
                    "node": node_id,
                    "host": host.name,
                    "address": host.address,
                    "region": host.region,
                    "python": self.ssh.pool.pythons.get(host.name),
                    "clock": sample.to_json() if sample else None,
                }
            )
        return {
            "kind": self.kind,
            "hosts": hosts,
            "inventory": str(self.ssh.inventory.path),
            "regions": {n: h.region for n, h in self.ssh.hosts.items()},
            "rtt_matrix_ms": self.rtt,
            "rtt_source": "each node's own pings to its peers (median), read from /status",
            "clock_method": "NTP-style over the SSH channel: offset = host time - midpoint of "
            "the round trip, residual = half the round trip (best of 7)",
            "load_generators": "on the control machine (this one)",
            "partitions": "nftables on the sender's host"
            if self.ssh._firewall
            else "the nodes' signed shaper API",
        }

    def down(self) -> None:
        with contextlib.suppress(Exception):  # the nodes' measurements, while they still run
            matrix = self.ssh.rtt_matrix()
            if any(v is not None for row in matrix.values() for v in row.values()):
                self.rtt = matrix
        try:
            self.ssh.down()
            self.ssh.fetch_logs(self.ssh.directory / "logs")  # kept with the run's --work-dir
        finally:
            self.ssh.purge_hosts()  # a run leaves nothing on the hosts


__all__ = ["HOSTS_STATE_FILE", "SshCluster", "SshTarget"]
