"""hosts.toml: a valid inventory derives members; each malformed one names the field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cluster.inventory import InventoryError, load_inventory, parse_inventory

VALID = """
known_hosts = "keys/known_hosts"
[ports]
peer = 7100
[defaults]
user = "rb"
key = "id_ed25519"
work_dir = "/var/tmp/rb"
[[host]]
name = "us-1"
address = "203.0.113.10"
region = "us"
roles = ["node", "loadgen"]
[[host]]
name = "eu-1"
address = "eu1.example.net"
port = 2222
region = "eu"
python = "/usr/bin/python3.11"
[[host]]
name = "gen"
address = "203.0.113.30"
roles = ["loadgen"]
agent = true
"""


def test_a_valid_inventory_gives_hosts_members_and_paths(tmp_path: Path) -> None:
    path = tmp_path / "hosts.toml"
    path.write_text(VALID)
    inventory = load_inventory(path)
    assert inventory.known_hosts == tmp_path / "keys" / "known_hosts"
    assert (inventory.peer_port, inventory.client_port) == (7100, 8000)
    assert [h.name for h in inventory.node_hosts] == ["us-1", "eu-1"]
    assert [h.name for h in inventory.loadgen_hosts] == ["us-1", "gen"]
    members = inventory.members()
    assert {n: h.name for n, h in members.items()} == {"n1": "us-1", "n2": "eu-1"}
    eu = inventory.host("eu-1")
    assert (eu.port, eu.user, eu.region, eu.python) == (2222, "rb", "eu", "/usr/bin/python3.11")
    assert eu.key == tmp_path / "id_ed25519"
    assert inventory.host("gen").key is None  # the agent
    assert inventory.host("us-1").python == "python3"
    with pytest.raises(InventoryError, match="3 nodes wanted, but only 2"):
        inventory.members(3)


def _edit(change: str) -> dict[str, object]:
    return tomllib.loads(VALID + change)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ('known_hosts = "k"\n[[host]]\nname = "a"', r"host\[0\]\.address: missing"),
        ("[[host]]\nname = 'a'", "known_hosts: missing"),
        ('known_hosts = "k"', "host: expected at least one"),
        ('known_hosts = "k"\nhosts = 1', "hosts: unknown field"),
    ],
)
def test_malformed_inventories_name_the_field(document: str, message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        parse_inventory(tomllib.loads(document), Path("/x/hosts.toml"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('[[host]]\nname = "us-1"\naddress = "198.51.100.1"', "name 'us-1' is given twice"),
        ('[[host]]\nname = "x"\naddress = "203.0.113.10"', "203.0.113.10:22 is given twice"),
        ('[[host]]\nname = "x"\naddress = "a b"', "is not a host name"),
        ('[[host]]\nname = "x"\naddress = "h"\nport = 70000', r"host\[3\]\.port: expected a port"),
        ('[[host]]\nname = "x"\naddress = "h"\nroles = ["db"]', "unknown role 'db'"),
        ('[[host]]\nname = "x"\naddress = "h"\nroles = []', "non-empty list"),
        ('[[host]]\nname = "x"\naddress = "h"\nwork_dir = "rel"', "expected an absolute path"),
        ('[[host]]\nname = "x"\naddress = "h"\nagent = true\nkey = "k"', "either key or agent"),
        ('[[host]]\nname = "x y"\naddress = "h"', "letters, digits"),
        ('[[host]]\nname = "x"\naddress = "h"\ncolour = 1', r"host\[3\]\.colour: unknown field"),
    ],
)
def test_bad_hosts_name_the_host_and_field(change: str, message: str) -> None:
    with pytest.raises(InventoryError, match=message):
        parse_inventory(_edit(change), Path("/x/hosts.toml"))


def test_defaults_and_ports_are_checked() -> None:
    bad_default = VALID.replace('user = "rb"', 'user = "rb"\nname = "all"')
    with pytest.raises(InventoryError, match=r"defaults\.name: unknown field"):
        parse_inventory(tomllib.loads(bad_default), Path("/x/hosts.toml"))
    same = VALID.replace("peer = 7100", "peer = 8000")
    with pytest.raises(InventoryError, match="peer and client must differ"):
        parse_inventory(tomllib.loads(same), Path("/x/hosts.toml"))
    no_key = VALID.replace('key = "id_ed25519"\n', "")
    with pytest.raises(InventoryError, match=r"host\[0\]\.key: missing"):
        parse_inventory(tomllib.loads(no_key), Path("/x/hosts.toml"))
    no_nodes = VALID.replace('roles = ["node", "loadgen"]', 'roles = ["loadgen"]').replace(
        'region = "eu"', 'region = "eu"\nroles = ["loadgen"]'
    )
    with pytest.raises(InventoryError, match="no host has the role 'node'"):
        parse_inventory(tomllib.loads(no_nodes), Path("/x/hosts.toml"))


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read"):
        load_inventory(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[host]\n")
    with pytest.raises(InventoryError, match="not valid TOML"):
        load_inventory(broken)
