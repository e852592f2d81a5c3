"""`raftbench cluster kill|restart|pause|resume|isolate|partition|heal|slow-link|slow-disk|recover`.

Faults from the shell, on a cluster started by `raftbench cluster up`. Each command is a
`cluster.nemesis.Nemesis` action over the cluster reopened from its folder; what is in force is
kept in the folder (cluster.fault_record), so a later command (`restart`, `status`, `recover`)
knows it. Wherever a node is named, `leader` names the node the cluster's /status agrees leads.

Everything given is checked before anything is done: an unknown node, a bad partition or a
nonsense value is a usage error (exit 2). A request that does not fit the node's state
(`restart` of a running node, `resume` of a node that is not paused, ...) says so and exits 1;
so does any fault on a cluster that is not running at all (stopped by `down`: start it with
`up`), unless its nodes were all killed by `kill`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio

from cluster import fault_record
from cluster.admin import MAX_FSYNC_DELAY
from cluster.launcher import DEFAULT_DIR, LocalCluster
from cluster.nemesis import DesiredFaults, FaultEvent, Nemesis, NemesisError, partition_groups
from protocols.types import NodeId
from raftbench.commands.argtypes import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    finite_non_negative_float,
    probability,
)

LEADER = "leader"
LEADER_WAIT = 30.0  # seconds to wait for a leader when `leader` names a node
ACTIONS = (
    "kill",
    "restart",
    "pause",
    "resume",
    "isolate",
    "partition",
    "heal",
    "slow-link",
    "slow-disk",
    "recover",
)


class UsageError(Exception):
    """What was asked for cannot be meant (exit 2); nothing was done."""


class StateError(Exception):
    """What was asked for does not fit the node's state (exit 1); nothing was done."""


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the fault actions to the `raftbench cluster` subparsers."""
    node_help = f"a member id, or {LEADER!r}"
    simple = {
        "kill": "SIGKILL a node (it stays down until `restart`)",
        "restart": "start a killed node again on its data; it gets its link and disk faults back",
        "pause": "SIGSTOP a node (frozen: sockets open, nothing answered)",
        "resume": "SIGCONT a paused node",
    }
    parsers = []
    for name, text in simple.items():
        sub = actions.add_parser(name, help=text, description=text)
        sub.add_argument("node", metavar="NODE", help=node_help)
        parsers.append(sub)
    isolate = actions.add_parser(
        "isolate",
        help="cut a node off from every other node",
        description="Cut every link between NODE and the others (replaces any partition).",
    )
    isolate.add_argument("node", metavar="NODE", help=node_help)
    isolate.add_argument(
        "--one-way", action="store_true", help="cut only what NODE sends; it still hears"
    )
    partition = actions.add_parser(
        "partition",
        help="split the cluster into groups that cannot reach each other",
        description="Cut every link between the groups (replaces any partition), e.g. "
        "`partition n1,n2 n3,n4,n5`. Nodes named in no group form one more group. In network "
        "namespaces the cuts are nftables rules; on loopback, the senders' link shapers.",
    )
    partition.add_argument(
        "groups", nargs="+", metavar="GROUP", help="comma-separated node ids (two or more groups)"
    )
    partition.add_argument(
        "--one-way",
        action="store_true",
        help="cut only links from an earlier group to a later one",
    )
    heal = actions.add_parser("heal", help="remove the partition (slow links and disks stay)")
    slow_link = actions.add_parser(
        "slow-link",
        help="delay, jitter and lose what a node exchanges with its peers",
        description="Set delay, jitter and loss on the links between NODE and its peers "
        "(both directions unless --one-way), in place of the topology's own values.",
    )
    slow_link.add_argument("node", metavar="NODE", help=node_help)
    slow_link.add_argument(
        "--to", metavar="PEERS", help="comma-separated peers (default: every other node)"
    )
    slow_link.add_argument("--delay-ms", type=finite_non_negative_float, help="one-way delay")
    slow_link.add_argument(
        "--jitter-ms", type=finite_non_negative_float, help="uniform +/- around the delay"
    )
    slow_link.add_argument("--loss", type=probability, help="probability a frame is lost")
    slow_link.add_argument(
        "--one-way", action="store_true", help="only what NODE sends (default: both ways)"
    )
    slow_disk = actions.add_parser(
        "slow-disk",
        help="make every persist of a node sleep",
        description="Every persist of NODE sleeps SECONDS at its sync point (0: back to normal).",
    )
    slow_disk.add_argument("node", metavar="NODE", help=node_help)
    slow_disk.add_argument(
        "--fsync-delay", type=_fsync_delay, required=True, metavar="SECONDS", help="seconds"
    )
    recover = actions.add_parser(
        "recover",
        help="undo every fault: restart, resume, heal, clear slow links and disks",
    )
    for sub in (*parsers, isolate, partition, heal, slow_link, slow_disk, recover):
        sub.add_argument(
            "--dir", type=Path, default=DEFAULT_DIR, help=f"cluster folder (default {DEFAULT_DIR})"
        )


def _fsync_delay(text: str) -> float:
    value = finite_non_negative_float(text)
    if value > MAX_FSYNC_DELAY:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_FSYNC_DELAY:g} s, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """Check everything, then act. LauncherError/NetnsError are the caller's (exit 1)."""
    try:
        act = _prepare(args, LocalCluster.open(args.dir))
    except UsageError as error:
        return _fail(str(error), EXIT_USAGE)
    except StateError as error:
        return _fail(str(error), EXIT_FAILED)
    with fault_record.session(args.dir) as nemesis:
        cluster = nemesis.cluster
        if not nemesis.desired.killed and not any(cluster.is_alive(n) for n in cluster.node_ids):
            return _fail(_not_running(cluster), EXIT_FAILED)
        if _names_leader(args):
            # Ask again under the lock: a command that held it may have moved the leadership.
            try:
                act = _prepare(args, cluster)
            except (UsageError, StateError) as error:
                return _fail(str(error), EXIT_FAILED)
        try:
            events = anyio.run(act, nemesis)
        except StateError as error:
            return _fail(str(error), EXIT_FAILED)
        except NemesisError as error:
            return _fail(str(error), EXIT_FAILED)
    for event in events:
        print(format_event(event))
    return EXIT_OK


Action = Callable[[Nemesis], Awaitable[list[FaultEvent]]]


def _names_leader(args: argparse.Namespace) -> bool:
    """Whether the command names `leader` anywhere (a node, a group, a --to list)."""
    named = [getattr(args, "node", None), getattr(args, "to", None), *getattr(args, "groups", [])]
    return any(LEADER in str(text).split(",") for text in named if text is not None)


def _prepare(args: argparse.Namespace, cluster: LocalCluster) -> Action:
    """Resolve and check the arguments against the cluster; the action to run."""
    command: str = args.cluster_command
    names = Names(cluster)
    match command:
        case "kill" | "restart" | "pause" | "resume":
            node = names.node(args.node)
            return _process_action(command, node)
        case "isolate":
            node = names.node(args.node)
            one_way: bool = args.one_way

            async def isolate(nemesis: Nemesis) -> list[FaultEvent]:
                return [await nemesis.isolate(node, one_way=one_way)]

            return isolate
        case "partition":
            groups = _partition(names, args.groups)
            one_way = args.one_way

            async def partition(nemesis: Nemesis) -> list[FaultEvent]:
                return [await nemesis.partition(groups, one_way=one_way)]

            return partition
        case "heal":
            return _heal
        case "slow-link":
            return _slow_link(names, args)
        case "slow-disk":
            node = names.node(args.node)
            seconds: float = args.fsync_delay

            async def slow_disk(nemesis: Nemesis) -> list[FaultEvent]:
                return [await nemesis.slow_disk(node, seconds)]

            return slow_disk
        case _:
            return _recover


class Names:
    """Node names as given on the command line, checked against the cluster's members."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self._leader: NodeId | None = None

    def check(self, name: str) -> str:
        if name != LEADER and name not in self.cluster.node_ids:
            raise UsageError(
                f"{name!r} is not a member (members: {', '.join(self.cluster.node_ids)}; "
                f"or {LEADER!r})"
            )
        return name

    def node(self, name: str) -> NodeId:
        """A member id for `name`; `leader` asks the running nodes (waits for an election)."""
        self.check(name)
        if name != LEADER:
            return name
        if self._leader is None:
            if not any(self.cluster.is_alive(n) for n in self.cluster.node_ids):
                raise StateError(_not_running(self.cluster))
            self._leader = self.cluster.wait_for_leader(LEADER_WAIT)
            print(f"leader: {self._leader}")
        return self._leader

    def listed(self, text: str, what: str) -> list[str]:
        """The checked names of a comma-separated list (not resolved yet)."""
        items = text.split(",")
        if any(not item.strip() for item in items):
            raise UsageError(f"{what} {text!r}: an empty name (write ids separated by commas)")
        return [self.check(item.strip()) for item in items]


def _partition(names: Names, raw_groups: Sequence[str]) -> list[list[NodeId]]:
    if len(raw_groups) < 2:
        raise UsageError(
            "partition: give two or more groups, e.g. `partition n1,n2 n3` "
            "(to cut one node off: `isolate NODE`)"
        )
    listed = [names.listed(group, "partition: group") for group in raw_groups]
    for group in listed:  # a node twice in one group is a typo too
        repeated = sorted({n for n in group if group.count(n) > 1})
        if repeated:
            raise UsageError(f"partition: {repeated[0]} is named twice in one group")
    groups = [[names.node(n) for n in group] for group in listed]
    try:
        partition_groups(names.cluster.node_ids, groups)
    except NemesisError as error:
        raise UsageError(str(error)) from None
    return groups


def _slow_link(names: Names, args: argparse.Namespace) -> Action:
    given = {"delay_ms": args.delay_ms, "jitter_ms": args.jitter_ms, "loss": args.loss}
    if all(value is None for value in given.values()):
        raise UsageError("slow-link: give at least one of --delay-ms, --jitter-ms, --loss")
    node = names.check(args.node)
    peers = names.listed(args.to, "--to") if args.to is not None else None
    node = names.node(node)
    if peers is None:
        targets = [n for n in names.cluster.node_ids if n != node]
    else:
        targets = list(dict.fromkeys(names.node(p) for p in peers))
    if node in targets:
        raise UsageError(f"slow-link: --to names {node} itself")
    delay = args.delay_ms or 0.0
    jitter = args.jitter_ms or 0.0
    loss = args.loss or 0.0
    symmetric = not args.one_way

    async def slow_link(nemesis: Nemesis) -> list[FaultEvent]:
        return [
            await nemesis.slow_link(
                node, peer, delay_ms=delay, jitter_ms=jitter, loss=loss, symmetric=symmetric
            )
            for peer in targets
        ]

    return slow_link


def _process_action(command: str, node: NodeId) -> Action:
    async def process(nemesis: Nemesis) -> list[FaultEvent]:
        state = nemesis.cluster.process_state(node)
        match command:
            case "kill":
                if state == "stopped":
                    raise StateError(f"{node} is not running; nothing to kill")
                return [await nemesis.kill(node)]
            case "restart":
                if state != "stopped":
                    hint = "resume" if state == "paused" else "kill"
                    raise StateError(
                        f"{node} is {state}; restart starts a stopped node "
                        f"(`raftbench cluster {hint} {node}` first)"
                    )
                return [await nemesis.restart(node)]
            case "pause":
                if state != "running":
                    raise StateError(f"{node} is {state}; only a running node can be paused")
                return [await nemesis.pause(node)]
            case _:
                if state != "paused":
                    hint = " (start it with `restart`)" if state == "stopped" else ""
                    raise StateError(f"{node} is {state}, not paused; nothing to resume{hint}")
                return [await nemesis.resume(node)]

    return process


async def _heal(nemesis: Nemesis) -> list[FaultEvent]:
    if not nemesis.desired.cuts:
        print("no partition is in force")
        return []
    return [await nemesis.heal()]


async def _recover(nemesis: Nemesis) -> list[FaultEvent]:
    events = await nemesis.recover()
    if not events:
        print("no fault is in force")
    return events


def format_event(event: FaultEvent) -> str:
    nodes = ",".join(event.nodes)
    text = f"{event.kind} {nodes}".rstrip()
    return f"{text}: {event.detail}" if event.detail else text


def describe_faults(cluster: LocalCluster, desired: DesiredFaults) -> list[str]:
    """One line per fault in force, as `cluster status` shows them."""
    lines = []
    for node in cluster.node_ids:
        state = cluster.process_state(node)
        if state == "paused":
            lines.append(f"{node} paused")
        elif state == "stopped" and node in desired.killed:
            lines.append(f"{node} killed")
    if desired.groups:
        shown = [f"{{{','.join(group)}}}" for group in desired.groups]
        if desired.one_way:
            lines.append("one-way partition " + " -/-> ".join(shown))
        else:
            lines.append("partition " + " | ".join(shown))
    done: set[tuple[NodeId, NodeId]] = set()
    for (a, b), fields in sorted(desired.slow.items()):
        if (a, b) in done:
            continue
        arrow = "->"
        if desired.slow.get((b, a)) == fields:
            arrow = "<->"
            done.add((b, a))
        lines.append(
            f"slow-link {a}{arrow}{b} delay {fields['delay_ms']:g}ms "
            f"jitter {fields['jitter_ms']:g}ms loss {fields['loss']:g}"
        )
    for node, rate in sorted(desired.bandwidth.items()):
        lines.append(f"bandwidth {node} {rate:g} B/s")
    for node, seconds in sorted(desired.disk.items()):
        lines.append(f"slow-disk {node} {seconds:g}s")
    return lines


def _not_running(cluster: LocalCluster) -> str:
    """Faults are for a running cluster: one stopped by `down` (or never started) is started
    with `up`, not by `restart` or `recover` one node at a time."""
    return (
        f"no node of the cluster in {cluster.directory} is running; "
        f"start it with `raftbench cluster up --dir {cluster.directory}`"
    )


def _fail(message: str, code: int) -> int:
    print(f"raftbench cluster: {message}", file=sys.stderr)
    return code
