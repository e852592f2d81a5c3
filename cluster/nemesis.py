"""The nemesis: faults injected into a running `LocalCluster`, each one recorded.

Actions and how they are done:

* ``kill`` / ``restart``: SIGKILL (kill -9), then a fresh process on the same data directory;
* ``pause`` / ``resume``: SIGSTOP / SIGCONT (the process freezes; its sockets stay open);
* ``partition`` / ``heal``: cut directed links between groups of nodes. In namespace mode an
  nftables rule in the sender's namespace drops its packets to the cut addresses (on SSH hosts
  where the user may run nft: on the sender's host, see cluster.ssh_cluster); on loopback
  the sender's link shaper drops its frames (``partitioned`` through ``/admin/shaper``,
  signed with the cluster secret: nothing without the secret can cut a link);
* ``slow_link``: delay, jitter and loss on directed links (the link shaper, both modes);
* ``slow_disk``: every persist of a node sleeps (``/admin/disk``);
* ``bandwidth``: a node's egress cap (`tbf` in namespace mode, the shaper on loopback).

Every call returns a `FaultEvent` and appends it to `events`.

The nemesis keeps the *desired* link and disk settings of every node and pushes a node's whole
set at once (``reset`` plus every link: the cluster file's topology as the base, then slow links,
then cuts). A node that is down or paused cannot be told; it is marked stale and told as soon
as it is restarted or resumed. So a restart does not silently heal a partition, though a
restarted node's first messages (in the moment between its ready line and the nemesis's
request) may still cross a cut link on loopback; in namespace mode the rules outlive the
process and there is no such moment.

Blocking cluster operations run in a worker thread, so clients in the same event loop keep
running while a node restarts. One action at a time (an internal lock serialises them).
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
import httpx

from cluster import netns as netns_mod
from cluster.admin import describe_link
from cluster.client import ClientError, set_disk_delay, set_links
from cluster.launcher import LauncherError, LocalCluster
from cluster.shaper import LinkSpec
from protocols.types import NodeId

FAULT_KINDS = ("kill", "pause", "partition", "one-way", "slow-link", "slow-disk")
TARGETS = ("leader", "follower", "random")
LEADER_TIMEOUT = 30.0


class NemesisError(Exception):
    """A fault could not be injected or undone; the message says which and why."""


@dataclass(frozen=True, slots=True)
class FaultEvent:
    """One nemesis action: when (seconds on the nemesis clock since its origin), what, on whom."""

    time: float
    kind: str
    nodes: tuple[NodeId, ...]
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "kind": self.kind,
            "nodes": list(self.nodes),
            "detail": self.detail,
        }


@dataclass(slots=True)
class DesiredFaults:
    """The faults a nemesis keeps in force.

    It is what a node gets again when it comes back and what `raftbench cluster status` shows.
    It round-trips through JSON, so a later process (each `raftbench cluster` command is one)
    carries on where an earlier one stopped.
    """

    cuts: set[tuple[NodeId, NodeId]] = field(default_factory=set)  # directed: src -/-> dst
    groups: list[list[NodeId]] = field(default_factory=list)  # the partition, as asked for
    one_way: bool = False  # the partition cuts only links from earlier groups to later ones
    slow: dict[tuple[NodeId, NodeId], dict[str, float]] = field(default_factory=dict)
    bandwidth: dict[NodeId, float] = field(default_factory=dict)  # bytes/s, egress
    disk: dict[NodeId, float] = field(default_factory=dict)  # fsync delay seconds
    killed: set[NodeId] = field(default_factory=set)  # killed by the nemesis, not restarted

    def is_empty(self) -> bool:
        return not (self.cuts or self.slow or self.bandwidth or self.disk or self.killed)

    def to_json(self) -> dict[str, Any]:
        return {
            "cuts": sorted([a, b] for a, b in self.cuts),
            "groups": [list(g) for g in self.groups],
            "one_way": self.one_way,
            "slow": [
                {"from": a, "to": b, **fields} for (a, b), fields in sorted(self.slow.items())
            ],
            "bandwidth": dict(sorted(self.bandwidth.items())),
            "disk": dict(sorted(self.disk.items())),
            "killed": sorted(self.killed),
        }

    @classmethod
    def from_json(cls, data: object, node_ids: Sequence[NodeId]) -> DesiredFaults:
        """Read `to_json` output back; NemesisError names what is malformed."""
        try:
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            known = set(node_ids)

            def node(value: object) -> NodeId:
                if not isinstance(value, str) or value not in known:
                    raise ValueError(f"{value!r} is not a member")
                return value

            def number(value: object) -> float:
                if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                    raise ValueError(f"{value!r} is not a number >= 0")
                return float(value)

            slow: dict[tuple[NodeId, NodeId], dict[str, float]] = {}
            for link in data.get("slow", []):
                pair = (node(link["from"]), node(link["to"]))
                slow[pair] = {k: number(link[k]) for k in ("delay_ms", "jitter_ms", "loss")}
            return cls(
                cuts={(node(a), node(b)) for a, b in data.get("cuts", [])},
                groups=[[node(n) for n in group] for group in data.get("groups", [])],
                one_way=bool(data.get("one_way", False)),
                slow=slow,
                bandwidth={node(n): number(v) for n, v in data.get("bandwidth", {}).items()},
                disk={node(n): number(v) for n, v in data.get("disk", {}).items()},
                killed={node(n) for n in data.get("killed", [])},
            )
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise NemesisError(f"malformed fault record: {error}") from None


def partition_groups(
    node_ids: Sequence[NodeId], groups: Sequence[Sequence[NodeId]]
) -> list[list[NodeId]]:
    """The groups of a partition, checked: members only, none in two groups, at least two
    groups once the nodes named in no group are added as one more."""
    named: list[NodeId] = []
    out = []
    for group in groups:
        members = list(dict.fromkeys(group))
        for node in members:
            if node not in node_ids:
                raise NemesisError(
                    f"partition: {node!r} is not a member (members: {', '.join(node_ids)})"
                )
            if node in named:
                raise NemesisError(f"partition: {node} is in two groups")
            named.append(node)
        if members:
            out.append(members)
    rest = [n for n in node_ids if n not in named]
    if rest:
        out.append(rest)
    if len(out) < 2:
        raise NemesisError("partition: at least two groups are needed")
    return out


class Nemesis:
    """Fault actions over one LocalCluster; see the module docstring."""

    def __init__(
        self,
        cluster: LocalCluster,
        *,
        clock: Callable[[], float] = time.monotonic,
        origin: float | None = None,
        partitions: str = "auto",
        rng: random.Random | None = None,
        desired: DesiredFaults | None = None,
    ) -> None:
        """`partitions`: "auto" (nftables in namespace mode, else the shaper), "shaper" or
        "nftables". `origin`: the clock value event times count from (default: now). `rng`
        picks "random" and "follower" targets (seed it for a repeatable run). `desired`: the
        faults an earlier nemesis left in force on this cluster (see `DesiredFaults`)."""
        if partitions not in ("auto", "shaper", "nftables"):
            raise NemesisError(f"partitions: 'auto', 'shaper' or 'nftables', not {partitions!r}")
        if partitions == "nftables" and not cluster.firewall:
            raise NemesisError(
                "nftables partitions need a cluster in network namespaces, or on SSH hosts "
                "where the user may run nft"
            )
        self.cluster = cluster
        self.clock = clock
        self.origin = clock() if origin is None else origin
        self.use_nft = partitions == "nftables" or (partitions == "auto" and cluster.firewall)
        self.rng = rng or random.Random()
        self.events: list[FaultEvent] = []
        self._want = desired if desired is not None else DesiredFaults()
        self._stale: set[NodeId] = set()
        self._lock = anyio.Lock()

    @property
    def desired(self) -> DesiredFaults:
        """The faults in force (what a node gets again when it comes back)."""
        return self._want

    # ---- processes ---------------------------------------------------------------------------

    async def kill(self, node: NodeId) -> FaultEvent:
        async with self._lock:
            if not await self._run(self.cluster.kill, node):
                raise NemesisError(f"kill {node}: it is not running")
            self._stale.add(node)
            self._want.killed.add(node)
            return self._record("kill", (node,), "SIGKILL")

    async def restart(self, node: NodeId) -> FaultEvent:
        """Start a killed node again (kill -9 first if it runs), then re-apply its settings."""
        async with self._lock:
            await self._run(self.cluster.restart, node)
            self._want.killed.discard(node)
            await self._push(node)
            return self._record("restart", (node,))

    async def pause(self, node: NodeId) -> FaultEvent:
        async with self._lock:
            await self._run(self.cluster.pause, node)
            self._stale.add(node)
            return self._record("pause", (node,), "SIGSTOP")

    async def resume(self, node: NodeId) -> FaultEvent:
        async with self._lock:
            await self._run(self.cluster.resume, node)
            await self._push(node)
            return self._record("resume", (node,), "SIGCONT")

    # ---- network -----------------------------------------------------------------------------

    async def partition(
        self, groups: Sequence[Sequence[NodeId]], *, one_way: bool = False
    ) -> FaultEvent:
        """Cut the links between `groups` (nodes named in no group form one more group).

        Symmetric by default. With `one_way`, only links from an earlier group to a later one
        are cut (with two groups: the first cannot reach the second, the reverse still works).
        Replaces any earlier partition.
        """
        all_groups = partition_groups(self.cluster.node_ids, groups)
        cuts: set[tuple[NodeId, NodeId]] = set()
        for i, group in enumerate(all_groups):
            for j, other in enumerate(all_groups):
                if i == j or (one_way and j < i):
                    continue
                cuts.update((a, b) for a in group for b in other)
        async with self._lock:
            affected = {a for a, _ in cuts | self._want.cuts}
            self._want.cuts = cuts
            self._want.groups = all_groups
            self._want.one_way = one_way
            await self._apply_cuts(affected)
            shown = " | ".join(",".join(g) for g in all_groups)
            how = "nftables" if self.use_nft else "shaper"
            kind = "one-way" if one_way else "partition"
            return self._record(kind, tuple(sorted(affected)), f"{shown} ({how})")

    async def isolate(self, node: NodeId, *, one_way: bool = False) -> FaultEvent:
        """Cut `node` off from the rest (`one_way`: only its outgoing messages are lost)."""
        return await self.partition([[node]], one_way=one_way)

    async def heal(self) -> FaultEvent:
        """Remove every cut (slow links, bandwidth caps and disk delays stay)."""
        async with self._lock:
            affected = {a for a, _ in self._want.cuts}
            self._want.cuts = set()
            self._want.groups = []
            self._want.one_way = False
            await self._apply_cuts(affected)
            return self._record("heal", tuple(sorted(affected)))

    async def slow_link(
        self,
        src: NodeId,
        dst: NodeId,
        *,
        delay_ms: float,
        jitter_ms: float = 0.0,
        loss: float = 0.0,
        symmetric: bool = False,
    ) -> FaultEvent:
        """Delay (one-way), jitter and lose frames from `src` to `dst` (and back, if symmetric)."""
        pairs = [(src, dst), (dst, src)] if symmetric else [(src, dst)]
        for a, b in pairs:
            self.cluster.config.member(a)
            self.cluster.config.member(b)
            LinkSpec(delay=delay_ms / 1000.0, jitter=jitter_ms / 1000.0, loss=loss)  # validates
        async with self._lock:
            for pair in pairs:
                self._want.slow[pair] = {"delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss": loss}
            for a in {a for a, _ in pairs}:
                await self._push(a)
            detail = f"delay {delay_ms} ms, jitter {jitter_ms} ms, loss {loss}"
            return self._record(
                "slow-link", tuple(dict.fromkeys(n for p in pairs for n in p)), detail
            )

    async def clear_slow_links(self) -> FaultEvent:
        """Back to the topology's own delays on every link."""
        async with self._lock:
            affected = {a for a, _ in self._want.slow}
            self._want.slow = {}
            for node in sorted(affected):
                await self._push(node)
            return self._record("clear-slow-links", tuple(sorted(affected)))

    async def bandwidth(self, node: NodeId, bytes_per_second: float | None) -> FaultEvent:
        """Cap `node`'s egress (None lifts the cap): `tbf` in namespaces, else the shaper."""
        self.cluster.config.member(node)
        if bytes_per_second is not None and not bytes_per_second > 0:
            raise NemesisError(f"bandwidth: must be > 0 bytes/s, got {bytes_per_second}")
        async with self._lock:
            if bytes_per_second is None:
                self._want.bandwidth.pop(node, None)
            else:
                self._want.bandwidth[node] = bytes_per_second
            layout = self.cluster.layout
            if layout is not None:
                await anyio.to_thread.run_sync(
                    netns_mod.set_bandwidth, layout, node, bytes_per_second
                )
            else:
                await self._push(node)
            shown = "unlimited" if bytes_per_second is None else f"{bytes_per_second:g} B/s"
            return self._record("bandwidth", (node,), shown)

    # ---- disk --------------------------------------------------------------------------------

    async def slow_disk(self, node: NodeId, seconds: float) -> FaultEvent:
        """Every persist of `node` sleeps `seconds` at its sync point (0: back to normal)."""
        self.cluster.config.member(node)
        async with self._lock:
            if seconds:
                self._want.disk[node] = seconds
            else:
                self._want.disk.pop(node, None)
            await self._push(node)
            return self._record("slow-disk", (node,), f"fsync delay {seconds} s")

    # ---- all at once -------------------------------------------------------------------------

    async def recover(self) -> list[FaultEvent]:
        """Undo everything: resume paused nodes, restart dead ones, heal, clear slow links,
        bandwidth caps and disk delays. Returns the events it recorded."""
        events = []
        for node in self.cluster.node_ids:
            if self.cluster.is_paused(node):
                events.append(await self.resume(node))
            elif not self.cluster.is_alive(node):
                events.append(await self.restart(node))
        if self._want.cuts:
            events.append(await self.heal())
        if self._want.slow:
            events.append(await self.clear_slow_links())
        for node in list(self._want.bandwidth):
            events.append(await self.bandwidth(node, None))
        for node in list(self._want.disk):
            events.append(await self.slow_disk(node, 0.0))
        return events

    async def reapply(self) -> None:
        """Tell every node its whole desired state again (after the cluster was started anew:
        fresh processes have empty shapers, fresh namespaces no rules or caps)."""
        async with self._lock:
            self._want.killed = {n for n in self._want.killed if not self.cluster.is_alive(n)}
            layout = self.cluster.layout
            for node in self.cluster.node_ids:
                if self.use_nft:
                    await self._apply_cuts([node])
                if layout is not None and node in self._want.bandwidth:
                    cap = self._want.bandwidth[node]
                    await anyio.to_thread.run_sync(netns_mod.set_bandwidth, layout, node, cap)
                await self._push(node)

    async def resolve(self, target: str) -> NodeId:
        """A node id for `target`: a member id, "leader", "follower" (a random non-leader) or
        "random" (any running node)."""
        ids = self.cluster.node_ids
        if target in ids:
            return target
        if target == "random":
            running = [n for n in ids if self.cluster.process_state(n) == "running"]
            return self.rng.choice(running or list(ids))
        if target in ("leader", "follower"):
            leader = await anyio.to_thread.run_sync(self.cluster.wait_for_leader, LEADER_TIMEOUT)
            if target == "leader":
                return leader
            return self.rng.choice([n for n in ids if n != leader])
        raise NemesisError(f"unknown target {target!r}: a member id or one of {TARGETS}")

    # ---- internals ---------------------------------------------------------------------------

    async def _apply_cuts(self, nodes: Iterable[NodeId]) -> None:
        """Tell every affected node at once: told one after the other, a partition of a loaded
        3-node cluster took up to a second to land (a signed admin round trip each), and the
        cluster spent that second half cut."""

        async def cut(node: NodeId) -> None:
            if self.use_nft:
                blocked = sorted(b for a, b in self._want.cuts if a == node)
                try:
                    await anyio.to_thread.run_sync(self.cluster.block_outgoing, node, blocked)
                except LauncherError as error:
                    raise NemesisError(f"partition {node}: {error}") from error
            else:
                await self._push(node)

        await _all_or_first_error([partial(cut, node) for node in sorted(set(nodes))])

    def _links_of(self, node: NodeId) -> dict[str, dict[str, Any]]:
        """The full outgoing link settings `node` should have now (admin fields)."""
        base = self.cluster.config.link_specs(node)
        links: dict[str, dict[str, Any]] = {}
        for peer in self.cluster.node_ids:
            if peer == node:
                continue
            fields = describe_link(base.get(peer, LinkSpec()))
            fields.update(self._want.slow.get((node, peer), {}))
            if node in self._want.bandwidth and self.cluster.layout is None:
                fields["bandwidth"] = self._want.bandwidth[node]
            if not self.use_nft:
                fields["partitioned"] = (node, peer) in self._want.cuts
            links[peer] = fields
        return links

    async def _push(self, node: NodeId) -> None:
        """Send `node` its whole desired state, or mark it stale if it cannot hear now."""
        if self.cluster.process_state(node) != "running":
            self._stale.add(node)
            return
        url = self.cluster.url(node)
        secret = self.cluster.secret
        links = self._links_of(node)
        disk_delay = self._want.disk.get(node, 0.0)
        try:
            await _all_or_first_error(
                [
                    lambda: set_links(url, secret, links, reset=True),
                    lambda: set_disk_delay(url, secret, disk_delay),
                ]
            )
        except (ClientError, httpx.HTTPError, ValueError) as error:
            state = self.cluster.process_state(node)
            raise NemesisError(
                f"{node} ({state}): cannot apply link/disk settings: {error!r}"
                + self.cluster.stderr_tail(node)
            ) from error
        self._stale.discard(node)

    async def _run(self, action: Callable[[NodeId], Any], node: NodeId) -> Any:
        self.cluster.config.member(node)
        try:
            return await anyio.to_thread.run_sync(action, node)
        except LauncherError as error:
            raise NemesisError(f"{action.__name__} {node}: {error}") from error

    def _record(self, kind: str, nodes: tuple[NodeId, ...], detail: str = "") -> FaultEvent:
        event = FaultEvent(self.clock() - self.origin, kind, nodes, detail)
        self.events.append(event)
        return event


async def _all_or_first_error(calls: Sequence[Callable[[], Awaitable[Any]]]) -> None:
    """Run `calls` concurrently; when some fail, raise the first failure itself (not an
    exception group), after every call has finished, so callers keep their `except` clauses."""
    errors: list[BaseException] = []

    async def one(call: Callable[[], Awaitable[Any]]) -> None:
        try:
            await call()
        except Exception as error:  # re-raised below, outside the task group
            errors.append(error)

    async with anyio.create_task_group() as group:
        for call in calls:
            group.start_soon(one, call)
    if errors:
        raise errors[0]


# ---- seeded schedules --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedFault:
    """One fault of a schedule: at `at` s apply `kind` to `target`, undo it `hold` s later."""

    at: float
    kind: str
    target: str  # a member id or one of TARGETS
    hold: float


def random_schedule(
    rng: random.Random,
    duration: float,
    *,
    kinds: Sequence[str] = ("kill", "pause", "partition"),
    targets: Sequence[str] = ("leader", "random"),
    hold: tuple[float, float] = (1.0, 2.5),
    gap: tuple[float, float] = (0.5, 1.5),
    start: float = 1.0,
) -> list[PlannedFault]:
    """Faults one after another (never two at once) within `duration` seconds.

    Kinds are dealt like cards: every kind once, in a shuffled order, before any repeats, so a
    short schedule still covers them all. Each fault is undone `hold` s after it starts (a
    range, drawn uniformly), and the next one starts `gap` s after that.
    """
    for kind in kinds:
        if kind not in FAULT_KINDS:
            raise NemesisError(f"unknown fault kind {kind!r} (one of {', '.join(FAULT_KINDS)})")
    if not kinds or not targets:
        raise NemesisError("a schedule needs at least one kind and one target")
    if not (0 < hold[0] <= hold[1] and 0 <= gap[0] <= gap[1] and start >= 0):
        raise NemesisError("hold and gap must be ranges (low <= high), hold > 0, start >= 0")
    plan: list[PlannedFault] = []
    deck: list[str] = []
    now = start
    while True:
        if not deck:
            deck = list(kinds)
            rng.shuffle(deck)
        held = rng.uniform(*hold)
        if now + held > duration:
            return plan
        plan.append(PlannedFault(now, deck.pop(), rng.choice(list(targets)), held))
        now += held + rng.uniform(*gap)


async def run_schedule(
    nemesis: Nemesis, schedule: Sequence[PlannedFault], *, started: float | None = None
) -> list[FaultEvent]:
    """Apply `schedule` in real time (its times count from `started`, default now on the
    nemesis clock); every fault is undone after its hold. Returns the events recorded."""
    origin = nemesis.clock() if started is None else started
    first = len(nemesis.events)
    for planned in schedule:
        await _sleep_until(nemesis, origin + planned.at)
        node = await nemesis.resolve(planned.target)
        applied = len(nemesis.events)
        undo = await _apply(nemesis, planned.kind, node)
        if planned.target != node:  # say how the node was chosen ("leader", "random", ...)
            for i in range(applied, len(nemesis.events)):
                event = nemesis.events[i]
                nemesis.events[i] = replace(event, detail=f"{event.detail} [{planned.target}]")
        await _sleep_until(nemesis, origin + planned.at + planned.hold)
        await undo()
    return nemesis.events[first:]


async def _apply(nemesis: Nemesis, kind: str, node: NodeId) -> Callable[[], Awaitable[FaultEvent]]:
    match kind:
        case "kill":
            await nemesis.kill(node)
            return lambda: nemesis.restart(node)
        case "pause":
            await nemesis.pause(node)
            return lambda: nemesis.resume(node)
        case "partition" | "one-way":
            await nemesis.isolate(node, one_way=kind == "one-way")
            return nemesis.heal
        case "slow-link":
            others = [n for n in nemesis.cluster.node_ids if n != node]
            for other in others:
                await nemesis.slow_link(node, other, delay_ms=50.0, jitter_ms=10.0, symmetric=True)
            return nemesis.clear_slow_links
        case "slow-disk":
            await nemesis.slow_disk(node, 0.05)
            return lambda: nemesis.slow_disk(node, 0.0)
    raise NemesisError(f"unknown fault kind {kind!r}")


async def _sleep_until(nemesis: Nemesis, when: float) -> None:
    delay = when - nemesis.clock()
    if delay > 0:
        await anyio.sleep(delay)
