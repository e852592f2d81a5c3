"""An async client of the node HTTP API: leader discovery, redirects, retries, exactly-once.

Usage::

    async with RaftbenchClient(["http://127.0.0.1:8001", "http://127.0.0.1:8002"]) as client:
        await client.put("k", "v")
        value = (await client.get("k")).value
        swapped = (await client.cas("k", "v", "w")).ok

A client finds the leader by asking any endpoint (a follower answers 421 with the leader's
URL), remembers it, and goes back to asking around when it stops answering. Every write carries
the client's id and a sequence number; a retry after an unknown outcome (connection lost, 503
unknown-outcome, 504) reuses the same number, so the write applies at most once. Retries go on
until `timeout` (per operation) has passed; each attempt has its own `attempt_timeout`.

One call at a time per client: the session numbering relies on it (a second concurrent call
raises RuntimeError). Give each concurrent worker its own client — each client owns one
`httpx.AsyncClient`, and sharing one pool between many concurrent requests collapses its
throughput (encode/httpx#3215). `batch()` pipelines several operations in one request; each
position of a batch uses its own session lane (``<client_id>/<i>``) so that retrying the rest
of a partly answered batch keeps exactly-once for every one of them.

Errors::

    ClientError                 base class
    ├── BadRequest              the node refused the request as malformed (4xx); not retried
    ├── OutcomeUnknown          a write may or may not have been applied (retries ran out)
    ├── NotLeader               no leader could be found before the deadline
    ├── Unavailable             no endpoint answered before the deadline (nothing happened)
    └── Timeout                 the deadline passed (a read, or a write that never left)
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from cluster import admin
from cluster.tls import shared_tls_context

DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPT_TIMEOUT = 5.0


class ClientError(Exception):
    """Base of the client's errors."""


class BadRequest(ClientError):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail


class OutcomeUnknown(ClientError):
    """The write may have been applied, or not; reading the key tells."""


class NotLeader(ClientError):
    """No leader was found before the deadline (elections going on, or no quorum)."""


class Unavailable(ClientError):
    """No endpoint could be reached before the deadline."""


class Timeout(ClientError):
    """The deadline passed without an answer."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """`ok` is False only for a compare-and-set whose expectation failed (`prev` is then the
    current value) or a stale duplicate. `prev`: the value before the write."""

    ok: bool
    prev: str | None
    index: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ReadResult:
    value: str | None
    index: int

    @property
    def found(self) -> bool:
        return self.value is not None


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: str


@dataclass(frozen=True, slots=True)
class Get:
    key: str
    consistency: str = "linearizable"


@dataclass(frozen=True, slots=True)
class Delete:
    key: str


@dataclass(frozen=True, slots=True)
class Cas:
    key: str
    expected: str | None  # None: the key must be absent
    new: str


BatchOp = Put | Get | Delete | Cas
OpResult = WriteResult | ReadResult


def normalise_endpoint(endpoint: str) -> str:
    """``host:port`` or a URL, as a base URL without a trailing slash."""
    endpoint = endpoint.strip().rstrip("/")
    if not endpoint:
        raise ValueError("empty endpoint")
    if "://" not in endpoint:
        endpoint = "http://" + endpoint
    return endpoint


class _Attempts:
    """What the attempts of one operation have told so far, to pick the final error."""

    def __init__(self, is_write: bool) -> None:
        self.is_write = is_write
        self.maybe_applied = False
        self.last: type[ClientError] = Timeout
        self.detail = "no attempt finished"
        self.count = 0

    def failed(self, kind: type[ClientError], detail: str, maybe_applied: bool = False) -> None:
        self.last = kind
        self.detail = detail
        if maybe_applied and self.is_write:
            self.maybe_applied = True

    def error(self, what: str) -> ClientError:
        kind = OutcomeUnknown if self.maybe_applied else self.last
        return kind(f"{what}: {self.detail} (after {self.count} attempts)")


class RaftbenchClient:
    """See the module docstring. Use as ``async with`` or call `aclose()`."""

    def __init__(
        self,
        endpoints: Sequence[str],
        client_id: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        backoff: float = 0.02,
        max_backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        if timeout <= 0 or attempt_timeout <= 0:
            raise ValueError("timeouts must be > 0")
        self.endpoints = [normalise_endpoint(e) for e in endpoints]
        self.client_id = client_id or f"c-{secrets.token_hex(8)}"
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.leader: str | None = None  # base URL of the node believed to lead
        self._rotation = secrets.randbelow(len(self.endpoints))
        self._seqs: list[int] = []  # last seq used, per session lane
        self._busy = False
        self._http = httpx.AsyncClient(
            transport=transport,
            trust_env=False,
            timeout=attempt_timeout,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )

    async def __aenter__(self) -> RaftbenchClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- operations ----------------------------------------------------------------------------

    async def put(self, key: str, value: str) -> WriteResult:
        body = {"value": value, **self._session(0)}
        return _write_result(await self._call("PUT", _kv_path(key), body, f"put {key!r}"))

    async def delete(self, key: str) -> WriteResult:
        body = self._session(0)
        return _write_result(await self._call("DELETE", _kv_path(key), body, f"delete {key!r}"))

    async def cas(self, key: str, expected: str | None, new: str) -> WriteResult:
        body = {"expected": expected, "new": new, **self._session(0)}
        path = "/cas/" + quote(key, safe="")
        return _write_result(await self._call("POST", path, body, f"cas {key!r}"))

    async def get(self, key: str, consistency: str = "linearizable") -> ReadResult:
        path = f"{_kv_path(key)}?consistency={quote(consistency, safe='')}"
        body = await self._call("GET", path, None, f"get {key!r}")
        return ReadResult(body.get("value"), int(body.get("index", 0)))

    async def batch(self, ops: Sequence[BatchOp]) -> list[OpResult | ClientError]:
        """Run `ops` in one request per attempt; the answers come in the same order.

        Each answer is a result or the ClientError that operation ended with; operations
        that failed with a retryable answer are retried (same seq) until the deadline.
        A malformed batch as a whole raises BadRequest.
        """
        self._enter()
        try:
            return await self._batch(ops)
        finally:
            self._busy = False

    async def status(self, endpoint: str | None = None) -> dict[str, Any]:
        """The `/status` of one node (default: the presumed leader, else any endpoint)."""
        target = normalise_endpoint(endpoint) if endpoint else self._target()
        response = await self._http.get(target + "/status")
        response.raise_for_status()
        value: dict[str, Any] = response.json()
        return value

    # ---- the retry loop --------------------------------------------------------------------

    def _enter(self) -> None:
        if self._busy:
            raise RuntimeError("RaftbenchClient: one call at a time; use a client per worker")
        self._busy = True

    def _session(self, lane: int) -> dict[str, Any]:
        while len(self._seqs) <= lane:
            self._seqs.append(0)
        self._seqs[lane] += 1
        client_id = self.client_id if lane == 0 else f"{self.client_id}/{lane}"
        return {"client_id": client_id, "seq": self._seqs[lane]}

    def _target(self) -> str:
        if self.leader is not None:
            return self.leader
        return self.endpoints[self._rotation % len(self.endpoints)]

    def _move_on(self, target: str) -> None:
        """`target` did not help: forget it as leader and try the next endpoint."""
        if self.leader == target:
            self.leader = None
        if self.endpoints[self._rotation % len(self.endpoints)] == target:
            self._rotation += 1

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None, what: str
    ) -> dict[str, Any]:
        self._enter()
        try:
            return await self._call_unguarded(method, path, body, what)
        finally:
            self._busy = False

    async def _call_unguarded(
        self, method: str, path: str, body: dict[str, Any] | None, what: str
    ) -> dict[str, Any]:
        leader_only = "consistency=local" not in path
        deadline = time.monotonic() + self.timeout
        attempts = _Attempts(is_write=method != "GET")
        pause = 0.0
        while True:
            if pause:
                await _sleep_until(min(time.monotonic() + pause, deadline))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise attempts.error(what)
            target = self._target()
            attempts.count += 1
            outcome = await self._attempt(
                method, target + path, body, remaining, attempts, leader_only
            )
            if isinstance(outcome, dict):
                return outcome
            pause = self._next_pause(outcome, pause)

    async def _attempt(
        self,
        method: str,
        url: str,
        body: dict[str, Any] | list[Any] | None,
        remaining: float,
        attempts: _Attempts,
        leader_only: bool = True,
    ) -> dict[str, Any] | str:
        """The answer's JSON on success, else what to do next: "now", "later" or "elsewhere"."""
        target = url[: url.index("/", url.index("://") + 3)]
        try:
            response = await self._http.request(
                method, url, json=body, timeout=min(self.attempt_timeout, remaining)
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as error:
            attempts.failed(Unavailable, f"{target}: cannot connect ({_describe(error)})")
            self._move_on(target)
            return "elsewhere"
        except httpx.HTTPError as error:  # sent, maybe processed: read timeout, reset, ...
            attempts.failed(
                Timeout if isinstance(error, httpx.TimeoutException) else Unavailable,
                f"{target}: {_describe(error)}",
                maybe_applied=True,
            )
            self._move_on(target)
            return "elsewhere"
        try:
            answer = response.json()
            if not isinstance(answer, dict):
                raise ValueError("not an object")
        except ValueError:
            attempts.failed(Unavailable, f"{target}: answered {response.status_code}, not JSON")
            self._move_on(target)
            return "elsewhere"
        if response.status_code == 200 and "results" in answer:
            return answer  # a batch: its entries are judged one by one
        return self._judge(response.status_code, answer, target, attempts, leader_only)

    def _judge(
        self,
        status: int,
        answer: dict[str, Any],
        target: str,
        attempts: _Attempts,
        leader_only: bool = True,
    ) -> dict[str, Any] | str:
        """Classify one answer (a single operation's, or one entry of a batch).

        `leader_only`: only a leader could have answered this with success (not so for a
        `local` read), so a success names the leader.
        """
        error = str(answer.get("error", ""))
        detail = f"{target}: {status} {error}: {answer.get('detail', '')}"
        if status == 200:
            if leader_only:
                self.leader = target
            return answer
        if status == 421:
            leader = answer.get("leader")
            attempts.failed(NotLeader, detail)
            if isinstance(leader, str) and leader not in ("unknown", target):
                self.leader = normalise_endpoint(leader)
                return "now"
            self._move_on(target)
            return "later"
        if status == 503 and error == "unknown-outcome":
            attempts.failed(OutcomeUnknown, detail, maybe_applied=True)
            self._move_on(target)
            return "later"
        if status == 504:
            attempts.failed(Timeout, detail, maybe_applied=True)
            self._move_on(target)
            return "elsewhere"
        if status == 503 and error == "retry":
            attempts.failed(Unavailable, detail)
            return "later"
        if 400 <= status < 500:
            raise BadRequest(status, error or "http-error", str(answer.get("detail", "")))
        attempts.failed(Unavailable, detail)
        self._move_on(target)
        return "later"

    def _next_pause(self, outcome: str, pause: float) -> float:
        if outcome == "now":
            return 0.0
        if outcome == "elsewhere" and self.leader is None and pause == 0.0:
            return self.backoff / 4  # a quick first hop to the next endpoint
        return min(self.max_backoff, max(self.backoff, pause * 2))

    async def _batch(self, ops: Sequence[BatchOp]) -> list[OpResult | ClientError]:
        payloads = [self._batch_payload(i, op) for i, op in enumerate(ops)]
        results: list[OpResult | ClientError | None] = [None] * len(ops)
        tracks = [_Attempts(is_write=not isinstance(op, Get)) for op in ops]
        pending = list(range(len(ops)))
        deadline = time.monotonic() + self.timeout
        pause = 0.0
        while pending:
            if pause:
                await _sleep_until(min(time.monotonic() + pause, deadline))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            target = self._target()
            for i in pending:
                tracks[i].count += 1
            group = _Attempts(is_write=any(tracks[i].is_write for i in pending))
            body = {"ops": [payloads[i] for i in pending]}
            outcome = await self._attempt("POST", target + "/batch", body, remaining, group)
            if not isinstance(outcome, dict):
                for i in pending:
                    tracks[i].failed(group.last, group.detail, group.maybe_applied)
                pause = self._next_pause(outcome, pause)
                continue
            answers = outcome.get("results")
            if not isinstance(answers, list) or len(answers) != len(pending):
                raise BadRequest(200, "bad-answer", f"{target}: batch answer does not match")
            still: list[int] = []
            advice = "now"
            for i, raw in zip(pending, answers, strict=True):
                answer = raw if isinstance(raw, dict) else {}
                status = int(answer.get("status", 0))
                op = ops[i]
                leader_only = not (isinstance(op, Get) and op.consistency == "local")
                try:
                    verdict = self._judge(status, answer, target, tracks[i], leader_only)
                except BadRequest as bad:
                    results[i] = bad
                    continue
                if isinstance(verdict, dict):
                    results[i] = _op_result(ops[i], verdict)
                else:
                    still.append(i)
                    advice = verdict if advice == "now" else advice
            pending = still
            pause = self._next_pause(advice, pause) if pending else 0.0
        for i in pending:
            results[i] = tracks[i].error(f"{type(ops[i]).__name__.lower()} {ops[i].key!r}")
        return [r for r in results if r is not None]

    def _batch_payload(self, lane: int, op: BatchOp) -> dict[str, Any]:
        match op:
            case Get():
                return {"op": "get", "key": op.key, "consistency": op.consistency}
            case Put():
                return {"op": "put", "key": op.key, "value": op.value, **self._session(lane)}
            case Delete():
                return {"op": "delete", "key": op.key, **self._session(lane)}
            case Cas():
                return {
                    "op": "cas",
                    "key": op.key,
                    "expected": op.expected,
                    "new": op.new,
                    **self._session(lane),
                }


def _kv_path(key: str) -> str:
    return "/kv/" + quote(key, safe="")


def _write_result(body: dict[str, Any]) -> WriteResult:
    return WriteResult(
        ok=bool(body.get("ok")),
        prev=body.get("prev"),
        index=int(body.get("index", 0)),
        duplicate=bool(body.get("duplicate", False)),
    )


def _op_result(op: BatchOp, body: dict[str, Any]) -> OpResult:
    if isinstance(op, Get):
        return ReadResult(body.get("value"), int(body.get("index", 0)))
    return _write_result(body)


def _describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


async def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        await anyio.sleep(delay)


# ---- fault-injection hooks (see cluster.admin for the bodies) -----------------------------------


async def admin_post(
    endpoint: str, secret: bytes, path: str, body: dict[str, Any], *, timeout: float = 5.0
) -> dict[str, Any]:
    """POST a signed admin request (e.g. ``/admin/shaper``) and return the JSON answer.

    Raises BadRequest for a refused request (403 bad signature, 400 bad body).
    """
    data = json.dumps(body).encode()
    headers = {
        admin.AUTH_HEADER: admin.admin_signature(secret, "POST", path, data),
        "content-type": "application/json",
    }
    async with httpx.AsyncClient(
        trust_env=False, timeout=timeout, verify=shared_tls_context()
    ) as http:
        response = await http.post(
            normalise_endpoint(endpoint) + path, content=data, headers=headers
        )
    answer: dict[str, Any] = response.json()
    if response.status_code != 200:
        raise BadRequest(
            response.status_code, str(answer.get("error")), str(answer.get("detail", ""))
        )
    return answer


async def set_links(
    endpoint: str,
    secret: bytes,
    links: dict[str, dict[str, Any]],
    *,
    reset: bool = False,
) -> dict[str, Any]:
    """Change a node's outgoing links, e.g. ``{"n2": {"partitioned": True}}``."""
    return await admin_post(
        endpoint, secret, "/admin/shaper", admin.shaper_body(links, reset=reset)
    )


async def set_disk_delay(endpoint: str, secret: bytes, seconds: float) -> dict[str, Any]:
    """Make every persist of a node sleep `seconds` (0: back to normal)."""
    return await admin_post(endpoint, secret, "/admin/disk", {"fsync_delay_seconds": seconds})
