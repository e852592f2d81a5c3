"""`raftbench cluster up|status|down`: a local cluster of node processes (cluster.launcher).

The fault actions (`kill`, `partition`, `recover`, ...) live in raftbench.commands.cluster_faults,
the membership actions (`add-node`, `remove-node`, `promote`) in raftbench.commands.cluster_members.

Exit status: 0 done, 1 the operation failed (a node did not start, no cluster in the folder,
namespace mode unavailable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anyio

from cluster import fault_record
from cluster.config import CLUSTER_FILE, Topology
from cluster.inventory import InventoryError
from cluster.launcher import (
    DEFAULT_DIR,
    STATE_FILE,
    ClusterSpec,
    LauncherError,
    LocalCluster,
    NodeView,
    load_topology_file,
)
from cluster.netns import NetnsError
from cluster.ssh import HostError
from cluster.ssh_cluster import HOSTS_STATE_FILE
from cluster.storage import FsyncPolicy
from protocols.config import SyncSettings
from protocols.engines import ENGINES
from raftbench.commands import cluster_faults, cluster_members, hosts_cluster
from raftbench.commands.argtypes import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from raftbench.commands.hosts import add_hosts_arguments


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cluster",
        help="start, inspect and stop a local cluster of node processes",
        description="A local cluster: one `raftbench node` process per member, on loopback "
        "or (--netns) each in its own network namespace.",
    )
    actions = parser.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    up = actions.add_parser(
        "up",
        help="generate a cluster folder and start its nodes",
        description="Generate DIR/cluster.toml (free ports, a fresh secret in DIR/secret.key) "
        "and start one node process per member; returns once every node is ready. A folder "
        "whose cluster was stopped with `down` (without --purge) is started again as it was.",
    )
    up.add_argument("--nodes", type=_count, help="number of nodes (default 3)")
    up.add_argument("--protocol", choices=sorted(ENGINES), help="replication protocol")
    up.add_argument(
        "--sync-policy", choices=SyncSettings.POLICIES, help="pull engine: sync-source policy"
    )
    up.add_argument(
        "--max-pullers",
        type=_count,
        help="pull engine, spread: members one source serves before it refuses more (2)",
    )
    up.add_argument("--fsync", choices=[p.value for p in FsyncPolicy], default="always")
    up.add_argument("--election-timeout", type=_seconds, default=1.0, help="seconds (1.0)")
    up.add_argument("--heartbeat", type=_seconds, default=0.1, help="seconds (0.1)")
    up.add_argument(
        "--snapshot-entries",
        type=int,
        default=0,
        metavar="N",
        help="snapshot and compact each node's log every N applied entries (0: off)",
    )
    up.add_argument(
        "--snapshot-bytes",
        type=int,
        default=0,
        metavar="B",
        help="snapshot once a log holds B payload bytes (0: off)",
    )
    up.add_argument(
        "--topology",
        type=Path,
        help="TOML file: `regions` (one per node) and a [topology] latency table",
    )
    up.add_argument(
        "--netns",
        action="store_true",
        help="run each node in its own network namespace (root, iproute2, nftables)",
    )
    up.add_argument("--base-port", type=int, help="loopback: ports from here (default: free)")
    up.add_argument(
        "--bootstrap",
        action="store_true",
        help="n1 forms a cluster of one (raftbench node --bootstrap); the others start "
        "joining, to be added with `raftbench cluster add-node --node ID`",
    )
    up.add_argument("--seed", type=int, help="seed of the nodes' randomness")
    up.add_argument("--start-timeout", type=_seconds, default=30.0, help="seconds per node")
    status = actions.add_parser(
        "status", help="one line per node (process and /status), then the faults in force"
    )
    down = actions.add_parser("down", help="stop the nodes this folder's cluster started")
    down.add_argument("--purge", action="store_true", help="also delete the folder")
    down.add_argument(
        "--grace",
        type=_seconds,
        default=5.0,
        help="seconds each node may take to stop cleanly before SIGKILL (default 5)",
    )
    for sub in (up, status, down):
        sub.add_argument(
            "--dir", type=Path, default=DEFAULT_DIR, help=f"cluster folder (default {DEFAULT_DIR})"
        )
        add_hosts_arguments(
            sub,
            "run the nodes on the SSH hosts of this inventory (hosts.toml; status and down "
            "find it in the folder)",
        )
    cluster_faults.register(actions)
    cluster_members.register(actions)
    parser.set_defaults(handler=run)


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    try:
        match args.cluster_command:
            case command if command in cluster_faults.ACTIONS:
                return cluster_faults.run(args)
            case command if command in cluster_members.ACTIONS:
                return cluster_members.run(args)
            case command if args.hosts is not None or (args.dir / HOSTS_STATE_FILE).is_file():
                return hosts_cluster.run(args)
            case "up":
                return _up(args)
            case "status":
                return _status(args)
            case _:
                return _down(args)
    except (LauncherError, NetnsError, HostError) as error:
        return _fail(str(error), EXIT_FAILED)
    except InventoryError as error:
        return _fail(str(error), EXIT_USAGE)


def _up(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    if (directory / STATE_FILE).is_file():
        cluster = LocalCluster.open(directory)
        running = [n for n in cluster.node_ids if cluster.is_alive(n)]
        if running:
            return _fail(
                f"{directory}: a cluster is already running ({', '.join(running)}); "
                "start a stopped node with `raftbench cluster restart NODE`, "
                "or `raftbench cluster down` first",
                EXIT_FAILED,
            )
        mismatch = _mismatch(args, cluster)
        if mismatch:
            return _fail(mismatch, EXIT_USAGE)
        cluster.start()
        print(f"restarted the cluster in {cluster.directory}")
        _reapply_faults(directory)
    else:
        if (directory / CLUSTER_FILE).exists():
            return _fail(f"{directory}: has a {CLUSTER_FILE} but no {STATE_FILE}", EXIT_USAGE)
        nodes = args.nodes or 3
        ids = [f"n{i + 1}" for i in range(nodes)]
        regions: tuple[str, ...] = ()
        topology = Topology()
        if args.topology is not None:
            regions, topology = load_topology_file(args.topology, ids)
        spec = ClusterSpec(
            nodes=nodes,
            protocol=args.protocol or "push",
            sync_policy=args.sync_policy,
            max_pullers=args.max_pullers,
            fsync=FsyncPolicy(args.fsync),
            election_timeout=args.election_timeout,
            heartbeat_interval=args.heartbeat,
            snapshot_entries=args.snapshot_entries,
            snapshot_bytes=args.snapshot_bytes,
            regions=regions,
            netns=args.netns,
            base_port=args.base_port,
            seed=args.seed,
            start_timeout=args.start_timeout,
            topology=topology,
            bootstrap=args.bootstrap,
        )
        if not spec.heartbeat_interval < spec.election_timeout:
            return _fail("--heartbeat: must be < --election-timeout", EXIT_USAGE)
        cluster = LocalCluster.up(directory, spec)
        print(f"started a {cluster.protocol} cluster in {cluster.directory}")
    for member in cluster.config.members:
        pid = cluster.records[member.id].pid
        print(f"  {member.id}  pid {pid}  client {member.client.url}  peer {member.peer}")
    print(f"try: raftbench kv put k v --dir {directory}")
    return EXIT_OK


def _reapply_faults(directory: Path) -> None:
    """Faults recorded while every node was down are put back on the fresh processes."""
    with fault_record.session(directory) as nemesis:
        if not nemesis.desired.is_empty():
            anyio.run(nemesis.reapply)
            shown = cluster_faults.describe_faults(nemesis.cluster, nemesis.desired)
            print("faults in force again: " + "; ".join(shown))


def _fault_lines(cluster: LocalCluster) -> list[str]:
    return cluster_faults.describe_faults(cluster, fault_record.load(cluster))


def _mismatch(args: argparse.Namespace, cluster: LocalCluster) -> str | None:
    if args.nodes is not None and args.nodes != len(cluster.node_ids):
        return f"--nodes {args.nodes}: {args.dir} holds a {len(cluster.node_ids)}-node cluster"
    if args.protocol is not None and args.protocol != cluster.protocol:
        return f"--protocol {args.protocol}: {args.dir} holds a {cluster.protocol} cluster"
    return None


def _status(args: argparse.Namespace) -> int:
    cluster = LocalCluster.open(args.dir)
    views = cluster.views()
    print(f"{cluster.protocol} cluster in {cluster.directory}")
    print(format_table(views))
    print()
    try:
        faults = _fault_lines(cluster)
    except LauncherError as error:
        print(f"faults in force: unknown ({error})")
    else:
        print("faults in force:" + ("" if faults else " none"))
        for line in faults:
            print(f"  {line}")
    matrix = cluster.rtt_matrix()
    expected = cluster.expected_rtt_matrix()
    if any(v is not None for row in matrix.values() for v in row.values()):
        print()
        print("round trips, ms: measured (asked for by the topology)")
        print(format_rtt(cluster.node_ids, matrix, expected))
    return EXIT_OK


COLUMNS = ("id", "pid", "process", "role", "term", "leader", "commit", "last", "sync source")


def format_table(views: list[NodeView]) -> str:
    rows = [list(COLUMNS)]
    for view in views:
        st = view.status or {}
        rows.append(
            [
                view.node_id,
                str(view.pid) if view.pid is not None else "-",
                view.state,
                str(st.get("role", "-")),
                str(st.get("term", "-")),
                str(st.get("leader") or "-"),
                str(st.get("commit_index", "-")),
                str(st.get("last_index", "-")),
                str(st.get("sync_source") or "-"),
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def format_rtt(
    ids: tuple[str, ...],
    measured: dict[str, dict[str, float | None]],
    expected: dict[str, dict[str, float]],
) -> str:
    rows = [["from\\to", *ids]]
    for a in ids:
        row = [a]
        for b in ids:
            if a == b:
                row.append("-")
                continue
            value = measured.get(a, {}).get(b)
            shown = "?" if value is None else f"{value:.2f}"
            row.append(f"{shown} ({expected[a][b]:g})")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _down(args: argparse.Namespace) -> int:
    cluster = LocalCluster.open(args.dir)
    report = cluster.down(purge=args.purge, grace=args.grace)
    fault_record.clear(cluster.directory)  # the processes and namespaces that had them are gone
    if report.stopped:
        print(f"stopped: {', '.join(report.stopped)}")
    if report.killed:
        print(f"killed after the grace period: {', '.join(report.killed)}")
    if not report.stopped and not report.killed:
        print("no node was running")
    for node_id in report.not_ours:
        print(
            f"{node_id}: its recorded pid now belongs to another process; left it alone",
            file=sys.stderr,
        )
    for problem in report.problems:
        print(f"namespace teardown: {problem}", file=sys.stderr)
    if args.purge:
        print(f"removed {cluster.directory}")
    return EXIT_FAILED if report.problems else EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"raftbench cluster: {message}", file=sys.stderr)
    return code
