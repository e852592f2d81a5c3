"""`raftbench cluster up|status|down --hosts hosts.toml`: a cluster on SSH hosts.

The local folder (`--dir`) keeps the cluster file and `hosts-state.json` (inventory, remote
folder, pids), so `status` and `down` from a later shell find the same nodes; see
cluster.ssh_cluster. The fault actions (`cluster kill`, `partition`, ...) are local-only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster.launcher import ClusterSpec, LauncherError
from cluster.ssh_cluster import HOSTS_STATE_FILE, SshCluster
from cluster.storage import FsyncPolicy
from raftbench.commands.argtypes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from raftbench.commands.hosts import check_hosts, open_hosts


def run(args: argparse.Namespace) -> int:
    match args.cluster_command:
        case "up":
            return _up(args)
        case "status":
            return _status(args)
        case _:
            return _down(args)


def _open(args: argparse.Namespace) -> SshCluster:
    cluster = SshCluster.open_on_hosts(args.dir, accept_new_host_keys=args.accept_new_host_keys)
    if args.hosts is not None and Path(args.hosts).absolute() != cluster.inventory.path:
        cluster.pool.close()
        raise LauncherError(
            f"--hosts {args.hosts}: the cluster in {args.dir} runs on {cluster.inventory.path}"
        )
    return cluster


def _up(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    if (directory / HOSTS_STATE_FILE).is_file():
        cluster = _open(args)
        try:
            running = [n for n in cluster.node_ids if cluster.is_alive(n)]
            if running:
                return _fail(
                    f"{directory}: a cluster is already running ({', '.join(running)}); "
                    "`raftbench cluster down` first",
                    EXIT_FAILED,
                )
            cluster.start()
            print(f"restarted the cluster in {cluster.directory}")
            _print_members(cluster)
        finally:
            cluster.pool.close()
        return EXIT_OK
    if args.hosts is None:
        return _fail("--hosts: needed to set up a cluster on hosts", EXIT_USAGE)
    if args.netns or args.topology is not None or args.base_port is not None:
        return _fail("--hosts: --netns, --topology and --base-port do not apply", EXIT_USAGE)
    if not args.heartbeat < args.election_timeout:
        return _fail("--heartbeat: must be < --election-timeout", EXIT_USAGE)
    with open_hosts(args) as pool:
        assert pool is not None
        nodes = args.nodes or len(pool.inventory.node_hosts)
        check_hosts(pool, nodes)
        spec = ClusterSpec(
            nodes=nodes,
            protocol=args.protocol or "push",
            sync_policy=args.sync_policy,
            fsync=FsyncPolicy(args.fsync),
            election_timeout=args.election_timeout,
            heartbeat_interval=args.heartbeat,
            seed=args.seed,
            start_timeout=args.start_timeout,
        )
        cluster = SshCluster.create_on_hosts(pool, directory, spec)
        cluster.start()
        print(f"started a {cluster.protocol} cluster on {nodes} hosts; state in {directory}")
        _print_members(cluster)
    return EXIT_OK


def _print_members(cluster: SshCluster) -> None:
    for member in cluster.config.members:
        host = cluster.hosts[member.id]
        pid = cluster.records[member.id].pid
        print(f"  {member.id}  {host.name}  pid {pid}  client {member.client.url}")


def _status(args: argparse.Namespace) -> int:
    from raftbench.commands.cluster import format_rtt, format_table  # noqa: PLC0415

    cluster = _open(args)
    try:
        print(f"{cluster.protocol} cluster on hosts ({cluster.inventory.path})")
        print(format_table(cluster.views()))
        hosts = ", ".join(f"{n}={h.name}" for n, h in cluster.hosts.items())
        print(f"hosts: {hosts}")
        matrix = cluster.rtt_matrix()
        if any(v is not None for row in matrix.values() for v in row.values()):
            print()
            print("round trips, ms: measured by the nodes (no emulated delay on hosts)")
            print(format_rtt(cluster.node_ids, matrix, cluster.expected_rtt_matrix()))
    finally:
        cluster.pool.close()
    return EXIT_OK


def _down(args: argparse.Namespace) -> int:
    cluster = _open(args)
    try:
        logs = cluster.directory / "logs"
        report = cluster.down(purge=False, grace=args.grace)
        fetched = [] if args.purge else cluster.fetch_logs(logs)
        if args.purge:
            cluster.down(purge=True)
    finally:
        cluster.pool.close()
    if report.stopped:
        print(f"stopped: {', '.join(report.stopped)}")
    if report.killed:
        print(f"killed after the grace period: {', '.join(report.killed)}")
    if not report.stopped and not report.killed:
        print("no node was running")
    if fetched and not args.purge:
        print(f"node logs fetched into {logs}")
    for problem in report.problems:
        print(f"down: {problem}", file=sys.stderr)
    return EXIT_FAILED if report.problems else EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"raftbench cluster: {message}", file=sys.stderr)
    return code
