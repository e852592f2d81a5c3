"""A local cluster of `raftbench node` processes: generate its files, start, watch, stop.

`LocalCluster` is what the `raftbench cluster` command, the tests and the scenario driver use.
A cluster lives in one folder::

    DIR/cluster.toml          the cluster file every node reads (cluster.config)
    DIR/secret.key            the shared secret, mode 0600 (cluster.toml names it)
    DIR/cluster-state.json    protocol, node processes, namespace layout: what `status` and
                              `down` read, possibly from another process
    DIR/data/<id>/            each node's log
    DIR/logs/<id>.out|.err    each node's stdout (the `ready` line) and stderr

Nodes run as separate sessions (`start_new_session`), so they outlive the command that started
them. Stopping is careful not to hit anything else: a pid from the state file is signalled only
if the process still has the start time recorded when it was started and a command line naming
this cluster's file (a pid reused by an unrelated process is left alone); signals go through a
pidfd, so the check and the signal concern the same process.

With ``netns=True`` each node runs in its own network namespace (see cluster.netns) at
10.77.S.(10+i), peer port 7000 and client port 8000, reachable from the host through the bridge.
WAN delay, jitter and loss come from each node's link shaper in both modes: the cluster
file's [topology] table is applied by every node at start.

Blocking methods (start, stop, waiting for a leader) poll real processes with bounded
deadlines; async callers run them in a worker thread (the nemesis does).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from cluster import netns as netns_mod
from cluster.admin import AUTH_HEADER, admin_signature
from cluster.config import (
    CLUSTER_FILE,
    Address,
    ClusterConfig,
    ConfigError,
    MemberConfig,
    Topology,
    free_ports,
    load_cluster_config,
    parse_cluster_config,
    write_cluster_config,
)
from cluster.procfs import ProcStat, read_stat, start_ticks
from cluster.storage import FsyncPolicy
from cluster.tls import shared_tls_context
from protocols.config import SyncSettings
from protocols.engines import ENGINES
from protocols.types import NodeId

STATE_FILE = "cluster-state.json"
SECRET_FILE = "secret.key"
DEFAULT_DIR = Path("raftbench-cluster")
NETNS_PEER_PORT = 7000
NETNS_CLIENT_PORT = 8000
STATE_VERSION = 1
POLL = 0.05  # seconds between looks at a starting node's stdout
STDERR_TAIL_LINES = 20


class LauncherError(Exception):
    """The cluster cannot be created, started or found; the message says why."""


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    """What `LocalCluster.create` builds. Times in seconds."""

    nodes: int = 3
    protocol: str = "push"
    sync_policy: str | None = None  # pull engine; None: the config's default ("nearest")
    max_pullers: int | None = None  # pull engine, `spread`; None: the default (2)
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    election_timeout: float = 1.0
    heartbeat_interval: float = 0.1
    request_timeout: float = 3.0
    snapshot_entries: int = 0  # log compaction thresholds (cluster file); 0: off
    snapshot_bytes: int = 0
    regions: tuple[str, ...] = ()  # one per node, in order; () or fewer: "default"
    priorities: Mapping[NodeId, float] = field(default_factory=dict)
    topology: Topology = field(default_factory=Topology)
    netns: bool = False
    host: str = "127.0.0.1"  # loopback mode: the address every node binds
    base_port: int | None = None  # loopback mode: peer ports base+2i, client ports base+2i+1
    start_timeout: float = 30.0  # per start: how long a node may take to print `ready`
    seed: int | None = None  # node i gets seed+i; None: each node seeds from the OS
    log_level: str = "warning"
    bootstrap: bool = False  # n1 forms a cluster of one; the others start joining
    voters: int = 0  # > 0: the first this many form the cluster, the others start joining

    def sync_settings(self) -> SyncSettings:
        """The pull engine's sync settings this spec asks for (defaults where it says None)."""
        settings = SyncSettings()
        if self.sync_policy is not None:
            settings = replace(settings, policy=self.sync_policy)
        if self.max_pullers is not None:
            settings = replace(settings, max_pullers=self.max_pullers)
        return settings

    def validate(self) -> ClusterSpec:
        if self.nodes < 1:
            raise LauncherError(f"--nodes: must be >= 1, got {self.nodes}")
        if not 0 <= self.voters <= self.nodes:
            raise LauncherError(f"voters: must be in [0, {self.nodes}], got {self.voters}")
        if self.protocol not in ENGINES:
            raise LauncherError(
                f"--protocol: unknown {self.protocol!r} (one of {', '.join(sorted(ENGINES))})"
            )
        if self.sync_policy is not None and self.sync_policy not in SyncSettings.POLICIES:
            raise LauncherError(
                f"--sync-policy: unknown {self.sync_policy!r} "
                f"(one of {', '.join(SyncSettings.POLICIES)})"
            )
        if self.max_pullers is not None and self.max_pullers < 1:
            raise LauncherError(f"--max-pullers: must be >= 1, got {self.max_pullers}")
        if len(self.regions) > self.nodes:
            raise LauncherError(f"regions: {len(self.regions)} given for {self.nodes} nodes")
        if not self.start_timeout > 0:
            raise LauncherError("start_timeout: must be > 0")
        return self


@dataclass(slots=True)
class NodeRecord:
    """One node process as the state file knows it (pid None: not running)."""

    node_id: NodeId
    pid: int | None = None
    start_ticks: int | None = None  # /proc/<pid>/stat field 22: identifies the process
    starts: int = 0  # how often it was started (restarts included)

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "pid": self.pid,
            "start_ticks": self.start_ticks,
            "starts": self.starts,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeRecord:
        pid, ticks = data.get("pid"), data.get("start_ticks")
        return cls(
            node_id=str(data["node_id"]),
            pid=int(pid) if pid is not None else None,
            start_ticks=int(ticks) if ticks is not None else None,
            starts=int(data.get("starts", 0)),
        )


@dataclass(frozen=True, slots=True)
class NodeView:
    """One row of `cluster status`: the process and what its /status says (None: no answer)."""

    node_id: NodeId
    pid: int | None
    state: str  # running | paused | stopped
    status: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class DownReport:
    stopped: tuple[NodeId, ...]  # stopped by SIGTERM
    killed: tuple[NodeId, ...]  # needed SIGKILL after the grace period
    not_ours: tuple[NodeId, ...]  # a recorded pid now belongs to another process: left alone
    problems: tuple[str, ...] = ()  # namespace teardown problems


class LocalCluster:
    """A cluster folder and its node processes; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        config: ClusterConfig,
        protocol: str,
        records: dict[NodeId, NodeRecord],
        *,
        layout: netns_mod.NetnsLayout | None = None,
        start_timeout: float = 30.0,
        seed: int | None = None,
        log_level: str = "warning",
    ) -> None:
        self.directory = directory
        self.config = config
        self.protocol = protocol
        self.records = records
        self.layout = layout
        self.start_timeout = start_timeout
        self.seed = seed
        self.log_level = log_level
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # started by this object

    # ---- creating and opening --------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path | str, spec: ClusterSpec) -> LocalCluster:
        """Write a new cluster folder (config, secret, state); start nothing yet.

        Refuses a folder that already holds a cluster file.
        """
        spec.validate()
        directory = Path(directory).absolute()
        if (directory / CLUSTER_FILE).exists():
            raise LauncherError(f"{directory} already holds a cluster ({CLUSTER_FILE})")
        if spec.netns:
            netns_mod.check_prerequisites()
        directory.mkdir(parents=True, exist_ok=True)
        secret_path = directory / SECRET_FILE
        secret = secrets.token_hex(32)
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secret + "\n")
        os.chmod(secret_path, 0o600)
        ids = [f"n{i + 1}" for i in range(spec.nodes)]
        layout = netns_mod.plan_layout(ids, netns_mod.host_addresses()) if spec.netns else None
        addresses = _addresses(spec, ids, layout)
        members = tuple(
            MemberConfig(
                id=node_id,
                peer=peer,
                client=client,
                region=spec.regions[i] if i < len(spec.regions) else "default",
                priority=float(spec.priorities.get(node_id, 1.0)),
                joined=(spec.bootstrap and i > 0) or 0 < spec.voters <= i,
            )
            for i, (node_id, (peer, client)) in enumerate(zip(ids, addresses, strict=True))
        )
        try:
            config = ClusterConfig.build(
                members=members,
                secret=secret,
                secret_file=secret_path,
                election_timeout=spec.election_timeout,
                heartbeat_interval=spec.heartbeat_interval,
                request_timeout=spec.request_timeout,
                snapshot_entries=spec.snapshot_entries,
                snapshot_bytes=spec.snapshot_bytes,
                fsync=spec.fsync,
                sync=spec.sync_settings(),
                topology=spec.topology,
            )
        except ConfigError as error:
            raise LauncherError(str(error)) from None
        write_cluster_config(config, directory / CLUSTER_FILE)
        cluster = cls(
            directory,
            load_cluster_config(directory / CLUSTER_FILE),
            spec.protocol,
            {node_id: NodeRecord(node_id) for node_id in ids},
            layout=layout,
            start_timeout=spec.start_timeout,
            seed=spec.seed,
            log_level=spec.log_level,
        )
        cluster._write_state()
        return cluster

    @classmethod
    def up(cls, directory: Path | str, spec: ClusterSpec) -> LocalCluster:
        """Create a cluster folder and start every node; on failure nothing is left running."""
        cluster = cls.create(directory, spec)
        cluster.start()
        return cluster

    @classmethod
    def open(cls, directory: Path | str) -> LocalCluster:
        """A cluster folder written by `create` (possibly by another process)."""
        directory = Path(directory).absolute()
        state_path = directory / STATE_FILE
        if not state_path.is_file():
            raise LauncherError(f"{directory}: no {STATE_FILE} (no cluster was set up here)")
        try:
            state = json.loads(state_path.read_text(encoding="utf-8"))
            if not isinstance(state, dict):
                raise TypeError("not a JSON object")
            if state.get("version") != STATE_VERSION:
                raise LauncherError(f"{state_path}: unknown state version {state.get('version')}")
            config = load_cluster_config(directory / CLUSTER_FILE)
            records = {str(r["node_id"]): NodeRecord.from_json(r) for r in state["nodes"]}
            if sorted(records) != sorted(config.member_ids):
                raise ValueError(f"nodes {sorted(records)} are not the members of {CLUSTER_FILE}")
            layout = state.get("netns")
            seed = state.get("seed")
            if seed is not None and not isinstance(seed, int):
                raise TypeError(f"seed: expected an integer, got {seed!r}")
            return cls(
                directory,
                config,
                str(state["protocol"]),
                records,
                layout=netns_mod.NetnsLayout.from_json(layout) if layout else None,
                start_timeout=float(state.get("start_timeout", 30.0)),
                seed=seed,
                log_level=str(state.get("log_level", "warning")),
            )
        except (ValueError, KeyError, TypeError, AttributeError, netns_mod.NetnsError) as error:
            raise LauncherError(f"{state_path}: unreadable state: {error}") from None
        except ConfigError as error:
            raise LauncherError(str(error)) from None

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.down()

    # ---- what callers read -------------------------------------------------------------------

    @property
    def node_ids(self) -> tuple[NodeId, ...]:
        return self.config.member_ids

    @property
    def endpoints(self) -> list[str]:
        """Every node's client base URL (for RaftbenchClient)."""
        return list(self.config.client_urls().values())

    def url(self, node_id: NodeId) -> str:
        return self.config.member(node_id).client.url

    @property
    def secret(self) -> bytes:
        return self.config.secret_bytes

    def log_paths(self, node_id: NodeId) -> tuple[Path, Path]:
        logs = self.directory / "logs"
        return logs / f"{node_id}.out", logs / f"{node_id}.err"

    def data_dir(self, node_id: NodeId) -> Path:
        return self.directory / "data" / node_id

    def is_alive(self, node_id: NodeId) -> bool:
        """Running or paused, and still the process this cluster started."""
        return self._identity(node_id) in ("running", "paused")

    def is_paused(self, node_id: NodeId) -> bool:
        return self._identity(node_id) == "paused"

    def process_state(self, node_id: NodeId) -> str:
        """running | paused | stopped (a recorded pid that is now someone else's: stopped)."""
        state = self._identity(node_id)
        return state if state in ("running", "paused") else "stopped"

    @property
    def firewall(self) -> bool:
        """Whether partitions can be nftables rules on the nodes' hosts (namespace mode)."""
        return self.layout is not None

    def block_outgoing(self, node_id: NodeId, peers: Sequence[NodeId]) -> None:
        """Make `node_id`'s host drop what it sends to `peers` (replacing the earlier set)."""
        if self.layout is None:
            raise LauncherError("nftables partitions need a cluster in network namespaces")
        addresses = [self.layout.host(peer).address for peer in peers]
        netns_mod.block_outgoing(self.layout, node_id, addresses)

    def process_stat(self, node_id: NodeId) -> ProcStat | None:
        """State, CPU and resident memory of the node's process while it is still the one
        this cluster started (None otherwise): what the run's sampler reads."""
        record = self.records[node_id]
        if record.pid is None:
            return None
        return proc_stat(record.pid, record.start_ticks)

    # ---- starting ----------------------------------------------------------------------------

    def start(self, node_ids: Sequence[NodeId] | None = None) -> None:
        """Start the given nodes (default: all not running) and wait for their `ready` lines.

        On failure the nodes started by this call are killed (and, when nothing else runs, the
        namespaces removed); LauncherError carries the failing node's stderr tail.
        """
        wanted = [n for n in (node_ids or self.node_ids) if not self.is_alive(n)]
        if self.layout is not None and wanted and not netns_mod.exists(self.layout):
            netns_mod.build(self.layout)
        started: list[NodeId] = []
        try:
            for node_id in wanted:
                self._spawn(node_id)
                started.append(node_id)
            deadline = time.monotonic() + self.start_timeout
            for node_id in started:
                self._wait_ready(node_id, deadline)
        except BaseException:
            for node_id in started:
                with contextlib.suppress(LauncherError):
                    self.kill(node_id)
            if self.layout is not None and not any(self.is_alive(n) for n in self.node_ids):
                netns_mod.destroy(self.layout)
            raise

    def start_node(self, node_id: NodeId) -> None:
        self.config.member(node_id)
        if self.is_alive(node_id):
            raise LauncherError(f"{node_id} is already running")
        self.start([node_id])

    def restart(self, node_id: NodeId) -> None:
        """Kill -9 the node if it runs, then start it again on the same data directory."""
        if self.is_alive(node_id):
            self.kill(node_id)
        self.start([node_id])

    def _spawn(self, node_id: NodeId) -> None:
        record = self.records[node_id]
        out_path, err_path = self.log_paths(node_id)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        command = self.node_command(node_id)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        project_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (project_root, env.get("PYTHONPATH", "")) if p
        )
        with open(out_path, "wb") as out, open(err_path, "ab") as err:
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    env=env,
                    start_new_session=True,
                    cwd=self.directory,
                )
            except OSError as error:
                raise LauncherError(f"{node_id}: cannot start {command[0]}: {error}") from None
        self._children[process.pid] = process
        record.pid = process.pid
        record.start_ticks = start_ticks(process.pid)
        record.starts += 1
        self._write_state()

    def node_command(self, node_id: NodeId) -> list[str]:
        """The command line that runs `node_id` (inside its namespace in netns mode)."""
        command = [
            sys.executable,
            "-m",
            "raftbench",
            "node",
            "--config",
            str(self.directory / CLUSTER_FILE),
            "--id",
            node_id,
            "--protocol",
            self.protocol,
            "--data-dir",
            str(self.data_dir(node_id)),
            "--log-level",
            self.log_level,
        ]
        members = self.config.members
        if len(members) > 1 and all(m.joined for m in members if m.id != node_id):
            command.append("--bootstrap")  # the one founding member (cluster up --bootstrap)
        if self.seed is not None:
            index = self.node_ids.index(node_id)
            record = self.records[node_id]
            command += ["--seed", str(self.seed + index + 1000 * record.starts)]
        if self.layout is not None:
            command = self.layout.exec_prefix(node_id) + command
        return command

    def _wait_ready(self, node_id: NodeId, deadline: float) -> None:
        out_path, _ = self.log_paths(node_id)
        record = self.records[node_id]
        assert record.pid is not None
        with _pidfd(record.pid) as fd:
            while True:
                text = out_path.read_text(encoding="utf-8", errors="replace")
                for line in text.splitlines():
                    if line.startswith(f"ready {node_id} "):
                        return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LauncherError(
                        f"{node_id} did not print 'ready' within {self.start_timeout} s"
                        + self.stderr_tail(node_id)
                    )
                if fd is None:
                    exited = not self.is_alive(node_id)
                    if not exited:
                        time.sleep(min(POLL, remaining))
                else:  # wakes at once if the process exits
                    exited = bool(select.select([fd], [], [], min(POLL, remaining))[0])
                if exited:
                    self._reap(record.pid)
                    raise LauncherError(
                        f"{node_id} exited before it was ready" + self.stderr_tail(node_id)
                    )

    def stderr_tail(self, node_id: NodeId) -> str:
        """The last lines of the node's stderr, as a suffix for an error message."""
        _, err_path = self.log_paths(node_id)
        try:
            lines = err_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return ""
        tail = [line for line in lines if line.strip()][-STDERR_TAIL_LINES:]
        if not tail:
            return f" (nothing on stderr; see {err_path})"
        return f"; its stderr ({err_path}) ends with:\n  " + "\n  ".join(tail)

    # ---- stopping and faults -----------------------------------------------------------------

    def kill(self, node_id: NodeId) -> bool:
        """SIGKILL the node and wait until it is gone. False if it was not running."""
        return self._signal_and_wait(node_id, signal.SIGKILL, 10.0) is not None

    def stop_node(self, node_id: NodeId, grace: float = 5.0) -> str | None:
        """SIGTERM, then SIGKILL after `grace` s. "stopped", "killed", or None (not running)."""
        if not self._send(node_id, signal.SIGTERM):
            self._forget(node_id)
            return None
        self._send(node_id, signal.SIGCONT)  # a paused node must run to exit
        outcome = self._signal_and_wait(node_id, None, grace)
        if outcome is None or outcome:
            return "stopped"
        self._signal_and_wait(node_id, signal.SIGKILL, 10.0)
        return "killed"

    def pause(self, node_id: NodeId) -> None:
        """SIGSTOP: the process freezes (sockets stay open, nothing is answered)."""
        if not self._send(node_id, signal.SIGSTOP):
            raise LauncherError(f"{node_id} is not running")
        self._wait_state(node_id, "paused")

    def resume(self, node_id: NodeId) -> None:
        """SIGCONT a paused node."""
        if not self._send(node_id, signal.SIGCONT):
            raise LauncherError(f"{node_id} is not running")
        self._wait_state(node_id, "running")

    def down(self, purge: bool = False, grace: float = 5.0) -> DownReport:
        """Stop every node this cluster started (SIGTERM, SIGKILL after `grace`), remove the
        namespaces, and with `purge` the whole folder. Other processes are never signalled."""
        stopped: list[NodeId] = []
        killed: list[NodeId] = []
        not_ours: list[NodeId] = []
        signalled: list[NodeId] = []
        for node_id in self.node_ids:
            if self._identity(node_id) == "other":
                not_ours.append(node_id)
                self._forget(node_id)
            elif self._send(node_id, signal.SIGTERM):
                self._send(node_id, signal.SIGCONT)  # a paused node must run to exit
                signalled.append(node_id)
            else:
                self._forget(node_id)
        deadline = time.monotonic() + grace
        for node_id in signalled:
            remaining = max(0.0, deadline - time.monotonic())
            if self._signal_and_wait(node_id, None, remaining) is False:
                self._signal_and_wait(node_id, signal.SIGKILL, 10.0)
                killed.append(node_id)
            else:
                stopped.append(node_id)
        problems: list[str] = []
        if self.layout is not None:
            problems = netns_mod.destroy(self.layout)
        self._write_state()
        if purge:
            shutil.rmtree(self.directory, ignore_errors=True)
        return DownReport(tuple(stopped), tuple(killed), tuple(not_ours), tuple(problems))

    def _identity(self, node_id: NodeId) -> str:
        """running | paused | gone | other (the pid now names an unrelated process)."""
        record = self.records[node_id]
        if record.pid is None:
            return "gone"
        child = self._children.get(record.pid)
        if child is not None and child.poll() is not None:
            return "gone"  # our child has exited (and poll() reaped it)
        stat = read_stat(record.pid)
        if stat is None:
            return "gone"
        state, ticks = stat.state, stat.start_ticks
        if ticks != record.start_ticks or not self._cmdline_is_ours(record.pid):
            return "other"
        if state == "Z":
            return "gone"
        return "paused" if state in ("T", "t") else "running"

    def _cmdline_is_ours(self, pid: int) -> bool:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.directory / CLUSTER_FILE).encode() in raw.split(b"\0")

    def _send(self, node_id: NodeId, signum: signal.Signals) -> bool:
        """Signal the node's process if it is still ours; False if it is not running."""
        record = self.records[node_id]
        if record.pid is None:
            return False
        with _pidfd(record.pid) as fd:
            if self._identity(node_id) not in ("running", "paused"):
                return False
            try:
                if fd is not None:
                    signal.pidfd_send_signal(fd, signum)
                else:
                    os.kill(record.pid, signum)
            except ProcessLookupError:
                return False
        return True

    def _signal_and_wait(
        self, node_id: NodeId, signum: signal.Signals | None, timeout: float
    ) -> bool | None:
        """Send `signum` (None: nothing) and wait up to `timeout` s for the exit.

        None: it was not running; True: it exited; False: still running after `timeout`.
        """
        record = self.records[node_id]
        if record.pid is None or self._identity(node_id) not in ("running", "paused"):
            self._forget(node_id)
            return None
        pid = record.pid
        with _pidfd(pid) as fd:
            if signum is not None and not self._send(node_id, signum):
                self._forget(node_id)
                return None
            child = self._children.get(pid)
            if child is not None:
                try:
                    child.wait(timeout)
                except subprocess.TimeoutExpired:
                    return False
            elif fd is not None:
                if not select.select([fd], [], [], timeout)[0]:
                    return False
            else:
                deadline = time.monotonic() + timeout
                while self._identity(node_id) in ("running", "paused"):
                    if time.monotonic() >= deadline:
                        return False
                    time.sleep(POLL)
        self._forget(node_id)
        return True

    def _wait_state(self, node_id: NodeId, wanted: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (state := self._identity(node_id)) != wanted:
            if state not in ("running", "paused"):
                raise LauncherError(f"{node_id} exited while waiting for it to be {wanted}")
            if time.monotonic() >= deadline:
                raise LauncherError(f"{node_id} is not {wanted} after {timeout} s")
            time.sleep(0.001)

    def _reap(self, pid: int) -> None:
        child = self._children.pop(pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(1.0)

    def _forget(self, node_id: NodeId) -> None:
        record = self.records[node_id]
        if record.pid is not None:
            self._reap(record.pid)
        record.pid = None
        record.start_ticks = None
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "version": STATE_VERSION,
            "protocol": self.protocol,
            "start_timeout": self.start_timeout,
            "seed": self.seed,
            "log_level": self.log_level,
            "nodes": [self.records[n].to_json() for n in self.node_ids],
            "netns": self.layout.to_json() if self.layout is not None else None,
        }
        path = self.directory / STATE_FILE
        if not self.directory.is_dir():
            return  # purged
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    # ---- asking the nodes --------------------------------------------------------------------

    def statuses(self, timeout: float = 1.0) -> dict[NodeId, dict[str, Any] | None]:
        """Each running node's /status (None: stopped, paused, or no answer in `timeout`)."""
        out: dict[NodeId, dict[str, Any] | None] = {}
        with httpx.Client(trust_env=False, timeout=timeout, verify=shared_tls_context()) as http:
            for node_id in self.node_ids:
                out[node_id] = None
                if self._identity(node_id) != "running":
                    continue
                try:
                    response = http.get(self.url(node_id) + "/status")
                    if response.status_code == 200:
                        out[node_id] = response.json()
                except (httpx.HTTPError, ValueError):
                    pass
        return out

    def views(self, timeout: float = 1.0) -> list[NodeView]:
        statuses = self.statuses(timeout)
        return [
            NodeView(
                n,
                self.records[n].pid if self.is_alive(n) else None,
                self.process_state(n),
                statuses[n],
            )
            for n in self.node_ids
        ]

    def leader(self) -> NodeId | None:
        """The node that says it leads in the highest term, if a majority of the answering
        nodes agree on it (None while elections are going on)."""
        statuses = {n: s for n, s in self.statuses().items() if s is not None}
        leaders = [s for s in statuses.values() if s.get("role") == "leader"]
        if not leaders:
            return None
        best = max(leaders, key=lambda s: int(s.get("term", 0)))
        node_id = str(best["id"])
        # A majority of the voters of the leader's configuration (membership changes may
        # have left members of the cluster file out of it).
        voters = set(best.get("membership", {}).get("voters") or self.node_ids)
        followers = sum(
            1 for n, s in statuses.items() if n in voters and s.get("leader") == node_id
        )
        return node_id if followers > len(voters) // 2 else None

    def wait_for_leader(self, timeout: float = 30.0, exclude: NodeId | None = None) -> NodeId:
        """Poll /status until a leader (not `exclude`) is known to a majority."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader()
            if leader is not None and leader != exclude:
                return leader
            if time.monotonic() >= deadline:
                raise LauncherError(f"no leader within {timeout} s")
            time.sleep(POLL)

    # ---- membership changes ------------------------------------------------------------------

    def add_node(
        self, voter: bool = False, timeout: float = 30.0, node_id: NodeId | None = None
    ) -> NodeId:
        """Add a node: a cluster-file entry (marked `joined`, fresh ports), a data directory,
        a process that starts joining, then the change at the leader (a learner unless
        `voter`). Returns the new node's id. With `node_id`, a member the file already names
        (started if it is not running) is added instead."""
        kind = "add-voter" if voter else "add-learner"
        if node_id is not None:
            self.config.member(node_id)
            if not self.is_alive(node_id):
                self.start([node_id])
            self.change_membership(kind, node_id, timeout)
            return node_id
        if self.layout is not None:
            raise LauncherError("add-node: not available for clusters in network namespaces")
        taken = {int(n[1:]) for n in self.node_ids if n[1:].isdigit() and n.startswith("n")}
        node_id = f"n{max(taken, default=0) + 1}"
        host = self.config.members[0].client.host
        peer_port, client_port = _pick_ports(2, host, None)
        member = MemberConfig(
            id=node_id,
            peer=Address(host, peer_port),
            client=Address(host, client_port),
            joined=True,
        )
        try:
            config = replace(self.config, members=(*self.config.members, member)).validate()
        except ConfigError as error:
            raise LauncherError(str(error)) from None
        write_cluster_config(config, self.directory / CLUSTER_FILE)
        self.config = load_cluster_config(self.directory / CLUSTER_FILE)
        self.records[node_id] = NodeRecord(node_id)
        self._write_state()
        self.start([node_id])
        self.change_membership(kind, node_id, timeout)
        return node_id

    def remove_node(self, node_id: NodeId, stop: bool = True, timeout: float = 30.0) -> None:
        """Remove `node_id` from the configuration (at the leader), then stop its process.

        Its cluster-file entry stays: the file also says what the first configuration was."""
        self.config.member(node_id)
        self.change_membership("remove", node_id, timeout)
        if stop and self.is_alive(node_id):
            self.stop_node(node_id)

    def change_membership(
        self, change: str, node_id: NodeId, timeout: float = 30.0
    ) -> dict[str, Any]:
        """POST one signed membership change to the leader, retrying while there is none
        (or it is not ready); LauncherError with the leader's reason if it is refused."""
        path = "/admin/membership"
        data = json.dumps({"change": change, "node": node_id}).encode()
        headers = {
            AUTH_HEADER: admin_signature(self.secret, "POST", path, data),
            "content-type": "application/json",
        }
        deadline = time.monotonic() + timeout
        last = "no leader"
        uncertain = False  # an attempt may have gone through (no answer, or unknown outcome)
        with httpx.Client(trust_env=False, timeout=10.0, verify=shared_tls_context()) as http:
            while time.monotonic() < deadline:
                leader = self.leader()
                if leader is None:
                    time.sleep(POLL)
                    continue
                try:
                    response = http.post(self.url(leader) + path, content=data, headers=headers)
                    answer = response.json()
                except (httpx.HTTPError, ValueError) as error:
                    last, uncertain = f"{leader}: {error}", True
                    time.sleep(POLL)
                    continue
                if response.status_code == 200:
                    return dict(answer)
                detail = f"{answer.get('error')}: {answer.get('detail')}"
                if response.status_code == 409 and uncertain:
                    # Refused because an earlier attempt did it ("already a voter")? Then
                    # wait for that change to commit rather than report the refusal.
                    status = self.statuses().get(leader) or {}
                    membership = status.get("membership") or {}
                    if _change_done(change, node_id, membership):
                        if membership.get("committed"):
                            return {"ok": True, "change": change, "membership": membership}
                        last = f"{leader}: {change} {node_id} appended, not yet committed"
                        time.sleep(POLL)
                        continue
                if response.status_code in (400, 403, 409):
                    raise LauncherError(f"{change} {node_id}: {detail}")
                last = f"{leader}: {detail}"
                # 503/504: the change may have been appended (unknown outcome, or a leader
                # that lost its term after appending it).
                uncertain = uncertain or response.status_code in (503, 504)
                time.sleep(POLL)
        raise LauncherError(f"{change} {node_id}: not done within {timeout} s ({last})")

    def rtt_matrix(self) -> dict[NodeId, dict[NodeId, float | None]]:
        """The achieved round trips (ms, median of recent pings) each node measured to each
        peer; None where there is no sample yet."""
        matrix: dict[NodeId, dict[NodeId, float | None]] = {}
        for node_id, status in self.statuses().items():
            peers = (status or {}).get("peers") or {}
            matrix[node_id] = {
                peer: (peers.get(peer) or {}).get("rtt_ms")
                for peer in self.node_ids
                if peer != node_id
            }
        return matrix

    def expected_rtt_matrix(self) -> dict[NodeId, dict[NodeId, float]]:
        """The round trips (ms) the topology asks for: delay a->b plus delay b->a."""
        specs = {n: self.config.link_specs(n) for n in self.node_ids}
        out: dict[NodeId, dict[NodeId, float]] = {}
        for a in self.node_ids:
            out[a] = {}
            for b in self.node_ids:
                if a != b:
                    there = specs[a].get(b)
                    back = specs[b].get(a)
                    delay = (there.delay if there else 0.0) + (back.delay if back else 0.0)
                    out[a][b] = delay * 1000.0
        return out


# ---- topology files ----------------------------------------------------------------------------


def load_topology_file(
    path: Path | str, node_ids: Sequence[NodeId]
) -> tuple[tuple[str, ...], Topology]:
    """Read a `--topology` file: regions per node and a [topology] table.

    Format (TOML)::

        regions = ["us", "us", "eu"]          # one per node n1, n2, ... (or a table n1 = "us")
        [topology]                            # as in cluster.toml (see cluster.config)
        default_delay_ms = 0.2
        [[topology.links]]
        from = "us"
        to = "eu"
        delay_ms = 40.0

    The table is validated by the cluster-file parser, so errors name the same fields.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise LauncherError(f"--topology: cannot read {path}: {error}") from None
    for key in data:
        if key not in ("regions", "topology"):
            raise LauncherError(f"--topology: {path}: {key}: unknown field")
    raw_regions = data.get("regions", [])
    if isinstance(raw_regions, dict):
        unknown = sorted(set(raw_regions) - set(node_ids))
        if unknown:
            raise LauncherError(f"--topology: regions: {unknown[0]!r} is not a member")
        raw_regions = [raw_regions.get(n, "default") for n in node_ids]
    if not isinstance(raw_regions, list) or not all(isinstance(r, str) for r in raw_regions):
        raise LauncherError("--topology: regions: expected a list of region names")
    if len(raw_regions) > len(node_ids):
        raise LauncherError(
            f"--topology: regions: {len(raw_regions)} given for {len(node_ids)} nodes"
        )
    regions = tuple(raw_regions) + ("default",) * (len(node_ids) - len(raw_regions))
    document = {
        "cluster": {"secret": "x" * 32},
        "members": [
            {
                "id": n,
                "peer": f"127.0.0.1:{2 * i + 1}",
                "client": f"127.0.0.1:{2 * i + 2}",
                "region": regions[i],
            }
            for i, n in enumerate(node_ids)
        ],
        "topology": data.get("topology", {}),
    }
    try:
        config = parse_cluster_config(document, path.parent)
    except ConfigError as error:
        raise LauncherError(f"--topology: {path}: {error}") from None
    return regions, config.topology


# ---- helpers -----------------------------------------------------------------------------------


def _change_done(change: str, node_id: NodeId, membership: Mapping[str, Any]) -> bool:
    """Does `membership` (a /status `membership` object) already show `change` made?"""
    voters, learners = membership.get("voters") or [], membership.get("learners") or []
    if change in ("add-voter", "promote"):
        return node_id in voters
    if change == "add-learner":
        return node_id in learners
    return node_id not in voters and node_id not in learners


def _addresses(
    spec: ClusterSpec, ids: Sequence[NodeId], layout: netns_mod.NetnsLayout | None
) -> list[tuple[Address, Address]]:
    if layout is not None:
        return [
            (
                Address(layout.host(n).address, NETNS_PEER_PORT),
                Address(layout.host(n).address, NETNS_CLIENT_PORT),
            )
            for n in ids
        ]
    ports = _pick_ports(2 * len(ids), spec.host, spec.base_port)
    return [
        (Address(spec.host, ports[2 * i]), Address(spec.host, ports[2 * i + 1]))
        for i in range(len(ids))
    ]


def _pick_ports(count: int, host: str, base_port: int | None) -> list[int]:
    """`count` ports free on `host` now.

    With no base port they are drawn below the kernel's ephemeral range (`free_ports`): a port
    taken from that range could be grabbed by some outgoing connection while its node is down,
    and a restart would then fail.
    """
    if base_port is not None:
        ports = list(range(base_port, base_port + count))
        if ports[-1] > 65535 or base_port < 1:
            raise LauncherError(f"--base-port: {base_port}..{ports[-1]} is not a port range")
        busy = [p for p in ports if not _is_free(host, p)]
        if busy:
            raise LauncherError(f"--base-port: port {busy[0]} on {host} is in use")
        return ports
    try:
        return free_ports(count, host)
    except ConfigError as error:
        raise LauncherError(str(error)) from None


def _is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def proc_stat(pid: int, start_ticks: int | None) -> ProcStat | None:
    """State, CPU and resident memory of `pid` if it is still the process that started at
    `start_ticks`; None otherwise."""
    found = read_stat(pid)
    if found is None or (start_ticks is not None and found.start_ticks != start_ticks):
        return None
    return found


@contextlib.contextmanager
def _pidfd(pid: int) -> Iterator[int | None]:
    """A pidfd for `pid` (None where the kernel has none, or the process is gone)."""
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)
