"""`raftbench cluster add-node|remove-node|promote`: membership changes on a local cluster.

One change at a time, proposed at the leader (`/admin/membership`, signed with the cluster's
secret) and answered once it is committed. `add-node` also gives the new node a cluster-file
entry (fresh ports, marked `joined`), a data directory and a process, which starts joining and
catches up (from a snapshot if the others compacted their logs); it joins as a learner unless
`--voter`, and `promote` makes a learner a voter. `remove-node` takes the node out of the
configuration, then stops its process (its cluster-file entry stays). `add-node --node ID`
adds a member the cluster file already names (e.g. after `cluster up --bootstrap`, where n1
forms a cluster of one and the others wait to be added). A refused change (a
change still pending, an unknown node, the last voter) prints the leader's reason and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cluster.launcher import DEFAULT_DIR, LauncherError, LocalCluster
from raftbench.commands.argtypes import EXIT_FAILED, EXIT_OK, EXIT_USAGE

ACTIONS = ("add-node", "remove-node", "promote")


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = actions.add_parser("add-node", help="start a new node and add it to the configuration")
    add.add_argument("--voter", action="store_true", help="add it as a voter (default: learner)")
    add.add_argument(
        "--node",
        help="a member of the cluster file that is not in the configuration yet (a node that "
        "started joining, e.g. after `cluster up --bootstrap`) instead of a new one",
    )
    remove = actions.add_parser(
        "remove-node", help="take a node out of the configuration and stop it"
    )
    remove.add_argument("node", help="the node's id")
    remove.add_argument("--keep-running", action="store_true", help="do not stop its process")
    promote = actions.add_parser("promote", help="make a learner a voter")
    promote.add_argument("node", help="the learner's id")
    for sub in (add, remove, promote):
        sub.add_argument(
            "--dir", type=Path, default=DEFAULT_DIR, help=f"cluster folder (default {DEFAULT_DIR})"
        )
        sub.add_argument("--timeout", type=float, default=30.0, help="seconds (30)")


def run(args: argparse.Namespace) -> int:
    cluster = LocalCluster.open(args.dir)
    command = args.cluster_command
    if args.node is not None and args.node not in cluster.node_ids:
        known = ", ".join(cluster.node_ids)
        print(f"raftbench cluster: unknown node {args.node!r} (nodes: {known})", file=sys.stderr)
        return EXIT_USAGE
    try:
        if command == "add-node":
            node = cluster.add_node(voter=args.voter, timeout=args.timeout, node_id=args.node)
            role = "voter" if args.voter else "learner"
            print(f"added {node} as a {role}: {cluster.url(node)}")
        elif command == "remove-node":
            cluster.remove_node(args.node, stop=not args.keep_running, timeout=args.timeout)
            print(f"removed {args.node}")
        else:
            cluster.change_membership("promote", args.node, args.timeout)
            print(f"promoted {args.node} to voter")
    except LauncherError as error:
        print(f"raftbench cluster: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
