"""The client API of a node: a Starlette app over an `EngineLoop` (README, "Client API").

Routes::

    PUT    /kv/{key}     {"value": str, "client_id": str, "seq": int}  -> write
    GET    /kv/{key}?consistency=linearizable|leader|local             -> read
    DELETE /kv/{key}     {"client_id": str, "seq": int} (body optional) -> delete
    POST   /cas/{key}    {"expected": str|null, "new": str, "client_id", "seq"}
    POST   /batch        {"ops": [{"op": "put"|"get"|"delete"|"cas", ...}, ...]}
    GET    /status       role, term, leader, commit, last index, sync source, peers,
                         snapshot index and the log's size in memory (entries, bytes), the
                         configuration (voters, learners) and, at the leader, each member's
                         catch-up (entries behind, snapshot bytes sent)
    GET    /events?after=N   the engine's protocol events numbered above N, with its clock
    GET    /metrics      Prometheus text format
    POST   /admin/shaper, GET /admin/shaper, POST /admin/disk   (see cluster.admin)
    POST   /admin/membership  {"change": "add-voter"|"add-learner"|"promote"|"remove",
                               "node": id}: one configuration change, at the leader

Keys travel percent-encoded in the path and may contain any character (also "/"). The key is
read from the raw path (percent-decoded to bytes, then strict UTF-8): bytes that are not UTF-8
are refused with 400, where a lenient decoding would have merged them into one key.
`client_id` and `seq` are optional but go together: a write that carries them applies at most
once however often it is retried with the same pair.

Answers are JSON. Success is 200. Failures carry ``{"error": <code>, "detail": <text>}``:
400 ``bad-request`` (wrong types, missing fields, unknown consistency), 413 ``too-large``
(body, key or value over the limits), 421 ``not-leader`` (with ``"leader"``: the leader's URL,
or ``"unknown"``), 503 ``unknown-outcome`` (a write was accepted, then leadership was lost:
retry with the same seq), 503 ``retry`` (nothing happened; try again shortly), 503
``unavailable`` (the node is shutting down), 504 ``unknown-outcome`` (a write got no answer in
time) or ``timeout`` (a read did), 403 ``forbidden`` (admin without a valid signature), 404 and
405 for unknown routes and methods. A membership change that cannot apply (a change pending,
an unknown node, the last voter) is 409 ``refused``. Bad input never produces a 500.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import unquote_to_bytes

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cluster import admin
from cluster.engine_loop import EngineLoop, LoopClosed, Operation, ReadOp
from cluster.metrics import CONTENT_TYPE
from cluster.shaper import LinkShaper
from protocols.engine import ClientReply, Consistency, ReplyStatus, Status
from protocols.membership import ChangeKind, ConfChange
from protocols.types import Command, NodeId, Op, Role

logger = logging.getLogger(__name__)

MAX_SEQ = (1 << 63) - 1  # the codec carries seq as a signed 64-bit integer


@dataclass(frozen=True, slots=True)
class ApiLimits:
    """Input limits (bytes are UTF-8 bytes)."""

    max_key_bytes: int = 1024
    max_value_bytes: int = 64 * 1024
    max_body_bytes: int = 1 << 20
    max_client_id_bytes: int = 256
    max_batch_ops: int = 1024


class SlowDisk(Protocol):
    """What `/admin/disk` changes (FileLogStore has it)."""

    fsync_delay_seconds: float


@dataclass(slots=True)
class NodeServices:
    """Everything the app needs from its node."""

    node_id: NodeId
    protocol: str
    loop: EngineLoop
    client_urls: Mapping[NodeId, str]  # every member's HTTP base URL, for redirects
    secret: bytes
    request_timeout: float = 3.0
    limits: ApiLimits = field(default_factory=ApiLimits)
    shaper: LinkShaper | None = None
    disk: SlowDisk | None = None
    peers_view: Callable[[], dict[str, Any]] | None = None  # transport facts for /status
    refresh_peers: Callable[[], None] | None = None  # re-read the cluster file's members


class BadInput(Exception):
    """A request the API refuses; becomes a 4xx JSON answer."""

    def __init__(self, detail: str, status: int = 400, error: str = "bad-request") -> None:
        super().__init__(detail)
        self.status = status
        self.error = error


def create_app(services: NodeServices) -> Starlette:
    """The ASGI app of one node."""
    api = _Api(services)
    routes = [
        Route("/kv/{key:path}", api.kv, methods=["GET", "PUT", "DELETE"]),
        Route("/cas/{key:path}", api.cas, methods=["POST"]),
        Route("/batch", api.batch, methods=["POST"]),
        Route("/status", api.status, methods=["GET"]),
        Route("/events", api.events, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/admin/shaper", api.admin_shaper, methods=["GET", "POST"]),
        Route("/admin/disk", api.admin_disk, methods=["POST"]),
        Route("/admin/membership", api.admin_membership, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={HTTPException: _http_error, Exception: _unexpected_error},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http-error")
    return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error serving %s %s", request.method, request.url.path)
    return _error(500, "internal", f"{type(exc).__name__}: {exc}")


def _error(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, **extra}, status, headers=headers)


class _Api:
    def __init__(self, services: NodeServices) -> None:
        self.s = services
        self.admin_refusals = services.loop.registry.counter(
            "raftbench_admin_refused_total", "Admin requests refused for a bad signature."
        )
        self.bad_requests = services.loop.registry.counter(
            "raftbench_bad_requests_total", "Client requests refused as malformed.", ["error"]
        )

    # ---- key-value -------------------------------------------------------------------------

    async def kv(self, request: Request) -> Response:
        try:
            key = self._key(_path_key(request, b"/kv/"), "key")
            if request.method == "GET":
                operation: Operation = ReadOp(key, self._consistency(request))
            elif request.method == "PUT":
                body = await self._json_object(request)
                _only(body, {"value", "client_id", "seq"}, "")
                value = self._value(body.get("value"), "value")
                client_id, seq = self._session(body, "")
                operation = Command(Op.PUT, key, value, client_id=client_id, seq=seq)
            else:
                body = await self._json_object(request, optional=True)
                _only(body, {"client_id", "seq"}, "")
                client_id, seq = self._session(body, "")
                operation = Command(Op.DELETE, key, client_id=client_id, seq=seq)
        except BadInput as bad:
            return self._bad(bad)
        return await self._run_one(operation)

    async def cas(self, request: Request) -> Response:
        try:
            key = self._key(_path_key(request, b"/cas/"), "key")
            body = await self._json_object(request)
            operation = self._cas(key, body, "")
        except BadInput as bad:
            return self._bad(bad)
        return await self._run_one(operation)

    async def batch(self, request: Request) -> Response:
        try:
            body = await self._json_object(request)
            _only(body, {"ops"}, "")
            raw_ops = body.get("ops")
            if not isinstance(raw_ops, list):
                raise BadInput("ops: expected a list of operations")
            if not raw_ops:
                raise BadInput("ops: must not be empty")
            if len(raw_ops) > self.s.limits.max_batch_ops:
                raise BadInput(
                    f"ops: at most {self.s.limits.max_batch_ops} operations", 413, "too-large"
                )
            operations = [self._batch_op(op, f"ops[{i}].") for i, op in enumerate(raw_ops)]
        except BadInput as bad:
            return self._bad(bad)
        try:
            replies = await self.s.loop.execute(operations, self.s.request_timeout)
        except LoopClosed as closed:
            return _error(503, "unavailable", str(closed))
        results = []
        for operation, reply in zip(operations, replies, strict=True):
            status, payload = self._answer(operation, reply)
            results.append({"status": status, **payload})
        return JSONResponse({"results": results})

    def _batch_op(self, raw: object, where: str) -> Operation:
        if not isinstance(raw, dict):
            raise BadInput(f"{where[:-1]}: expected an object")
        kind = raw.get("op")
        if kind not in ("put", "get", "delete", "cas"):
            raise BadInput(f"{where}op: expected put, get, delete or cas, got {kind!r}")
        key = self._key(raw.get("key"), f"{where}key")
        if kind == "get":
            _only(raw, {"op", "key", "consistency"}, where)
            return ReadOp(key, self._consistency_value(raw.get("consistency"), f"{where}"))
        if kind == "cas":
            body = {k: v for k, v in raw.items() if k not in ("op", "key")}
            return self._cas(key, body, where)
        if kind == "put":
            _only(raw, {"op", "key", "value", "client_id", "seq"}, where)
            value = self._value(raw.get("value"), f"{where}value")
            client_id, seq = self._session(raw, where)
            return Command(Op.PUT, key, value, client_id=client_id, seq=seq)
        _only(raw, {"op", "key", "client_id", "seq"}, where)
        client_id, seq = self._session(raw, where)
        return Command(Op.DELETE, key, client_id=client_id, seq=seq)

    def _cas(self, key: str, body: dict[str, Any], where: str) -> Command:
        _only(body, {"expected", "new", "client_id", "seq"}, where)
        if "expected" not in body:
            raise BadInput(f"{where}expected: missing (null means 'the key must be absent')")
        expected = body["expected"]
        if expected is not None:
            expected = self._value(expected, f"{where}expected")
        new = self._value(body.get("new"), f"{where}new")
        client_id, seq = self._session(body, where)
        return Command(Op.CAS, key, new, expected, client_id=client_id, seq=seq)

    async def _run_one(self, operation: Operation) -> Response:
        try:
            (reply,) = await self.s.loop.execute([operation], self.s.request_timeout)
        except LoopClosed as closed:
            return _error(503, "unavailable", str(closed))
        status, payload = self._answer(operation, reply)
        return JSONResponse(payload, status)

    def _answer(
        self, operation: Operation, reply: ClientReply | None
    ) -> tuple[int, dict[str, Any]]:
        """The HTTP status and JSON body for an engine reply (None: no reply in time)."""
        is_read = isinstance(operation, ReadOp)
        if reply is None:
            seconds = self.s.request_timeout
            if is_read:
                return 504, {"error": "timeout", "detail": f"no answer within {seconds} s"}
            return 504, {
                "error": "unknown-outcome",
                "detail": f"no answer within {seconds} s; retry with the same client_id and seq",
            }
        match reply.status:
            case ReplyStatus.OK:
                result = reply.result
                value = None if result is None else result.value
                if is_read:
                    return 200, {"value": value, "found": value is not None, "index": reply.index}
                return 200, {
                    "ok": result is not None and result.ok,
                    "prev": value,
                    "duplicate": result is not None and result.duplicate,
                    "index": reply.index,
                }
            case ReplyStatus.NOT_LEADER:
                return 421, {
                    "error": "not-leader",
                    "detail": f"{self.s.node_id} is not the leader",
                    **self._leader_fields(reply.leader),
                }
            case ReplyStatus.UNKNOWN:
                return 503, {
                    "error": "unknown-outcome",
                    "detail": "leadership changed before the write committed; retry with the "
                    "same client_id and seq",
                }
            case _:
                return 503, {
                    "error": "retry",
                    "detail": "not ready to serve this yet; retry shortly",
                    **self._leader_fields(reply.leader),
                }

    def _leader_fields(self, leader: NodeId | None) -> dict[str, Any]:
        url = self.s.client_urls.get(leader) if leader is not None else None
        return {"leader": url or "unknown", "leader_id": leader if url else None}

    # ---- status and metrics ----------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        st = self.s.loop.status()
        body: dict[str, Any] = {
            "id": st.node_id,
            "protocol": self.s.protocol,
            "role": st.role.value,
            "term": st.term,
            "leader": st.leader,
            "leader_url": self.s.client_urls.get(st.leader) if st.leader else None,
            "commit_index": st.commit,
            "applied_index": st.applied,
            "last_index": st.last_index,
            "last_term": st.last_term,
            "sync_source": st.sync_source,
            "sync_depth": st.sync_depth,
            "pullers": list(st.pullers),
            "peers_seen": list(st.peers_seen),
            "is_leader": st.role is Role.LEADER,
            "snapshot_index": st.snapshot_index,
            "log_entries": st.log_entries,
            "log_bytes": st.log_bytes,
            "membership": _membership(st),
            "progress": [
                {
                    "node": row.node,
                    "role": row.role,
                    "match": row.match,
                    "entries_behind": row.entries_behind,
                    "snapshot_bytes_sent": row.snapshot_bytes_sent,
                    "snapshot_bytes_total": row.snapshot_bytes_total,
                }
                for row in st.progress
            ],
        }
        if self.s.peers_view is not None:
            body["peers"] = self.s.peers_view()
        return JSONResponse(body)

    async def events(self, request: Request) -> Response:
        """Recent protocol events (elections, catch-up, ...) for failover timelines.

        `now` is the engine's clock and `monotonic` the machine's CLOCK_MONOTONIC, read at the
        same instant: a reader on this machine places the events on its own clock exactly,
        whatever clock the engine runs on.
        """
        raw = request.query_params.get("after", "0")
        try:
            after = int(raw)
        except ValueError:
            return _error(400, "bad-request", f"after: must be an integer, got {raw!r}")
        last, events = self.s.loop.events_after(after)
        return JSONResponse(
            {
                "now": anyio.current_time(),
                "monotonic": time.clock_gettime(time.CLOCK_MONOTONIC),
                "last": last,
                "events": [{"seq": n, **event.as_dict()} for n, event in events],
            }
        )

    async def metrics(self, request: Request) -> Response:
        return Response(self.s.loop.registry.render(), media_type=CONTENT_TYPE)

    # ---- admin -----------------------------------------------------------------------------

    async def admin_shaper(self, request: Request) -> Response:
        try:
            body = await self._authorised(request)
            shaper = self.s.shaper
            if shaper is None:
                raise BadInput("this node has no link shaper", 409, "unsupported")
            peers = [p for p in self.s.client_urls if p != self.s.node_id]
            if request.method == "POST":
                change = admin.parse_shaper_change(_decode_json(body), peers)
                admin.apply_shaper_change(shaper, change)
        except admin.AdminInputError as error:
            return self._bad(BadInput(str(error)))
        except BadInput as bad:
            return self._bad(bad)
        return JSONResponse({"links": admin.describe_links(shaper, peers)})

    async def admin_disk(self, request: Request) -> Response:
        try:
            body = await self._authorised(request)
            disk = self.s.disk
            if disk is None:
                raise BadInput("this node has no durable store", 409, "unsupported")
            disk.fsync_delay_seconds = admin.parse_disk_change(_decode_json(body))
        except admin.AdminInputError as error:
            return self._bad(BadInput(str(error)))
        except BadInput as bad:
            return self._bad(bad)
        return JSONResponse({"fsync_delay_seconds": disk.fsync_delay_seconds})

    async def admin_membership(self, request: Request) -> Response:
        try:
            body = _decode_json(await self._authorised(request))
            if not isinstance(body, dict):
                raise BadInput(f"body: expected a JSON object, got {_type_name(body)}")
            _only(body, {"change", "node"}, "body")
            kinds = ", ".join(kind.value for kind in ChangeKind)
            raw = body.get("change")
            if raw not in set(ChangeKind):
                raise BadInput(f"change: one of {kinds}, got {raw!r}")
            kind = ChangeKind(str(raw))
            node = body.get("node")
            if not isinstance(node, str) or not node:
                raise BadInput(f"node: expected a node id, got {node!r}")
            if node not in self.s.client_urls and self.s.refresh_peers is not None:
                self.s.refresh_peers()  # a node just added to the cluster file
            if kind is not ChangeKind.REMOVE and node not in self.s.client_urls:
                known = ", ".join(sorted(self.s.client_urls))
                raise BadInput(f"node: unknown node {node!r} (the cluster file has {known})")
        except BadInput as bad:
            return self._bad(bad)
        change = ConfChange(kind, node)
        try:
            (reply,) = await self.s.loop.execute([change], self.s.request_timeout)
        except LoopClosed as closed:
            return _error(503, "unavailable", str(closed))
        if reply is not None and reply.status is ReplyStatus.REFUSED:
            detail = reply.result.value if reply.result is not None else "refused"
            return _error(409, "refused", str(detail))
        status, payload = self._answer(change, reply)
        if status == 200:
            payload = {"ok": True, "index": reply.index if reply else 0, "change": kind.value}
            payload["membership"] = _membership(self.s.loop.status())
        return JSONResponse(payload, status)

    async def _authorised(self, request: Request) -> bytes:
        body = await self._read_body(request)
        header = request.headers.get(admin.AUTH_HEADER)
        if not admin.is_authorised(self.s.secret, request.method, request.url.path, body, header):
            self.admin_refusals.inc()
            raise BadInput("missing or invalid admin signature", 403, "forbidden")
        return body

    # ---- input checking --------------------------------------------------------------------

    def _bad(self, bad: BadInput) -> Response:
        self.bad_requests.inc(1, bad.error)
        return _error(bad.status, bad.error, str(bad))

    async def _read_body(self, request: Request) -> bytes:
        limit = self.s.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                raise BadInput("content-length: not a number")
            if int(declared) > limit:
                raise BadInput(f"body: larger than {limit} bytes", 413, "too-large")
        chunks = bytearray()
        async for chunk in request.stream():
            chunks += chunk
            if len(chunks) > limit:
                raise BadInput(f"body: larger than {limit} bytes", 413, "too-large")
        return bytes(chunks)

    async def _json_object(self, request: Request, optional: bool = False) -> dict[str, Any]:
        body = await self._read_body(request)
        if optional and not body.strip():
            return {}
        value = _decode_json(body)
        if not isinstance(value, dict):
            raise BadInput("body: expected a JSON object")
        return value

    def _key(self, key: object, where: str) -> str:
        text = _sized_text(key, where, self.s.limits.max_key_bytes)
        if not text:
            raise BadInput(f"{where}: must not be empty")
        return text

    def _value(self, value: object, where: str) -> str:
        if value is None:
            raise BadInput(f"{where}: missing")
        return _sized_text(value, where, self.s.limits.max_value_bytes)

    def _session(self, body: Mapping[str, Any], where: str) -> tuple[str, int]:
        client_id = body.get("client_id")
        seq = body.get("seq")
        if client_id is None and seq is None:
            return "", 0
        if client_id is None or seq is None:
            missing = "client_id" if client_id is None else "seq"
            raise BadInput(f"{where}{missing}: client_id and seq go together")
        if not isinstance(client_id, str) or not client_id:
            raise BadInput(f"{where}client_id: expected a non-empty string")
        if _utf8_size(client_id, f"{where}client_id") > self.s.limits.max_client_id_bytes:
            raise BadInput(
                f"{where}client_id: longer than {self.s.limits.max_client_id_bytes} bytes",
                413,
                "too-large",
            )
        if not isinstance(seq, int) or isinstance(seq, bool) or not 1 <= seq <= MAX_SEQ:
            raise BadInput(f"{where}seq: expected an integer in [1, 2^63-1], got {seq!r}")
        return client_id, seq

    def _consistency(self, request: Request) -> Consistency:
        for name in request.query_params:
            if name != "consistency":
                raise BadInput(f"{name}: unknown query parameter")
        values = request.query_params.getlist("consistency")
        if len(values) > 1:
            raise BadInput("consistency: given more than once")
        return self._consistency_value(values[0] if values else None, "")

    @staticmethod
    def _consistency_value(value: object, where: str) -> Consistency:
        if value is None:
            return Consistency.LINEARIZABLE
        try:
            if not isinstance(value, str):
                raise ValueError(value)
            return Consistency(value)
        except ValueError:
            choices = ", ".join(c.value for c in Consistency)
            raise BadInput(
                f"{where}consistency: unknown level {value!r} (one of {choices})"
            ) from None


def _path_key(request: Request, prefix: bytes) -> str:
    """The key after `prefix` in the request's path, decoded strictly.

    Starlette's `path_params` come from a path percent-decoded with replacement, so the bytes
    FF, FE and EF BF BD would all name the key "\ufffd"; the raw path keeps them apart.
    """
    raw_path = request.scope.get("raw_path")
    if raw_path is None:  # ASGI makes raw_path optional; uvicorn and httpx always send it
        return str(request.path_params["key"])
    root = str(request.scope.get("root_path", "")).encode()
    path = unquote_to_bytes(bytes(raw_path))
    if root and path.startswith(root):
        path = path[len(root) :]
    if not path.startswith(prefix):
        raise BadInput(f"key: the path does not start with {prefix.decode()}")
    try:
        return path[len(prefix) :].decode("utf-8")
    except UnicodeDecodeError as error:
        bad = path[len(prefix) :][error.start : error.end].hex(" ").upper()
        raise BadInput(f"key: not valid UTF-8 (bytes {bad} at {error.start})") from None


def _membership(status: Status) -> dict[str, Any]:
    """The configuration in force at a node, for `/status` and membership answers."""
    membership = status.membership
    voters = list(membership.voters) if membership else []
    learners = list(membership.learners) if membership else []
    role = membership.role_of(status.node_id) if membership else None
    return {
        "voters": voters,
        "learners": learners,
        "index": status.config_index,
        "committed": status.config_committed,
        "role": role or "none",
    }


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as error:
        raise BadInput(f"body: not valid JSON ({_short(error)})") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _only(body: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in body:
        if key not in allowed:
            raise BadInput(f"{where}{key}: unknown field")


def _sized_text(value: object, where: str, limit: int) -> str:
    """A string of at most `limit` UTF-8 bytes, or BadInput (413 when too large)."""
    if not isinstance(value, str):
        raise BadInput(f"{where}: expected a string, got {_type_name(value)}")
    size = _utf8_size(value, where)
    if size > limit:
        raise BadInput(f"{where}: {size} bytes, the limit is {limit}", 413, "too-large")
    return value


def _utf8_size(text: str, where: str) -> int:
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        raise BadInput(f"{where}: not valid Unicode (lone surrogate)") from None


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return text if len(text) < 120 else text[:117] + "..."


__all__ = ["ApiLimits", "BadInput", "NodeServices", "SlowDisk", "create_app"]
