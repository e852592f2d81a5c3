"""`hosts.toml`: the machines a cluster runs on, reached over SSH.

Why a file of its own: the cluster file (`cluster.toml`) says what each node *is*; the
inventory says where it *lives* and how to get there. Member ids, addresses, ports and regions
of the cluster file are derived from it: the i-th host with role ``node`` is member ``n<i>``.

Format (TOML; relative paths are relative to the inventory file)::

    known_hosts = "known_hosts"          # required: the host keys SSH checks against
    [ports]                              # optional: what each node listens on
    peer = 7000
    client = 8000
    [defaults]                           # optional: any host field below except name/address
    user = "raftbench"
    key = "~/.ssh/raftbench_ed25519"     # a private key file, or `agent = true`
    python = "python3"
    work_dir = "/var/tmp/raftbench"
    [[host]]
    name = "us-1"                        # unique; letters, digits, '-', '_', '.'
    address = "203.0.113.10"             # what SSH and the other nodes connect to
    port = 22
    region = "us"
    roles = ["node"]                     # "node" and/or "loadgen"

A malformed file fails with `InventoryError` naming the file and the field, before anything
connects anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.config import read_toml
from protocols.errors import RaftbenchError
from protocols.types import NodeId

ROLES = ("node", "loadgen")
HOST_FIELDS = (
    *("name", "address", "port", "user", "key", "agent"),
    *("region", "roles", "python", "work_dir"),
)
DEFAULT_FIELDS = tuple(f for f in HOST_FIELDS if f not in ("name", "address"))
TOP_FIELDS = ("known_hosts", "ports", "defaults", "host")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")  # a host name or an IPv4/IPv6 address


class InventoryError(RaftbenchError):
    """The inventory cannot be read or is malformed; the message names the file and field."""


@dataclass(frozen=True, slots=True)
class Host:
    """One machine of the inventory."""

    name: str
    address: str
    port: int
    user: str
    key: Path | None  # None: use the SSH agent
    region: str
    roles: tuple[str, ...]
    python: str
    work_dir: str  # absolute path on the host

    @property
    def label(self) -> str:
        return f"{self.name} ({self.user}@{self.address}:{self.port})"


@dataclass(frozen=True, slots=True)
class Inventory:
    """A validated `hosts.toml`."""

    path: Path
    known_hosts: Path
    hosts: tuple[Host, ...]
    peer_port: int = 7000
    client_port: int = 8000

    @property
    def node_hosts(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if "node" in h.roles)

    @property
    def loadgen_hosts(self) -> tuple[Host, ...]:
        return tuple(h for h in self.hosts if "loadgen" in h.roles)

    def members(self, count: int | None = None) -> dict[NodeId, Host]:
        """Member id -> host for the first `count` node hosts (default: all of them)."""
        hosts = self.node_hosts
        wanted = len(hosts) if count is None else count
        if wanted > len(hosts):
            raise InventoryError(
                f"{self.path}: {wanted} nodes wanted, but only {len(hosts)} host(s) "
                "have the role 'node'"
            )
        return {f"n{i + 1}": host for i, host in enumerate(hosts[:wanted])}

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise InventoryError(f"{self.path}: no host named {name!r}")


def load_inventory(path: Path | str) -> Inventory:
    """Read and validate an inventory file (see the module docstring)."""
    path = Path(path).absolute()
    return parse_inventory(read_toml(path, InventoryError), path)


def parse_inventory(document: dict[str, Any], path: Path) -> Inventory:
    """Validate an already parsed inventory; `path` names it in errors and anchors paths."""

    def fail(field: str, problem: str) -> InventoryError:
        return InventoryError(f"{path}: {field}: {problem}")

    for key in document:
        if key not in TOP_FIELDS:
            raise fail(key, f"unknown field (known: {', '.join(TOP_FIELDS)})")
    if "known_hosts" not in document:
        raise fail("known_hosts", "missing (the file of host keys SSH checks against)")
    known_hosts = _path(document["known_hosts"], "known_hosts", path, fail)
    ports = _table(document.get("ports", {}), "ports", fail)
    for key in ports:
        if key not in ("peer", "client"):
            raise fail(f"ports.{key}", "unknown field (known: peer, client)")
    peer_port = _port(ports.get("peer", 7000), "ports.peer", fail)
    client_port = _port(ports.get("client", 8000), "ports.client", fail)
    if peer_port == client_port:
        raise fail("ports", "peer and client must differ")
    defaults = _table(document.get("defaults", {}), "defaults", fail)
    for key in defaults:
        if key not in DEFAULT_FIELDS:
            raise fail(f"defaults.{key}", f"unknown field (known: {', '.join(DEFAULT_FIELDS)})")
    raw_hosts = document.get("host")
    if not isinstance(raw_hosts, list) or not raw_hosts:
        raise fail("host", "expected at least one [[host]] table")
    hosts: list[Host] = []
    for index, raw in enumerate(raw_hosts):
        where = f"host[{index}]"
        table = _table(raw, where, fail)
        for key in table:
            if key not in HOST_FIELDS:
                raise fail(f"{where}.{key}", f"unknown field (known: {', '.join(HOST_FIELDS)})")
        merged = {**defaults, **table}
        if table.get("agent") is True and "key" not in table:
            merged.pop("key", None)  # the host's own `agent = true` overrides a default key
        hosts.append(_host(merged, where, path, fail))
    names = [h.name for h in hosts]
    for name in names:
        if names.count(name) > 1:
            raise fail("host", f"name {name!r} is given twice")
    endpoints = [(h.address, h.port) for h in hosts]
    for endpoint in endpoints:
        if endpoints.count(endpoint) > 1:
            raise fail("host", f"{endpoint[0]}:{endpoint[1]} is given twice")
    if not any("node" in h.roles for h in hosts):
        raise fail("host", "no host has the role 'node'")
    return Inventory(path, known_hosts, tuple(hosts), peer_port, client_port)


def _host(table: dict[str, Any], where: str, path: Path, fail: Any) -> Host:
    for required in ("name", "address", "user", "work_dir"):
        if required not in table:
            raise fail(f"{where}.{required}", "missing")
    name = _text(table["name"], f"{where}.name", fail)
    if not _NAME.match(name):
        raise fail(f"{where}.name", f"{name!r}: letters, digits, '.', '-', '_' only")
    address = _text(table["address"], f"{where}.address", fail)
    if not _ADDRESS.match(address):
        raise fail(f"{where}.address", f"{address!r} is not a host name or an IP address")
    user = _text(table["user"], f"{where}.user", fail)
    agent = table.get("agent", False)
    if not isinstance(agent, bool):
        raise fail(f"{where}.agent", "expected true or false")
    key: Path | None = None
    if "key" in table:
        if agent:
            raise fail(f"{where}.key", "give either key or agent = true, not both")
        key = _path(table["key"], f"{where}.key", path, fail)
    elif not agent:
        raise fail(f"{where}.key", "missing (a private key file, or agent = true)")
    roles_raw = table.get("roles", ["node"])
    if not isinstance(roles_raw, list) or not roles_raw:
        raise fail(f"{where}.roles", f"expected a non-empty list of {', '.join(ROLES)}")
    for role in roles_raw:
        if role not in ROLES:
            raise fail(f"{where}.roles", f"unknown role {role!r} (known: {', '.join(ROLES)})")
    work_dir = _text(table["work_dir"], f"{where}.work_dir", fail)
    if not work_dir.startswith("/") or "'" in work_dir or "\n" in work_dir:
        raise fail(f"{where}.work_dir", f"{work_dir!r}: expected an absolute path")
    python = _text(table.get("python", "python3"), f"{where}.python", fail)
    if "'" in python or "\n" in python:
        raise fail(f"{where}.python", f"{python!r}: not a command")
    return Host(
        name=name,
        address=address,
        port=_port(table.get("port", 22), f"{where}.port", fail),
        user=user,
        key=key,
        region=_text(table.get("region", "default"), f"{where}.region", fail),
        roles=tuple(dict.fromkeys(roles_raw)),
        python=python,
        work_dir=work_dir.rstrip("/") or "/",
    )


def _table(value: object, field: str, fail: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(field, "expected a table")
    return value


def _text(value: object, field: str, fail: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise fail(field, "expected a non-empty string")
    return value


def _port(value: object, field: str, fail: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise fail(field, f"expected a port number 1..65535, got {value!r}")
    return value


def _path(value: object, field: str, path: Path, fail: Any) -> Path:
    text = _text(value, field, fail)
    return (path.parent / Path(text).expanduser()).absolute()


__all__ = ["Host", "Inventory", "InventoryError", "load_inventory", "parse_inventory"]
