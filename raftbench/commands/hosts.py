"""`raftbench hosts deploy|check --hosts hosts.toml`: the machines of an inventory, over SSH.

Also the `--hosts` options shared by `cluster up|status|down`, `run` and `compare`.

Exit status: 0 done, 1 a host failed (unreachable, untrusted key, no Python, install failed),
2 bad usage or a malformed inventory.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from cluster.deploy import DeployError, build_bundle, deploy, deployed_digest, venv_python
from cluster.inventory import InventoryError, load_inventory
from cluster.ssh import HostError, HostPool
from raftbench.commands.argtypes import EXIT_FAILED, EXIT_OK, EXIT_USAGE

CHECKOUT = Path(__file__).resolve().parent.parent.parent
DEFAULT_CACHE = Path.home() / ".cache" / "raftbench" / "wheels"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "hosts",
        help="deploy raftbench to the SSH hosts of an inventory, or check them",
        description="The machines listed in an inventory (hosts.toml; see cluster.inventory "
        "and the README's 'Running on your own machines').",
    )
    actions = parser.add_subparsers(dest="hosts_command", required=True, metavar="ACTION")
    deploy_parser = actions.add_parser(
        "deploy",
        help="build wheels of this checkout and its dependencies, install them on every host",
        description="`pip wheel` this checkout and its dependencies into a local cache, copy "
        "the wheels a host lacks over SFTP, and install them offline into WORK/venv on every "
        "host. A host that has this very bundle already is left as it is.",
    )
    deploy_parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help=f"wheel cache (default {DEFAULT_CACHE})"
    )
    check = actions.add_parser(
        "check",
        help="connect to every host: host key, login, Python, deployed bundle, clock offset",
    )
    for sub in (deploy_parser, check):
        add_hosts_arguments(sub, "the inventory file", required=True)
    parser.set_defaults(handler=run)


def add_hosts_arguments(
    parser: argparse.ArgumentParser, help_text: str, *, required: bool = False
) -> None:
    parser.add_argument("--hosts", type=Path, required=required, help=help_text)
    parser.add_argument(
        "--accept-new-host-keys",
        action="store_true",
        help="trust a host with no entry in the inventory's known_hosts, and add its key",
    )


@contextlib.contextmanager
def open_hosts(args: argparse.Namespace) -> Iterator[HostPool | None]:
    """A connection pool to `--hosts` (None without it); closed on the way out."""
    if getattr(args, "hosts", None) is None:
        yield None
        return
    inventory = load_inventory(args.hosts)
    with HostPool(inventory, accept_new_host_keys=args.accept_new_host_keys) as pool:
        yield pool


def check_hosts(pool: HostPool, nodes: int) -> None:
    """Before a run: `nodes` node hosts exist, answer, run Python, have raftbench deployed."""
    hosts = tuple(pool.inventory.members(nodes).values())
    pool.check(hosts)
    missing = [h.name for h in hosts if deployed_digest(pool, h) is None]
    if missing:
        raise HostError(
            f"raftbench is not deployed on {', '.join(missing)}: run "
            f"`raftbench hosts deploy --hosts {pool.inventory.path}` first"
        )


def run(args: argparse.Namespace) -> int:
    try:
        with open_hosts(args) as pool:
            assert pool is not None
            if args.hosts_command == "deploy":
                return _deploy(args, pool)
            return _check(pool)
    except InventoryError as error:
        return _fail(str(error), EXIT_USAGE)
    except (HostError, DeployError) as error:
        return _fail(str(error), EXIT_FAILED)


def _deploy(args: argparse.Namespace, pool: HostPool) -> int:
    hosts = pool.inventory.hosts
    versions = pool.check(hosts)  # every host reachable, trusted, with Python: before building
    print("hosts: " + ", ".join(f"{name} (Python {v})" for name, v in versions.items()))
    print(f"building wheels of {CHECKOUT} and its dependencies into {args.cache}")
    bundle = build_bundle(CHECKOUT, args.cache)
    print(f"bundle {bundle.digest[:12]}: {len(bundle.wheels)} wheels")
    outcome = deploy(pool, hosts, bundle)
    for host in hosts:
        print(f"  {host.name}: {outcome[host.name]} ({venv_python(host)})")
    return EXIT_OK


def _check(pool: HostPool) -> int:
    versions = pool.check()
    for host in pool.inventory.hosts:
        digest = deployed_digest(pool, host)
        deployed = f"bundle {digest[:12]}" if digest else "not deployed"
        clock = pool.clock(host, host.python).to_json()
        print(
            f"{host.name}  {host.user}@{host.address}:{host.port}  region {host.region}  "
            f"roles {','.join(host.roles)}  Python {versions[host.name]}  {deployed}  "
            f"clock {clock['offset_ms']:+.3f} ms (+/- {clock['residual_ms']:.3f})"
        )
    return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"raftbench hosts: {message}", file=sys.stderr)
    return code
