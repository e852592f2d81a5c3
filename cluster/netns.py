"""Network namespaces as hosts: one namespace per node, joined by a bridge (Linux, root).

Why: on loopback every node shares one network stack, so kernel-level faults (a firewall
rule, a bandwidth cap) would hit every node at once. In its own namespace each node has its own
interface, address, routing table and firewall: several real hosts on one machine.

Layout of a cluster named by a short random `tag`::

    host:  bridge  rb<tag>br      address 10.77.S.1/24 (so tests and `kv` reach the nodes)
    node i: namespace rb<tag>n<i>  interface eth0, address 10.77.S.(10+i)/24, lo up
            veth pair  rb<tag>v<i> (host side, enslaved to the bridge) <-> eth0 (inside)

S is the first /24 of 10.77.0.0/16 that no interface of the host uses yet. Faults inside a
namespace: partitions are nftables rules (table ``inet raftbench``, output chain: packets to
the cut addresses are dropped), bandwidth caps are a `tbf` qdisc on the namespace's eth0.
Delay, jitter and loss do not come from here (these kernels have no netem): the link shaper
of the peer transport applies them, in namespaces as on loopback.

Everything is done with the `ip`, `nft` and `tc` commands of iproute2 and nftables;
`check_prerequisites` says what is missing and how to install it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from protocols.types import NodeId

NFT_TABLE = "raftbench"
SUPERNET = ipaddress.IPv4Network("10.77.0.0/16")
INSIDE_INTERFACE = "eth0"
COMMAND_TIMEOUT = 20.0
INSTALL_HINT = "apt-get install -y iproute2 nftables"


class NetnsError(Exception):
    """Namespace mode is unavailable or a namespace command failed; the message says which."""


@dataclass(frozen=True, slots=True)
class NetnsHost:
    """One node's namespace."""

    node_id: NodeId
    namespace: str
    host_veth: str
    address: str  # inside the namespace, without prefix length


@dataclass(frozen=True, slots=True)
class NetnsLayout:
    """Names and addresses of one cluster's namespaces (kept in the launcher's state file)."""

    tag: str
    bridge: str
    subnet: str  # e.g. "10.77.0.0/24"
    bridge_address: str  # the host's address on the bridge
    hosts: tuple[NetnsHost, ...]

    def host(self, node_id: NodeId) -> NetnsHost:
        for host in self.hosts:
            if host.node_id == node_id:
                return host
        raise NetnsError(f"{node_id!r} has no namespace in this layout")

    def exec_prefix(self, node_id: NodeId) -> list[str]:
        """Prefix of a command line that runs it inside `node_id`'s namespace."""
        return ["ip", "netns", "exec", self.host(node_id).namespace]

    def to_json(self) -> dict[str, Any]:
        return {
            "tag": self.tag,
            "bridge": self.bridge,
            "subnet": self.subnet,
            "bridge_address": self.bridge_address,
            "hosts": [
                {
                    "node_id": h.node_id,
                    "namespace": h.namespace,
                    "host_veth": h.host_veth,
                    "address": h.address,
                }
                for h in self.hosts
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NetnsLayout:
        try:
            hosts = tuple(
                NetnsHost(
                    str(h["node_id"]), str(h["namespace"]), str(h["host_veth"]), str(h["address"])
                )
                for h in data["hosts"]
            )
            return cls(
                str(data["tag"]),
                str(data["bridge"]),
                str(data["subnet"]),
                str(data["bridge_address"]),
                hosts,
            )
        except (KeyError, TypeError) as error:
            raise NetnsError(f"malformed namespace layout: {error!r}") from None


def check_prerequisites() -> None:
    """Raise NetnsError naming everything that namespace mode lacks here."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root privileges (run as root, e.g. with sudo)")
    for tool, package in (("ip", "iproute2"), ("tc", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            missing.append(f"the `{tool}` command (Debian package {package})")
    if missing:
        raise NetnsError(
            "network-namespace mode needs " + "; ".join(missing) + f". Install: {INSTALL_HINT}"
        )


def plan_layout(
    node_ids: Sequence[NodeId], used: Iterable[ipaddress.IPv4Interface] = ()
) -> NetnsLayout:
    """Names and addresses for `node_ids`, in a /24 that none of the `used` addresses is in."""
    if len(node_ids) > 200:
        raise NetnsError(f"at most 200 nodes per namespace cluster, got {len(node_ids)}")
    taken = list(used)
    for subnet in SUPERNET.subnets(new_prefix=24):
        if not any(interface.ip in subnet for interface in taken):
            break
    else:
        raise NetnsError(f"no free /24 left in {SUPERNET} for a namespace cluster")
    tag = secrets.token_hex(3)
    base = subnet.network_address
    hosts = tuple(
        NetnsHost(
            node_id=node_id,
            namespace=f"rb{tag}n{i + 1}",
            host_veth=f"rb{tag}v{i + 1}",
            address=str(base + 10 + i + 1),
        )
        for i, node_id in enumerate(node_ids)
    )
    return NetnsLayout(tag, f"rb{tag}br", str(subnet), str(base + 1), hosts)


def host_addresses() -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses configured on this host's interfaces."""
    out = _run(["ip", "-j", "-4", "addr", "show"]).stdout
    try:
        links = json.loads(out or "[]")
        return [
            ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}")
            for link in links
            for a in link.get("addr_info", [])
            if "local" in a
        ]
    except (ValueError, KeyError, TypeError) as error:
        raise NetnsError(f"cannot read the host's addresses from `ip -j addr`: {error}") from None


def build(layout: NetnsLayout) -> None:
    """Create the bridge, namespaces and veth pairs of `layout`; on failure undo them all."""
    check_prerequisites()
    subnet = ipaddress.IPv4Network(layout.subnet)
    clash = [a for a in host_addresses() if a.ip in subnet]
    if clash:
        raise NetnsError(f"{subnet} is already used on this host ({clash[0]}); set up anew")
    prefix = subnet.prefixlen
    try:
        _run(["ip", "link", "add", layout.bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{layout.bridge_address}/{prefix}", "dev", layout.bridge])
        _run(["ip", "link", "set", layout.bridge, "up"])
        for host in layout.hosts:
            ns = host.namespace
            _run(["ip", "netns", "add", ns])
            veth = ["ip", "link", "add", host.host_veth, "type", "veth"]
            _run([*veth, "peer", "name", INSIDE_INTERFACE, "netns", ns])
            _run(["ip", "link", "set", host.host_veth, "master", layout.bridge, "up"])
            _run(["ip", "-n", ns, "addr", "add", f"{host.address}/{prefix}", "dev", "eth0"])
            _run(["ip", "-n", ns, "link", "set", INSIDE_INTERFACE, "up"])
            _run(["ip", "-n", ns, "link", "set", "lo", "up"])
    except BaseException:
        destroy(layout)
        raise


def exists(layout: NetnsLayout) -> bool:
    """Whether every namespace of `layout` is there (the cluster's hosts are up)."""
    present = set(list_namespaces())
    return all(host.namespace in present for host in layout.hosts)


def destroy(layout: NetnsLayout) -> list[str]:
    """Remove the namespaces (their veth pairs go with them) and the bridge.

    Idempotent: what is already gone is skipped. Returns the problems met (empty when clean).
    """
    problems = []
    existing = set(list_namespaces())
    for host in layout.hosts:
        if host.namespace in existing:
            result = _run(["ip", "netns", "del", host.namespace], check=False)
            if result.returncode != 0:
                problems.append(f"ip netns del {host.namespace}: {result.stderr.strip()}")
        _run(["ip", "link", "del", host.host_veth], check=False)  # usually gone with the ns
    result = _run(["ip", "link", "del", layout.bridge], check=False)
    if result.returncode != 0 and "Cannot find device" not in result.stderr:
        problems.append(f"ip link del {layout.bridge}: {result.stderr.strip()}")
    return problems


def list_namespaces() -> list[str]:
    result = _run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


# ---- faults inside the namespaces ---------------------------------------------------------------


def block_outgoing(layout: NetnsLayout, node_id: NodeId, addresses: Iterable[str]) -> None:
    """Make `node_id` drop every packet it sends to `addresses` (replacing its earlier set).

    An empty set removes the rules. One nft transaction: the old set goes and the new one comes
    at once, so there is no moment with neither.
    """
    ns = layout.host(node_id).namespace
    _run(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=nft_script(addresses))


def nft_script(addresses: Iterable[str]) -> str:
    """The `nft -f` input that makes a host drop what it sends to `addresses` (IPv4), replacing
    the earlier set in one transaction (an empty set removes the table's rules)."""
    targets = sorted(set(addresses))
    for address in targets:
        ipaddress.IPv4Address(address)  # refuse anything that is not an address
    script = [f"add table inet {NFT_TABLE}", f"delete table inet {NFT_TABLE}"]
    if targets:
        script += [
            f"table inet {NFT_TABLE} {{",
            "  chain output {",
            "    type filter hook output priority 0; policy accept;",
            f"    ip daddr {{ {', '.join(targets)} }} drop",
            "  }",
            "}",
        ]
    return "\n".join(script) + "\n"


def blocked_outgoing(layout: NetnsLayout, node_id: NodeId) -> set[str]:
    """The addresses `node_id` currently drops (read back from nftables)."""
    ns = layout.host(node_id).namespace
    result = _run(
        ["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", NFT_TABLE], check=False
    )
    if result.returncode != 0:
        return set()
    found: set[str] = set()
    try:
        for item in json.loads(result.stdout).get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                right = expr.get("match", {}).get("right")
                if isinstance(right, dict) and "set" in right:
                    found.update(str(v) for v in right["set"])
                elif isinstance(right, str):
                    found.add(right)
    except (ValueError, AttributeError) as error:
        raise NetnsError(f"cannot read nftables rules in {ns}: {error}") from None
    return found


def set_bandwidth(layout: NetnsLayout, node_id: NodeId, bytes_per_second: float | None) -> None:
    """Cap what `node_id` sends (all of it, clients' answers too) with `tbf`; None removes it."""
    ns = layout.host(node_id).namespace
    if bytes_per_second is None:
        result = _run(
            ["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", INSIDE_INTERFACE, "root"],
            check=False,
        )
        if (
            result.returncode != 0
            and "No such file" not in result.stderr
            and ("Cannot delete qdisc with handle of zero" not in result.stderr)
        ):
            raise NetnsError(f"tc qdisc del in {ns}: {result.stderr.strip()}")
        return
    if not bytes_per_second > 0:
        raise NetnsError(f"bandwidth must be > 0 bytes/s, got {bytes_per_second}")
    bits = max(8, round(bytes_per_second * 8))
    burst = max(1600, round(bytes_per_second / 50))  # 20 ms worth, at least one frame
    replace = ["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", INSIDE_INTERFACE]
    _run([*replace, "root", "tbf", "rate", f"{bits}bit", "burst", str(burst), "latency", "400ms"])


def qdisc(layout: NetnsLayout, node_id: NodeId) -> str:
    """`tc qdisc show` of the node's interface (what a report or a test reads back)."""
    ns = layout.host(node_id).namespace
    return _run(["ip", "netns", "exec", ns, "tc", "qdisc", "show", "dev", INSIDE_INTERFACE]).stdout


def _run(
    command: list[str], *, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(
            command,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise NetnsError(f"`{command[0]}` not found. Install: {INSTALL_HINT}") from None
    except subprocess.TimeoutExpired:
        raise NetnsError(f"`{' '.join(command)}` did not finish in {COMMAND_TIMEOUT} s") from None
    if check and result.returncode != 0:
        raise NetnsError(f"`{' '.join(command)}` failed: {result.stderr.strip()}")
    return result
