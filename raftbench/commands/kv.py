"""`raftbench kv`: put, get, delete and compare-and-set against a running cluster.

In the manner of etcdctl: the result goes to stdout, problems to stderr, and the exit status
says which: 0 done, 1 the operation failed (a compare-and-set whose expectation did not hold,
no leader, unreachable, outcome unknown), 2 bad usage. `get` of an absent key prints nothing
and exits 0 (stderr says it was not found).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from cluster.client import BadRequest, ClientError, OutcomeUnknown, RaftbenchClient
from cluster.config import CLUSTER_FILE, ConfigError, client_endpoints
from raftbench.commands.argtypes import EXIT_FAILED, EXIT_OK, EXIT_USAGE, positive_float


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "kv",
        help="put, get, delete, compare-and-set on a running cluster",
        description="Key-value operations through the client API of a running cluster.",
    )
    ops = parser.add_subparsers(dest="kv_command", required=True, metavar="OPERATION")
    put = ops.add_parser("put", help="set KEY to VALUE")
    put.add_argument("key")
    put.add_argument("value")
    get = ops.add_parser("get", help="print the value of KEY")
    get.add_argument("key")
    get.add_argument(
        "--consistency", choices=["linearizable", "leader", "local"], default="linearizable"
    )
    delete = ops.add_parser("delete", help="remove KEY")
    delete.add_argument("key")
    cas = ops.add_parser(
        "cas",
        help="set KEY to NEW if its value is EXPECTED",
        description="Set KEY to NEW if its value is EXPECTED (with --absent: if KEY is absent, "
        "and give only KEY NEW). Exit 1 with the current value when it is not.",
    )
    cas.add_argument("key")
    cas.add_argument("values", nargs="+", metavar="EXPECTED NEW")
    cas.add_argument("--absent", action="store_true", help="expect KEY to be absent")
    for sub in (put, get, delete, cas):
        where = sub.add_mutually_exclusive_group(required=True)
        where.add_argument(
            "--dir", type=Path, help=f"a local cluster's folder (with {CLUSTER_FILE})"
        )
        where.add_argument("--endpoints", help="comma-separated client URLs or host:port")
        sub.add_argument(
            "--timeout", type=positive_float, default=10.0, help="seconds (default 10)"
        )
        sub.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        endpoints = _endpoints(args)
    except (ConfigError, ValueError) as error:
        return _fail(f"{error}", EXIT_USAGE)
    if args.kv_command == "cas":
        wanted = 1 if args.absent else 2
        if len(args.values) != wanted:
            usage = "KEY NEW with --absent" if args.absent else "KEY EXPECTED NEW"
            return _fail(f"cas takes {usage}", EXIT_USAGE)
    code: int = anyio.run(_run, args, endpoints)
    return code


def _endpoints(args: argparse.Namespace) -> list[str]:
    if args.dir is not None:
        if not (args.dir / CLUSTER_FILE).is_file():
            raise ValueError(f"--dir: no {CLUSTER_FILE} in {args.dir} (is the cluster up?)")
        return client_endpoints(args.dir)
    endpoints = [e.strip() for e in args.endpoints.split(",") if e.strip()]
    if not endpoints:
        raise ValueError("--endpoints: no endpoint given")
    return endpoints


async def _run(args: argparse.Namespace, endpoints: list[str]) -> int:
    async with RaftbenchClient(endpoints, timeout=args.timeout) as client:
        operation = _OPERATIONS[args.kv_command]
        try:
            return await operation(client, args)
        except BadRequest as error:
            return _fail(f"refused: {error.detail or error}", EXIT_FAILED)
        except OutcomeUnknown as error:
            return _fail(f"outcome unknown (it may or may not have applied): {error}", EXIT_FAILED)
        except ClientError as error:
            return _fail(f"{type(error).__name__}: {error}", EXIT_FAILED)


async def _put(client: RaftbenchClient, args: argparse.Namespace) -> int:
    await client.put(args.key, args.value)
    print("OK")
    return EXIT_OK


async def _get(client: RaftbenchClient, args: argparse.Namespace) -> int:
    result = await client.get(args.key, args.consistency)
    if result.value is None:
        print(f"{args.key}: not found", file=sys.stderr)
    else:
        print(result.value)
    return EXIT_OK


async def _delete(client: RaftbenchClient, args: argparse.Namespace) -> int:
    result = await client.delete(args.key)
    print("OK" if result.prev is not None else "OK (was absent)")
    return EXIT_OK


async def _cas(client: RaftbenchClient, args: argparse.Namespace) -> int:
    expected, new = (None, args.values[0]) if args.absent else tuple(args.values)
    result = await client.cas(args.key, expected, new)
    if result.ok:
        print("OK")
        return EXIT_OK
    current = "absent" if result.prev is None else repr(result.prev)
    wanted = "absent" if expected is None else repr(expected)
    return _fail(f"cas failed: {args.key} is {current}, not {wanted}", EXIT_FAILED)


_OPERATIONS: dict[str, Callable[[RaftbenchClient, argparse.Namespace], Awaitable[int]]] = {
    "put": _put,
    "get": _get,
    "delete": _delete,
    "cas": _cas,
}


def _fail(message: str, code: int) -> int:
    print(f"raftbench kv: {message}", file=sys.stderr)
    return code
