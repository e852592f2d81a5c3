"""An async client of etcd's v3 JSON gateway that gives the load generator the same results and
errors as `cluster.client.RaftbenchClient`, so one history format covers both.

Mapping (keys and values travel base64-encoded)::

    put(k, v)          POST /v3/kv/put          {"key", "value", "prev_kv": true}
    get(k)             POST /v3/kv/range        linearizable (etcd's default)
    get(k, "local")    POST /v3/kv/range        {"serializable": true}: the member's own state
    delete(k)          POST /v3/kv/deleterange  {"key", "prev_kv": true}
    cas(k, old, new)   POST /v3/kv/txn          if value(k) == old (old None: create_revision
                                                == 0, i.e. absent) then put, else range

etcd has no client sessions, so a write cannot be retried safely after its outcome became
unknown (a second application of the same put, after another client's write, is a history no
register allows). The error rules, which keep the linearizability check honest:

* a write is retried only when etcd certainly did not apply it: the connection was never made,
  or etcd refused it before proposing (too many requests, raft proposal dropped, no leader,
  request too large); when the deadline passes after only such refusals: `Unavailable`
  (recorded ``fail``);
* any other error or timeout after the request went out is `OutcomeUnknown` (``info``);
* a malformed request (gRPC InvalidArgument) is `BadRequest` (nothing applied);
* reads take no effect, so every failed read is retried until the deadline (``fail``).

`batch()` sends each operation as its own request, all at once, one connection per position
(lane). `txn()` puts several writes, deletes and linearizable reads on distinct keys in one
unconditional txn: one request and one raft entry, each operation answered as if it ran alone
at the txn's point (the load generator uses it for a round's batch: `workloads.loadgen`).
"""

from __future__ import annotations

import base64
import functools
import secrets
import ssl
import time
from collections.abc import Sequence
from typing import Any, TypeVar

import anyio
import httpx

from cluster.client import (
    BadRequest,
    BatchOp,
    Cas,
    ClientError,
    Delete,
    Get,
    OpResult,
    OutcomeUnknown,
    Put,
    ReadResult,
    Timeout,
    Unavailable,
    WriteResult,
    normalise_endpoint,
)

# etcd refuses these before anything is proposed: the write certainly did not apply.
NOT_APPLIED = (
    "etcdserver: too many requests",
    "raft proposal dropped",
    "etcdserver: no leader",
    "etcdserver: request is too large",
)
_T = TypeVar("_T")
INVALID_ARGUMENT = 3  # gRPC status code
# The connection was never made (or no pooled connection was free): nothing was sent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@functools.cache
def _tls() -> ssl.SSLContext:
    """One TLS context for every lane's client: building one per client (certificates loaded
    each time) costs ~0.3 s on a busy machine, times hundreds of lanes before a run starts."""
    return ssl.create_default_context()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def unb64(text: str | None) -> str:
    return base64.b64decode(text or "").decode()


class EtcdClient:
    """See the module docstring. `lanes`: how many operations may run at once (one connection
    each). Use as ``async with`` or call `aclose()`."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        lanes: int = 1,
        timeout: float = 10.0,
        attempt_timeout: float = 5.0,
        backoff: float = 0.02,
        max_backoff: float = 0.5,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        if timeout <= 0 or attempt_timeout <= 0 or lanes < 1:
            raise ValueError("timeouts must be > 0 and lanes >= 1")
        self.endpoints = [normalise_endpoint(e) for e in endpoints]
        self.timeout = timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._home = [secrets.randbelow(len(self.endpoints)) for _ in range(lanes)]
        self._http = [
            httpx.AsyncClient(
                trust_env=False,
                verify=_tls(),
                timeout=attempt_timeout,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            )
            for _ in range(lanes)
        ]

    async def __aenter__(self) -> EtcdClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for http in self._http:
            await http.aclose()

    async def put(self, key: str, value: str) -> WriteResult:
        return _raise(await self.run(Put(key, value)), WriteResult)

    async def delete(self, key: str) -> WriteResult:
        return _raise(await self.run(Delete(key)), WriteResult)

    async def cas(self, key: str, expected: str | None, new: str) -> WriteResult:
        return _raise(await self.run(Cas(key, expected, new)), WriteResult)

    async def get(self, key: str, consistency: str = "linearizable") -> ReadResult:
        return _raise(await self.run(Get(key, consistency)), ReadResult)

    async def batch(self, ops: Sequence[BatchOp]) -> list[OpResult | ClientError]:
        """Each operation on its own lane, all at once (see the module docstring)."""
        if len(ops) > len(self._http):
            raise ValueError(f"{len(ops)} operations, {len(self._http)} lanes")
        results: list[OpResult | ClientError | None] = [None] * len(ops)

        async def one(lane: int) -> None:
            results[lane] = await self.run(ops[lane], lane)

        async with anyio.create_task_group() as group:
            for lane in range(len(ops)):
                group.start_soon(one, lane)
        return [r for r in results if r is not None]

    async def run(self, op: BatchOp, lane: int = 0) -> OpResult | ClientError:
        """One operation on `lane`, with the retry rules of the module docstring."""
        path, body = _request(op)
        answer = await self._post(path, body, not isinstance(op, Get), lane)
        return answer if isinstance(answer, ClientError) else _checked(op, answer)

    async def txn(
        self, ops: Sequence[Put | Get | Delete], lane: int = 0
    ) -> list[OpResult | ClientError]:
        """Several operations on distinct keys in one unconditional txn (one request, one
        raft entry), each answered as if it ran alone at the txn's point. Reads in a txn are
        linearizable; a local read or a cas cannot be part of one."""
        keys = [op.key for op in ops]
        if len(set(keys)) != len(keys):
            raise ValueError("a txn's operations need distinct keys")
        if any(isinstance(op, Get) and op.consistency == "local" for op in ops):
            raise ValueError("a txn cannot hold a local (serializable) read")
        body = {"success": [_txn_op(op) for op in ops]}
        is_write = not all(isinstance(op, Get) for op in ops)
        answer = await self._post("/v3/kv/txn", body, is_write, lane)
        if isinstance(answer, ClientError):
            return [answer] * len(ops)
        responses = answer.get("responses")
        if not isinstance(responses, list) or len(responses) != len(ops):
            error = OutcomeUnknown("/v3/kv/txn: the answer does not match the request")
            return [error] * len(ops)
        header = {"header": answer.get("header")}
        out: list[OpResult | ClientError] = []
        for op, response in zip(ops, responses, strict=True):
            inner: object = next(iter(response.values()), {}) if isinstance(response, dict) else {}
            out.append(_checked(op, {**(inner if isinstance(inner, dict) else {}), **header}))
        return out

    async def _post(
        self, path: str, body: dict[str, Any], is_write: bool, lane: int
    ) -> dict[str, Any] | ClientError:
        """POST with the retry rules of the module docstring: the answer, or the error."""
        deadline = time.monotonic() + self.timeout
        pause = self.backoff
        detail = "no attempt finished"
        attempts = 0
        http = self._http[lane]
        while time.monotonic() < deadline:
            target = self.endpoints[self._home[lane]]
            attempts += 1
            try:
                response = await http.post(target + path, json=body)
                answer = response.json()
            except _NOT_SENT as error:
                detail = f"{target}: {type(error).__name__}"
                self._move(lane)
            except (httpx.HTTPError, ValueError) as error:
                detail = f"{target}: {type(error).__name__}"
                self._move(lane)
                if is_write:
                    return OutcomeUnknown(f"{path}: {detail} (after {attempts} attempts)")
            else:
                if response.status_code == 200 and isinstance(answer, dict):
                    return answer
                message = answer.get("message", "") if isinstance(answer, dict) else ""
                code = answer.get("code") if isinstance(answer, dict) else None
                detail = f"{target}: {response.status_code} {message}".strip()
                if code == INVALID_ARGUMENT:
                    return BadRequest(response.status_code, "invalid argument", str(message))
                if is_write and not any(text in str(message) for text in NOT_APPLIED):
                    self._move(lane)
                    return OutcomeUnknown(f"{path}: {detail} (after {attempts} attempts)")
                self._move(lane)
            await anyio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(self.max_backoff, pause * 2)
        kind = Unavailable if attempts else Timeout
        return kind(f"{path}: {detail} (after {attempts} attempts)")

    def _move(self, lane: int) -> None:
        self._home[lane] = (self._home[lane] + 1) % len(self.endpoints)


def _raise(result: object, kind: type[_T]) -> _T:
    if isinstance(result, ClientError):
        raise result
    assert isinstance(result, kind)
    return result


def _request(op: BatchOp) -> tuple[str, dict[str, Any]]:
    key = b64(op.key)
    match op:
        case Put():
            return "/v3/kv/put", {"key": key, "value": b64(op.value), "prev_kv": True}
        case Get():
            body: dict[str, Any] = {"key": key}
            if op.consistency == "local":
                body["serializable"] = True
            return "/v3/kv/range", body
        case Delete():
            return "/v3/kv/deleterange", {"key": key, "prev_kv": True}
        case Cas():
            if op.expected is None:
                compare = {"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": 0}
            else:
                compare = {"key": key, "target": "VALUE", "result": "EQUAL"}
                compare["value"] = b64(op.expected)
            return "/v3/kv/txn", {
                "compare": [compare],
                "success": [{"request_put": {"key": key, "value": b64(op.new)}}],
                "failure": [{"request_range": {"key": key}}],
            }


def _txn_op(op: Put | Get | Delete) -> dict[str, Any]:
    key = b64(op.key)
    match op:
        case Put():
            return {"request_put": {"key": key, "value": b64(op.value), "prev_kv": True}}
        case Get():
            return {"request_range": {"key": key}}
        case Delete():
            return {"request_delete_range": {"key": key, "prev_kv": True}}


def _revision(answer: dict[str, Any]) -> int:
    header = answer.get("header")
    return int(header.get("revision", 0)) if isinstance(header, dict) else 0


def _first_value(kvs: object) -> str | None:
    """The value of the first key of a range answer (proto3 JSON leaves an empty value out)."""
    if isinstance(kvs, list) and kvs and isinstance(kvs[0], dict):
        return unb64(kvs[0].get("value"))
    return None


def _checked(op: BatchOp, answer: dict[str, Any]) -> OpResult | ClientError:
    """`_result`, or the error an answer we cannot read stands for: the request went out, so a
    write may have applied (unknown outcome); a read told us nothing (unavailable)."""
    try:
        return _result(op, answer)
    except (ValueError, TypeError, AttributeError) as error:  # bad base64, UTF-8, shapes
        detail = f"etcd answered something unreadable: {error}"
        return Unavailable(detail) if isinstance(op, Get) else OutcomeUnknown(detail)


def _result(op: BatchOp, answer: dict[str, Any]) -> OpResult:
    index = _revision(answer)
    match op:
        case Get():
            return ReadResult(_first_value(answer.get("kvs")), index)
        case Put():
            prev = answer.get("prev_kv")
            return WriteResult(True, _first_value([prev] if prev else []), index)
        case Delete():
            return WriteResult(True, _first_value(answer.get("prev_kvs")), index)
        case Cas():
            if answer.get("succeeded"):
                return WriteResult(True, op.expected, index)
            responses = answer.get("responses")
            current = None
            if isinstance(responses, list) and responses and isinstance(responses[0], dict):
                ranged = responses[0].get("response_range")
                current = _first_value(ranged.get("kvs") if isinstance(ranged, dict) else None)
            return WriteResult(False, current, index)


__all__ = ["NOT_APPLIED", "EtcdClient", "b64", "unb64"]
