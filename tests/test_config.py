"""The cluster file: what a valid one means, and that every invalid one names its field."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cluster.config import (
    Address,
    ClusterConfig,
    ConfigError,
    LinkRule,
    MemberConfig,
    Topology,
    client_endpoints,
    free_ports,
    load_cluster_config,
    local_cluster_config,
    parse_cluster_config,
    write_cluster_config,
)
from cluster.shaper import LinkSpec
from cluster.storage import FsyncPolicy
from raftbench.cli import main as cli_main

SECRET = "0123456789abcdef0123456789abcdef"

FULL = f"""
[cluster]
name = "geo"
secret = "{SECRET}"
election_timeout = 2.0
heartbeat_interval = 0.2
sync_policy = "primary"
fsync = "never"
request_timeout = 4.5

[sync]
max_lag_seconds = 10.0

[[members]]
id = "n1"
peer = "127.0.0.1:7001"
client = "127.0.0.1:8001"
region = "us"
priority = 2.0

[[members]]
id = "n2"
peer = "127.0.0.1:7002"
client = "127.0.0.1:8002"
region = "eu"

[[members]]
id = "n3"
peer = "[::1]:7003"
client = "[::1]:8003"
region = "eu"

[topology]
default_delay_ms = 1.0
jitter_ms = 0.5
loss = 0.001

[[topology.links]]
from = "us"
to = "eu"
delay_ms = 40.0

[[topology.links]]
from = "n1"
to = "n3"
delay_ms = 70.0
jitter_ms = 3.0
one_way = true
"""


def base() -> dict[str, Any]:
    """A minimal valid document, as tomllib would return it."""
    return {
        "cluster": {"secret": SECRET},
        "members": [
            {"id": f"n{i}", "peer": f"127.0.0.1:{7000 + i}", "client": f"127.0.0.1:{8000 + i}"}
            for i in (1, 2, 3)
        ],
    }


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.toml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_full_file_is_read_as_written(tmp_path: Path) -> None:
    config = load_cluster_config(write(tmp_path, FULL))
    assert config.name == "geo"
    assert config.secret_bytes == SECRET.encode()
    assert (config.election_timeout, config.heartbeat_interval) == (2.0, 0.2)
    assert config.fsync is FsyncPolicy.NEVER
    assert config.request_timeout == 4.5
    assert config.sync.policy == "primary" and config.sync.max_lag_seconds == 10.0
    assert config.member_ids == ("n1", "n2", "n3")
    assert config.member("n3").peer == Address("::1", 7003)
    assert config.client_urls()["n3"] == "http://[::1]:8003"
    assert config.member("n2").priority == 1.0 and config.member("n2").region == "eu"

    engine = config.engine_config("n2")
    assert engine.node_id == "n2" and engine.members == ("n1", "n2", "n3")
    assert engine.priority_of("n1") == 2.0 and engine.priority_of("n3") == 1.0
    assert engine.sync.policy == "primary"


def test_links_take_the_most_specific_rule_both_ways_unless_one_way(tmp_path: Path) -> None:
    config = load_cluster_config(write(tmp_path, FULL))
    us_eu = LinkSpec(delay=0.040, jitter=0.0005, loss=0.001)
    default = LinkSpec(delay=0.001, jitter=0.0005, loss=0.001)
    # n1 -> n3: the member rule (one way) beats the region rule.
    assert config.link_specs("n1") == {"n2": us_eu, "n3": LinkSpec(0.070, 0.003, 0.001)}
    # n3 -> n1: the one-way member rule does not apply backwards; the region rule does.
    assert config.link_specs("n3") == {"n1": us_eu, "n2": default}
    assert config.link_specs("n2") == {"n1": us_eu, "n3": default}


def test_no_topology_means_perfect_links() -> None:
    config = parse_cluster_config(base(), Path("."))
    assert config.link_specs("n1") == {}


def test_written_config_reads_back_equal(tmp_path: Path) -> None:
    original = load_cluster_config(write(tmp_path, FULL))
    copy_path = tmp_path / "copy.toml"
    write_cluster_config(original, copy_path)
    assert load_cluster_config(copy_path) == original


def test_secret_file_is_relative_to_the_config_and_stays_a_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "secret.key").write_text(f"  {SECRET}\n")
    document = base()
    document["cluster"] = {"secret_file": "keys/secret.key"}
    config = parse_cluster_config(document, tmp_path)
    assert config.secret == SECRET
    write_cluster_config(config, tmp_path / "again.toml")
    assert "secret_file" in (tmp_path / "again.toml").read_text()
    assert SECRET not in (tmp_path / "again.toml").read_text()
    assert load_cluster_config(tmp_path / "again.toml") == config


def test_strings_that_need_escaping_survive_a_round_trip(tmp_path: Path) -> None:
    config = ClusterConfig.build(
        members=(
            MemberConfig('n"1\\', Address("127.0.0.1", 1), Address("127.0.0.1", 2), "ré\x7f"),
        ),
        secret='quote " back \\ tab \t ünïcode 0123456789',
        name="x\ny",
        topology=Topology(links=(LinkRule("ré\x7f", "ré\x7f", 5.0),)),
    )
    write_cluster_config(config, tmp_path / "c.toml")
    assert load_cluster_config(tmp_path / "c.toml") == config


def test_local_cluster_config_has_distinct_free_ports_and_a_fresh_secret() -> None:
    one = local_cluster_config(3, election_timeout=0.5, heartbeat_interval=0.05)
    two = local_cluster_config(3)
    addresses = [a for m in one.members for a in (m.peer, m.client)]
    assert len(set(addresses)) == 6
    assert one.election_timeout == 0.5
    assert one.secret != two.secret and len(one.secret_bytes) >= 16
    assert len(set(free_ports(5))) == 5


def test_free_ports_are_below_the_ephemeral_range() -> None:
    # Outgoing connections take their local ports from that range: one could take a port
    # between free_ports and the node's bind (a node dialing a peer that is not up yet).
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = free_ports(20)
    assert len(set(ports)) == 20
    assert all(1024 < port < low for port in ports), ports
    assert all(
        port < low for m in local_cluster_config(3).members for port in (m.peer.port, m.client.port)
    )


def test_client_endpoints_of_a_cluster_folder(tmp_path: Path) -> None:
    config = parse_cluster_config(base(), tmp_path)
    write_cluster_config(config, tmp_path / "cluster.toml")
    assert client_endpoints(tmp_path) == [f"http://127.0.0.1:{8000 + i}" for i in (1, 2, 3)]


Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        target: Any = document
        parts = path.split(".")
        for part in parts[:-1]:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        last = parts[-1]
        if value is _DELETE:
            del target[int(last) if last.isdigit() else last]
        else:
            target[int(last) if last.isdigit() else last] = value

    return mutate


_DELETE = object()

INVALID: list[tuple[str, Mutation, str]] = [
    ("no cluster table", _set("cluster", _DELETE), "cluster: missing"),
    ("no secret", _set("cluster.secret", _DELETE), "cluster.secret: missing"),
    ("short secret", _set("cluster.secret", "short"), "cluster.secret: the secret must be"),
    ("secret not text", _set("cluster.secret", 12), "cluster.secret: expected a string"),
    ("secret twice", _set("cluster.secret_file", "x"), "cluster.secret_file: give either"),
    ("missing secret file", _set("cluster", {"secret_file": "nope"}), "cluster.secret_file"),
    ("typo", _set("cluster.electon_timeout", 1.0), "cluster.electon_timeout: unknown field"),
    ("zero timeout", _set("cluster.election_timeout", 0), "cluster.election_timeout: must be"),
    ("timeout text", _set("cluster.election_timeout", "1s"), "cluster.election_timeout"),
    ("timeout bool", _set("cluster.heartbeat_interval", True), "cluster.heartbeat_interval"),
    (
        "heartbeat too slow",
        _set("cluster.heartbeat_interval", 5.0),
        "cluster.heartbeat_interval: must be < cluster.election_timeout",
    ),
    ("nan", _set("cluster.request_timeout", float("nan")), "cluster.request_timeout"),
    ("fsync", _set("cluster.fsync", "sometimes"), "cluster.fsync: must be 'always' or 'never'"),
    ("policy", _set("cluster.sync_policy", "closest"), "cluster.sync_policy: unknown policy"),
    ("sync knob", _set("sync.max_lag_seconds", -1), "sync.max_lag_seconds"),
    ("sync typo", _set("sync.max_lag", 1), "sync.max_lag: unknown field"),
    ("fixed tree", _set("sync.fixed_tree", [["n2", "n9"]]), "sync.fixed_tree: 'n9'"),
    ("no members", _set("members", _DELETE), "members: missing"),
    ("members not a list", _set("members", {"id": "n1"}), "members: expected an array"),
    ("empty members", _set("members", []), "members: at least one"),
    ("member not a table", _set("members.1", "n2"), "members[1]: expected a table"),
    ("member without id", _set("members.1.id", _DELETE), "members[1].id: missing"),
    ("member id number", _set("members.1.id", 2), "members[1].id: expected a string"),
    ("duplicate id", _set("members.2.id", "n1"), "members[2].id: duplicate member id"),
    ("blank id", _set("members.2.id", " "), "members[2].id: must be a non-empty string"),
    ("no port", _set("members.2.peer", "127.0.0.1"), "members[2].peer: expected host:port"),
    ("bad port", _set("members.2.peer", "127.0.0.1:99999"), "members[2].peer: port must be"),
    ("port zero", _set("members.0.client", "127.0.0.1:0"), "members[0].client: port must be"),
    ("bad ipv6", _set("members.0.client", "[::g]:80"), "members[0].client: '::g' is not"),
    (
        "shared address",
        _set("members.1.client", "127.0.0.1:7001"),
        "members[1].client: 127.0.0.1:7001 is already used by members[0].peer",
    ),
    ("priority", _set("members.0.priority", -1), "members[0].priority: must be a number >= 0"),
    ("member typo", _set("members.0.zone", "x"), "members[0].zone: unknown field"),
    ("topology typo", _set("topology.delay", 1), "topology.delay: unknown field"),
    ("negative delay", _set("topology.default_delay_ms", -1), "topology.default_delay_ms"),
    ("loss > 1", _set("topology.loss", 1.5), "topology.loss: must be a probability"),
    (
        "link to nowhere",
        _set("topology.links", [{"from": "us", "to": "n1", "delay_ms": 1}]),
        "topology.links[0].from: 'us' is neither a region nor a member",
    ),
    (
        "link without delay",
        _set("topology.links", [{"from": "n1", "to": "n2"}]),
        "topology.links[0].delay_ms: missing",
    ),
    (
        "link one_way",
        _set("topology.links", [{"from": "n1", "to": "n2", "delay_ms": 1, "one_way": 1}]),
        "topology.links[0].one_way: expected true or false",
    ),
    ("unknown table", _set("nodes", {}), "nodes: unknown field"),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [(m, e) for _, m, e in INVALID], ids=[n for n, _, _ in INVALID]
)
def test_invalid_config_names_the_field(mutate: Mutation, message: str, tmp_path: Path) -> None:
    document = base()
    mutate(document)
    with pytest.raises(ConfigError) as caught:
        parse_cluster_config(document, tmp_path)
    assert str(caught.value).startswith(message), str(caught.value)


def test_unreadable_or_malformed_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_cluster_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_cluster_config(write(tmp_path, "[cluster\nsecret = 1"))
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_cluster_config(tmp_path / "bin.toml")


def test_unknown_member_id_is_refused() -> None:
    config = parse_cluster_config(base(), Path("."))
    with pytest.raises(ConfigError, match="'n9' is not a member"):
        config.engine_config("n9")


def test_node_command_fails_at_start_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, FULL.replace('peer = "127.0.0.1:7002"', 'peer = "127.0.0.1"'))
    code = cli_main(["node", "--config", str(path), "--id", "n1", "--protocol", "push"])
    assert code == 2
    assert "members[1].peer: expected host:port" in capsys.readouterr().err
    good = write(tmp_path, FULL)
    code = cli_main(["node", "--config", str(good), "--id", "n7", "--protocol", "push"])
    assert code == 2
    assert "--id: 'n7' is not a member" in capsys.readouterr().err
