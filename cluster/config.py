"""The cluster file (`cluster.toml`): members, timeouts, sync policy, secret, WAN topology.

Every node of a real cluster reads the same file; the launcher writes it
(`write_cluster_config`), the node and the `kv` command read it (`load_cluster_config`). The
file is validated as a whole when it is loaded, and every error names the field it is about,
e.g. ``members[2].peer: expected host:port, got '127.0.0.1'`` (list positions count from 0).
Unknown fields are errors too, so a typo never silently falls back to a default.

Schema (all times in seconds unless the name says otherwise)::

    [cluster]
    name = "local"                 # optional
    secret = "hex-or-text"         # the shared peer secret, used as its UTF-8 bytes (>= 16)
    # secret_file = "secret.key"   # instead of `secret`: a file holding it (relative to the
    #                                toml), surrounding whitespace stripped
    election_timeout = 1.0
    heartbeat_interval = 0.1
    sync_policy = "nearest"        # pull engine only: primary|nearest|freshest|random|fixed|spread
    fsync = "always"               # always | never
    request_timeout = 3.0          # optional: how long the HTTP API waits for a commit
    snapshot_entries = 0           # optional: snapshot + compact every N applied entries (0: off)
    snapshot_bytes = 0             # optional: ... or once the log holds this many payload bytes
    snapshot_chunk_bytes = 262144  # optional: bytes per snapshot message

    [sync]                         # optional: the other pull-engine knobs of
    max_lag_seconds = 30.0         # protocols.config.SyncSettings, by their field names
    # fixed_tree = [["n2", "n1"], ["n3", "n2"]]
    # max_pullers = 2              # `spread`: members one source serves before refusing more

    [[members]]
    id = "n1"
    peer = "127.0.0.1:7001"        # peer transport address
    client = "127.0.0.1:8001"      # HTTP API address
    region = "local"               # optional (default "default")
    priority = 1.0                 # optional (pull engine elections)

    [topology]                     # optional: one-way delays applied by each sender's shaper
    default_delay_ms = 0.0
    jitter_ms = 0.0
    loss = 0.0
    egress_bytes_per_s = 4e6       # optional: each node's whole peer uplink (shared by its links)
    [[topology.links]]             # per region pair or member pair
    from = "us"                    # a region or a member id
    to = "eu"
    delay_ms = 40.0
    jitter_ms = 2.0                # optional (default: topology.jitter_ms)
    loss = 0.0                     # optional (default: topology.loss)
    one_way = false                # optional: true applies it from -> to only
    bandwidth = 2e6                # optional, bytes/s: each sender's share of the pipe towards
                                   # the far side ("eu"), shared by its links to every member
                                   # there (a member pair: that one link)

Which link rule applies to the directed pair (a, b): the most specific rule matching it (member
to member beats member to region beats region to region); among equally specific ones, the
last in the file. A rule matches (a, b) as written, and also (b, a) unless `one_way`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import random
import secrets
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.shaper import EgressCaps, LinkSpec
from cluster.storage import FsyncPolicy
from cluster.transport import PeerAddress
from protocols.config import DEFAULT_SNAPSHOT_CHUNK_BYTES, Config, SyncSettings
from protocols.errors import CallerError
from protocols.types import NodeId

CLUSTER_FILE = "cluster.toml"  # the name `cluster up --dir D` gives the file inside D
MIN_SECRET_BYTES = 16
DEFAULT_REGION = "default"


class ConfigError(CallerError):
    """An invalid cluster file; the message starts with the field it is about."""


@dataclass(frozen=True, slots=True)
class Address:
    """A host and a port; IPv6 hosts are written in brackets (``[::1]:7001``)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The HTTP base URL of a client address."""
        return f"http://{self}"

    def peer_address(self) -> PeerAddress:
        return PeerAddress(self.host, self.port)

    @classmethod
    def parse(cls, text: object, where: str) -> Address:
        if not isinstance(text, str):
            raise ConfigError(f"{where}: expected host:port, got {text!r}")
        host, sep, port_text = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not sep or not host or not port_text.isdigit():
            raise ConfigError(f"{where}: expected host:port, got {text!r}")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise ConfigError(f"{where}: port must be 1-65535, got {port}")
        if ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                raise ConfigError(f"{where}: {host!r} is not an IPv6 address") from None
        return cls(host, port)


@dataclass(frozen=True, slots=True)
class MemberConfig:
    id: NodeId
    peer: Address
    client: Address
    region: str = DEFAULT_REGION
    priority: float = 1.0
    # Added by a membership change after the cluster formed: not one of the initial voters
    # (a restarted node rebuilds the first configuration from the others), and the node
    # itself starts joining (it waits for the leader to add it).
    joined: bool = False


@dataclass(frozen=True, slots=True)
class LinkRule:
    """One `[[topology.links]]` entry. `src`/`dst` name a region or a member."""

    src: str
    dst: str
    delay_ms: float
    jitter_ms: float | None = None
    loss: float | None = None
    one_way: bool = False
    bandwidth: float | None = None  # bytes/s of each sender's pipe towards the far side


@dataclass(frozen=True, slots=True)
class Topology:
    default_delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    links: tuple[LinkRule, ...] = ()
    egress_bytes_per_s: float | None = None  # every node's whole peer uplink


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    """A validated cluster file. Build one with `load_cluster_config` or `ClusterConfig.build`."""

    members: tuple[MemberConfig, ...]
    secret: str
    name: str = "local"
    election_timeout: float = 1.0
    heartbeat_interval: float = 0.1
    sync: SyncSettings = field(default_factory=SyncSettings)
    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    request_timeout: float = 3.0
    snapshot_entries: int = 0  # protocols.config.Config's compaction thresholds (0: off)
    snapshot_bytes: int = 0
    snapshot_chunk_bytes: int = DEFAULT_SNAPSHOT_CHUNK_BYTES
    topology: Topology = field(default_factory=Topology)
    secret_file: Path | None = None  # where `secret` was read from (absolute), if anywhere

    @classmethod
    def build(cls, **fields: Any) -> ClusterConfig:
        """Construct and validate in one step (what generators should use)."""
        config = cls(**fields)
        config.validate()
        return config

    # ---- what callers read -------------------------------------------------------------------

    @property
    def secret_bytes(self) -> bytes:
        return self.secret.encode()

    @property
    def member_ids(self) -> tuple[NodeId, ...]:
        return tuple(m.id for m in self.members)

    def member(self, node_id: NodeId) -> MemberConfig:
        for member in self.members:
            if member.id == node_id:
                return member
        raise ConfigError(f"--id: {node_id!r} is not a member (members: {self._id_list()})")

    def client_urls(self) -> dict[NodeId, str]:
        """Every member's HTTP base URL, e.g. ``{"n1": "http://127.0.0.1:8001"}``."""
        return {m.id: m.client.url for m in self.members}

    def engine_config(self, node_id: NodeId) -> Config:
        """The engine's view of this cluster, for member `node_id`."""
        member = self.member(node_id)
        return Config(
            node_id=node_id,
            members=self.member_ids,
            voters=tuple(m.id for m in self.members if not m.joined),
            joining=member.joined,
            election_timeout=self.election_timeout,
            heartbeat_interval=self.heartbeat_interval,
            priorities=tuple((m.id, m.priority) for m in self.members if m.priority != 1.0),
            sync=self.sync,
            snapshot_entries=self.snapshot_entries,
            snapshot_bytes=self.snapshot_bytes,
            snapshot_chunk_bytes=self.snapshot_chunk_bytes,
        ).validate()

    def link_specs(self, node_id: NodeId) -> dict[NodeId, LinkSpec]:
        """The shaper settings of `node_id`'s outgoing links (perfect links left out)."""
        source = self.member(node_id)
        specs: dict[NodeId, LinkSpec] = {}
        topo = self.topology
        for dst in self.members:
            if dst.id == node_id:
                continue
            rule = self._link_rule(source, dst)
            delay_ms = topo.default_delay_ms if rule is None else rule.delay_ms
            jitter_ms = topo.jitter_ms if rule is None or rule.jitter_ms is None else rule.jitter_ms
            loss = topo.loss if rule is None or rule.loss is None else rule.loss
            spec = LinkSpec(delay=delay_ms / 1000.0, jitter=jitter_ms / 1000.0, loss=loss)
            if not spec.is_perfect:
                specs[dst.id] = spec
        return specs

    def egress_caps(self, node_id: NodeId) -> EgressCaps:
        """`node_id`'s shared egress pipes: its uplink, and one pipe per far side of each
        matching link rule with a `bandwidth` (named after that region or member)."""
        source = self.member(node_id)
        pipes: dict[str, float] = {}
        pipe_of: dict[NodeId, str] = {}
        for dst in self.members:
            if dst.id == node_id:
                continue
            found = self._link_match(source, dst)
            if found is None or found[0].bandwidth is None:
                continue
            rule, far = found
            assert rule.bandwidth is not None
            pipes[far] = min(pipes.get(far, rule.bandwidth), rule.bandwidth)
            pipe_of[dst.id] = far
        return EgressCaps(self.topology.egress_bytes_per_s, pipes, pipe_of)

    def _link_rule(self, src: MemberConfig, dst: MemberConfig) -> LinkRule | None:
        found = self._link_match(src, dst)
        return None if found is None else found[0]

    def _link_match(self, src: MemberConfig, dst: MemberConfig) -> tuple[LinkRule, str] | None:
        """The rule for src -> dst and the name it matched `dst` by (its far side)."""

        def score(name: str, member: MemberConfig) -> int:
            if name == member.id:
                return 2
            return 1 if name == member.region else 0

        best: tuple[int, LinkRule, str] | None = None
        for rule in self.topology.links:
            pairs = [(rule.src, rule.dst)]
            if not rule.one_way:
                pairs.append((rule.dst, rule.src))
            for a, b in pairs:
                sa, sb = score(a, src), score(b, dst)
                if sa and sb and (best is None or sa + sb >= best[0]):
                    best = (sa + sb, rule, b)
        return None if best is None else (best[1], best[2])

    def _id_list(self) -> str:
        return ", ".join(self.member_ids)

    # ---- validation --------------------------------------------------------------------------

    def validate(self) -> ClusterConfig:
        """Raise ConfigError naming the first bad field; return self for chaining."""
        _check_text(self.name, "cluster.name")
        if len(self.secret_bytes) < MIN_SECRET_BYTES:
            where = "cluster.secret_file" if self.secret_file else "cluster.secret"
            raise ConfigError(f"{where}: the secret must be at least {MIN_SECRET_BYTES} bytes")
        _check_positive(self.election_timeout, "cluster.election_timeout")
        _check_positive(self.heartbeat_interval, "cluster.heartbeat_interval")
        if self.heartbeat_interval >= self.election_timeout:
            raise ConfigError("cluster.heartbeat_interval: must be < cluster.election_timeout")
        _check_positive(self.request_timeout, "cluster.request_timeout")
        if not isinstance(self.fsync, FsyncPolicy):
            raise ConfigError(f"cluster.fsync: must be 'always' or 'never', got {self.fsync!r}")
        for name, least in (("snapshot_entries", 0), ("snapshot_bytes", 0)):
            _check_int(getattr(self, name), f"cluster.{name}", least)
        _check_int(self.snapshot_chunk_bytes, "cluster.snapshot_chunk_bytes", 1)
        if not self.members:
            raise ConfigError("members: at least one [[members]] entry is needed")
        seen_ids: set[str] = set()
        seen_addresses: dict[Address, str] = {}
        for i, member in enumerate(self.members):
            where = f"members[{i}]"
            _check_text(member.id, f"{where}.id")
            if member.id in seen_ids:
                raise ConfigError(f"{where}.id: duplicate member id {member.id!r}")
            seen_ids.add(member.id)
            for name in ("peer", "client"):
                address = getattr(member, name)
                other = seen_addresses.get(address)
                if other is not None:
                    raise ConfigError(f"{where}.{name}: {address} is already used by {other}")
                seen_addresses[address] = f"{where}.{name}"
            _check_text(member.region, f"{where}.region")
            if not (_is_number(member.priority) and member.priority >= 0):
                raise ConfigError(f"{where}.priority: must be a number >= 0")
        if all(member.joined for member in self.members):
            raise ConfigError("members: every member is 'joined'; the first ones form the cluster")
        try:
            self.sync.validate(self.member_ids)
        except CallerError as error:
            raise ConfigError(str(error)) from None
        self._validate_topology()
        try:
            self.engine_config(self.members[0].id)
        except CallerError as error:
            raise ConfigError(f"cluster: {error}") from None
        return self

    def _validate_topology(self) -> None:
        topo = self.topology
        _check_non_negative(topo.default_delay_ms, "topology.default_delay_ms")
        _check_non_negative(topo.jitter_ms, "topology.jitter_ms")
        _check_probability(topo.loss, "topology.loss")
        if topo.egress_bytes_per_s is not None:
            _check_positive(topo.egress_bytes_per_s, "topology.egress_bytes_per_s")
        names = set(self.member_ids) | {m.region for m in self.members}
        for i, rule in enumerate(topo.links):
            where = f"topology.links[{i}]"
            for name, value in (("from", rule.src), ("to", rule.dst)):
                if value not in names:
                    raise ConfigError(f"{where}.{name}: {value!r} is neither a region nor a member")
            _check_non_negative(rule.delay_ms, f"{where}.delay_ms")
            if rule.jitter_ms is not None:
                _check_non_negative(rule.jitter_ms, f"{where}.jitter_ms")
            if rule.loss is not None:
                _check_probability(rule.loss, f"{where}.loss")
            if rule.bandwidth is not None:
                _check_positive(rule.bandwidth, f"{where}.bandwidth")


# ---- reading -----------------------------------------------------------------------------------

_CLUSTER_KEYS = {
    "name",
    "secret",
    "secret_file",
    "election_timeout",
    "heartbeat_interval",
    "sync_policy",
    "fsync",
    "request_timeout",
    "snapshot_entries",
    "snapshot_bytes",
    "snapshot_chunk_bytes",
}
_MEMBER_KEYS = {"id", "peer", "client", "region", "priority", "joined"}
_TOPOLOGY_KEYS = {"default_delay_ms", "jitter_ms", "loss", "links", "egress_bytes_per_s"}
_LINK_KEYS = {"from", "to", "delay_ms", "jitter_ms", "loss", "one_way", "bandwidth"}
_SYNC_KEYS = {f.name for f in dataclasses.fields(SyncSettings)}


def read_toml(path: Path, error: Callable[[str], Exception]) -> dict[str, Any]:
    """A TOML file's table, or `error("<path>: <what is wrong>")` raised when it cannot be read,
    is not UTF-8 or is not TOML (the cluster file and the hosts inventory say it alike)."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as cause:
        raise error(f"{path}: cannot read: {cause.strerror or cause}") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as cause:
        raise error(f"{path}: not valid TOML: {cause}") from None


def load_cluster_config(path: Path | str) -> ClusterConfig:
    """Read and validate a cluster file; ConfigError (naming the field) when it is invalid."""
    path = Path(path)
    return parse_cluster_config(read_toml(path, ConfigError), path.parent)


def parse_cluster_config(data: Mapping[str, Any], base_dir: Path) -> ClusterConfig:
    """Validate an already parsed TOML document; `base_dir` resolves `secret_file`."""
    _no_unknown(data, {"cluster", "members", "topology", "sync"}, "")
    cluster = _table(data.get("cluster"), "cluster")
    _no_unknown(cluster, _CLUSTER_KEYS, "cluster.")
    secret, secret_file = _read_secret(cluster, base_dir)
    fields: dict[str, Any] = {"secret": secret, "secret_file": secret_file}
    if "name" in cluster:
        fields["name"] = _string(cluster["name"], "cluster.name")
    for name in ("election_timeout", "heartbeat_interval", "request_timeout"):
        if name in cluster:
            fields[name] = _number(cluster[name], f"cluster.{name}")
    if "fsync" in cluster:
        fields["fsync"] = _fsync(cluster["fsync"], "cluster.fsync")
    for name in ("snapshot_entries", "snapshot_bytes", "snapshot_chunk_bytes"):
        if name in cluster:
            fields[name] = cluster[name]  # type and range: validate()
    fields["sync"] = _sync(cluster, data.get("sync"))
    fields["members"] = _members(data.get("members"))
    if "topology" in data:
        fields["topology"] = _topology(data["topology"])
    return ClusterConfig.build(**fields)


def _read_secret(cluster: Mapping[str, Any], base_dir: Path) -> tuple[str, Path | None]:
    if "secret" in cluster and "secret_file" in cluster:
        raise ConfigError("cluster.secret_file: give either secret or secret_file, not both")
    if "secret" in cluster:
        return _string(cluster["secret"], "cluster.secret"), None
    if "secret_file" not in cluster:
        raise ConfigError("cluster.secret: missing (or give cluster.secret_file)")
    path = base_dir / _string(cluster["secret_file"], "cluster.secret_file")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ConfigError(f"cluster.secret_file: cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cluster.secret_file: {path} is not UTF-8 text") from None
    return text, path.resolve()


def _sync(cluster: Mapping[str, Any], raw: object) -> SyncSettings:
    values: dict[str, Any] = {}
    if raw is not None:
        table = _table(raw, "sync")
        _no_unknown(table, _SYNC_KEYS, "sync.")
        values.update(table)
        if "fixed_tree" in values:
            tree = values["fixed_tree"]
            if not isinstance(tree, list):
                raise ConfigError("sync.fixed_tree: expected a list of [member, source] pairs")
            values["fixed_tree"] = tuple(tuple(e) if isinstance(e, list) else e for e in tree)
    if "sync_policy" in cluster:
        if "policy" in values:
            raise ConfigError("cluster.sync_policy: also given as sync.policy; keep one")
        policy = _string(cluster["sync_policy"], "cluster.sync_policy")
        if policy not in SyncSettings.POLICIES:
            choices = ", ".join(SyncSettings.POLICIES)
            raise ConfigError(f"cluster.sync_policy: unknown policy {policy!r} (one of {choices})")
        values["policy"] = policy
    try:
        return SyncSettings(**values)
    except TypeError as error:
        raise ConfigError(f"sync: {error}") from None


def _members(raw: object) -> tuple[MemberConfig, ...]:
    if raw is None:
        raise ConfigError("members: missing (add [[members]] entries)")
    members = []
    for where, table in _tables(raw, "members", _MEMBER_KEYS, ("id", "peer", "client")):
        member = MemberConfig(
            id=_string(table["id"], f"{where}.id"),
            peer=Address.parse(table["peer"], f"{where}.peer"),
            client=Address.parse(table["client"], f"{where}.client"),
            region=_string(table.get("region", DEFAULT_REGION), f"{where}.region"),
            priority=_number(table.get("priority", 1.0), f"{where}.priority"),
            joined=_bool(table.get("joined", False), f"{where}.joined"),
        )
        members.append(member)
    return tuple(members)


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _topology(raw: object) -> Topology:
    table = _table(raw, "topology")
    _no_unknown(table, _TOPOLOGY_KEYS, "topology.")
    links = []
    entries = _tables(
        table.get("links", []), "topology.links", _LINK_KEYS, ("from", "to", "delay_ms")
    )
    for where, link in entries:
        one_way = link.get("one_way", False)
        if not isinstance(one_way, bool):
            raise ConfigError(f"{where}.one_way: expected true or false, got {one_way!r}")
        links.append(
            LinkRule(
                src=_string(link["from"], f"{where}.from"),
                dst=_string(link["to"], f"{where}.to"),
                delay_ms=_number(link["delay_ms"], f"{where}.delay_ms"),
                jitter_ms=_optional_number(link.get("jitter_ms"), f"{where}.jitter_ms"),
                loss=_optional_number(link.get("loss"), f"{where}.loss"),
                one_way=one_way,
                bandwidth=_optional_number(link.get("bandwidth"), f"{where}.bandwidth"),
            )
        )
    return Topology(
        default_delay_ms=_number(table.get("default_delay_ms", 0.0), "topology.default_delay_ms"),
        jitter_ms=_number(table.get("jitter_ms", 0.0), "topology.jitter_ms"),
        loss=_number(table.get("loss", 0.0), "topology.loss"),
        links=tuple(links),
        egress_bytes_per_s=_optional_number(
            table.get("egress_bytes_per_s"), "topology.egress_bytes_per_s"
        ),
    )


def _tables(
    raw: object, where: str, known: set[str], required: tuple[str, ...]
) -> list[tuple[str, Mapping[str, Any]]]:
    """An array of tables ([[where]]): each with its position name, fields checked."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected an array of tables ([[{where}]])")
    out = []
    for i, item in enumerate(raw):
        place = f"{where}[{i}]"
        table = _table(item, place)
        _no_unknown(table, known, f"{place}.")
        for key in required:
            if key not in table:
                raise ConfigError(f"{place}.{key}: missing")
        out.append((place, table))
    return out


def _no_unknown(table: Mapping[str, Any], known: set[str], prefix: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{prefix}{key}: unknown field")


def _table(value: object, where: str) -> Mapping[str, Any]:
    if value is None:
        raise ConfigError(f"{where}: missing")
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table, got {type(value).__name__}")
    return value


def _string(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: object, where: str) -> float:
    if not _is_number(value):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    assert isinstance(value, int | float)
    return float(value)


def _optional_number(value: object, where: str) -> float | None:
    return None if value is None else _number(value, where)


def _fsync(value: object, where: str) -> FsyncPolicy:
    try:
        return FsyncPolicy(_string(value, where))
    except ValueError:
        raise ConfigError(f"{where}: must be 'always' or 'never', got {value!r}") from None


def _check_text(value: object, where: str) -> None:
    if not isinstance(value, str) or not value or value != value.strip():
        raise ConfigError(f"{where}: must be a non-empty string without surrounding spaces")


def _check_positive(value: float, where: str) -> None:
    if not (_is_number(value) and value > 0):
        raise ConfigError(f"{where}: must be a number > 0, got {value!r}")


def _check_non_negative(value: float, where: str) -> None:
    if not (_is_number(value) and value >= 0):
        raise ConfigError(f"{where}: must be a number >= 0, got {value!r}")


def _check_probability(value: float, where: str) -> None:
    if not (_is_number(value) and 0.0 <= value <= 1.0):
        raise ConfigError(f"{where}: must be a probability in [0, 1], got {value!r}")


# ---- writing -----------------------------------------------------------------------------------


def write_cluster_config(config: ClusterConfig, path: Path | str) -> None:
    """Write `config` as TOML that `load_cluster_config` reads back to an equal config.

    A secret read from a file is written as `secret_file` (absolute path), else inline.
    """
    config.validate()
    Path(path).write_text(dump_cluster_config(config), encoding="utf-8")


def dump_cluster_config(config: ClusterConfig) -> str:
    lines = ["[cluster]", f"name = {_toml_str(config.name)}"]
    if config.secret_file is not None:
        lines.append(f"secret_file = {_toml_str(str(config.secret_file))}")
    else:
        lines.append(f"secret = {_toml_str(config.secret)}")
    lines += [
        f"election_timeout = {config.election_timeout!r}",
        f"heartbeat_interval = {config.heartbeat_interval!r}",
        f"fsync = {_toml_str(config.fsync.value)}",
        f"request_timeout = {config.request_timeout!r}",
        f"snapshot_entries = {config.snapshot_entries!r}",
        f"snapshot_bytes = {config.snapshot_bytes!r}",
        f"snapshot_chunk_bytes = {config.snapshot_chunk_bytes!r}",
    ]
    lines += ["", "[sync]"]
    defaults = SyncSettings()
    for f in dataclasses.fields(SyncSettings):
        value = getattr(config.sync, f.name)
        if f.name == "policy" or value != getattr(defaults, f.name):
            lines.append(f"{f.name} = {_toml_value(value)}")
    for member in config.members:
        lines += [
            "",
            "[[members]]",
            f"id = {_toml_str(member.id)}",
            f"peer = {_toml_str(str(member.peer))}",
            f"client = {_toml_str(str(member.client))}",
            f"region = {_toml_str(member.region)}",
            f"priority = {member.priority!r}",
        ]
        if member.joined:
            lines.append("joined = true")
    topo = config.topology
    if topo != Topology():
        lines += [
            "",
            "[topology]",
            f"default_delay_ms = {topo.default_delay_ms!r}",
            f"jitter_ms = {topo.jitter_ms!r}",
            f"loss = {topo.loss!r}",
        ]
        if topo.egress_bytes_per_s is not None:
            lines.append(f"egress_bytes_per_s = {topo.egress_bytes_per_s!r}")
        for rule in topo.links:
            lines += [
                "",
                "[[topology.links]]",
                f"from = {_toml_str(rule.src)}",
                f"to = {_toml_str(rule.dst)}",
                f"delay_ms = {rule.delay_ms!r}",
            ]
            if rule.jitter_ms is not None:
                lines.append(f"jitter_ms = {rule.jitter_ms!r}")
            if rule.loss is not None:
                lines.append(f"loss = {rule.loss!r}")
            if rule.one_way:
                lines.append("one_way = true")
            if rule.bandwidth is not None:
                lines.append(f"bandwidth = {rule.bandwidth!r}")
    return "\n".join(lines) + "\n"


def _toml_str(text: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes; DEL must be escaped in TOML.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_str(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {value!r} as TOML")


# ---- generating --------------------------------------------------------------------------------


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free on `host` now (bound together, then released), drawn below
    the kernel's ephemeral range.

    A port the OS picks for a bind to port 0 comes from that range, which is also where every
    outgoing connection gets its local port: between the release and the node's own bind, a
    connection (another node dialing a peer that is not up yet, say) could take it, and the
    node would fail to start. Below the range only an explicit bind can take one (as
    `cluster.launcher` picks its ports).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = _ephemeral_low()
    rng = random.Random()
    sockets: list[socket.socket] = []
    chosen: list[int] = []
    try:
        for _ in range(50 * count):
            port = rng.randrange(10000, max(10001 + count, low))
            if port in chosen:
                continue
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
            chosen.append(port)
            if len(chosen) == count:
                return chosen
        raise ConfigError(f"could not find {count} free ports on {host}")
    finally:
        for sock in sockets:
            sock.close()


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral (outgoing connection) range."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def local_cluster_config(
    nodes: int,
    *,
    host: str = "127.0.0.1",
    secret: str | None = None,
    **cluster_fields: Any,
) -> ClusterConfig:
    """A cluster of `nodes` members n1..nN on `host` with free ports and a fresh secret.

    `cluster_fields` sets any other ClusterConfig field (election_timeout, fsync, topology...).
    """
    if nodes < 1:
        raise ConfigError(f"nodes: must be >= 1, got {nodes}")
    ports = free_ports(2 * nodes, host)
    members = tuple(
        MemberConfig(
            id=f"n{i + 1}",
            peer=Address(host, ports[2 * i]),
            client=Address(host, ports[2 * i + 1]),
        )
        for i in range(nodes)
    )
    return ClusterConfig.build(
        members=members, secret=secret or secrets.token_hex(32), **cluster_fields
    )


def client_endpoints(cluster_dir: Path | str) -> list[str]:
    """The HTTP base URLs of the cluster whose file is `cluster_dir/cluster.toml`."""
    config = load_cluster_config(Path(cluster_dir) / CLUSTER_FILE)
    return list(config.client_urls().values())


def _check_int(value: object, where: str, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if value < least:
        raise ConfigError(f"{where}: must be >= {least}, got {value}")
