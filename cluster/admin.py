"""Fault-injection hooks of a running node: who may call them, and what their bodies mean.

Two endpoints, both `POST` with a JSON body, both guarded by the cluster secret:

``/admin/shaper`` changes this node's *outgoing* links (the link shaper of its transport)::

    {"reset": false,                       # optional: first make every link perfect
     "links": {"n2": {"delay_ms": 40.0,     # one-way delay
                      "jitter_ms": 2.0,     # uniform +/- around the delay
                      "loss": 0.01,         # probability a frame is dropped
                      "bandwidth": null,    # bytes per second, null = unlimited
                      "partitioned": true}, # drop everything to n2
               "*": {...}}}                # "*": every peer

  Fields left out keep their current value; the answer (200) lists every peer's link after the
  change: ``{"links": {"n2": {"delay_ms": ..., ...}, ...}}``. ``GET /admin/shaper`` (signed
  over an empty body) returns the same without changing anything.

``/admin/disk`` slows the store down: ``{"fsync_delay_seconds": 0.05}`` makes every persist
sleep that long at its sync point (0 turns it off). The answer echoes the value in force.

Authentication: header ``X-Raftbench-Auth`` carries
``hex(HMAC-SHA256(secret, "raftbench-admin\\n" + METHOD + "\\n" + PATH + "\\n" + body))``
(see `admin_signature`), so the secret itself never travels. A request without a valid
signature gets 403 and changes nothing; so does a body that fails validation (400), which is
checked in full before anything is applied.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cluster.shaper import LinkShaper, LinkSpec
from protocols.errors import CallerError
from protocols.types import NodeId

AUTH_HEADER = "X-Raftbench-Auth"
ALL_PEERS = "*"
MAX_FSYNC_DELAY = 60.0
_LINK_FIELDS = {"delay_ms", "jitter_ms", "loss", "bandwidth", "partitioned"}


class AdminInputError(ValueError):
    """A malformed admin request body; the message names the field."""


def admin_signature(secret: bytes, method: str, path: str, body: bytes) -> str:
    """The value of the `X-Raftbench-Auth` header for a request."""
    message = b"raftbench-admin\n" + method.upper().encode() + b"\n" + path.encode() + b"\n"
    return hmac.new(secret, message + body, hashlib.sha256).hexdigest()


def is_authorised(secret: bytes, method: str, path: str, body: bytes, header: str | None) -> bool:
    if not header:
        return False
    expected = admin_signature(secret, method, path, body)
    return hmac.compare_digest(expected.encode(), header.strip().encode())


@dataclass(frozen=True, slots=True)
class ShaperChange:
    reset: bool
    links: dict[NodeId, dict[str, Any]]  # peer -> LinkSpec field changes (seconds)


def parse_shaper_change(body: object, peers: Collection[NodeId]) -> ShaperChange:
    """Validate a `/admin/shaper` body against the peer set; AdminInputError names the field."""
    if not isinstance(body, dict):
        raise AdminInputError("body: expected a JSON object")
    for key in body:
        if key not in ("reset", "links"):
            raise AdminInputError(f"{key}: unknown field")
    reset = body.get("reset", False)
    if not isinstance(reset, bool):
        raise AdminInputError("reset: expected true or false")
    raw_links = body.get("links", {})
    if not isinstance(raw_links, dict):
        raise AdminInputError("links: expected an object keyed by peer id")
    links: dict[NodeId, dict[str, Any]] = {}
    for dst, raw in raw_links.items():
        where = f"links.{dst}"
        if dst != ALL_PEERS and dst not in peers:
            raise AdminInputError(f"{where}: not a peer of this node")
        changes = _link_changes(raw, where)
        targets = sorted(peers) if dst == ALL_PEERS else [dst]
        for target in targets:
            links.setdefault(target, {}).update(changes)
    return ShaperChange(reset, links)


def _link_changes(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise AdminInputError(f"{where}: expected an object")
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _LINK_FIELDS:
            raise AdminInputError(f"{where}.{key}: unknown field")
        if key == "partitioned":
            if not isinstance(value, bool):
                raise AdminInputError(f"{where}.partitioned: expected true or false")
            changes["partitioned"] = value
        elif key == "bandwidth":
            if value is not None and not (_finite(value) and value > 0):
                raise AdminInputError(f"{where}.bandwidth: expected null or a number > 0")
            changes["bandwidth"] = None if value is None else float(value)
        elif key == "loss":
            if not (_finite(value) and 0.0 <= value <= 1.0):
                raise AdminInputError(f"{where}.loss: expected a probability in [0, 1]")
            changes["loss"] = float(value)
        else:
            if not (_finite(value) and value >= 0):
                raise AdminInputError(f"{where}.{key}: expected a number >= 0")
            changes[key.removesuffix("_ms")] = float(value) / 1000.0
    return changes


def apply_shaper_change(shaper: LinkShaper, change: ShaperChange) -> None:
    """Apply a validated change: every new spec is built first, then all are set together."""
    current = {} if change.reset else shaper.links()
    specs: dict[NodeId, LinkSpec] = {}
    for dst, fields in change.links.items():
        try:
            specs[dst] = replace(current.get(dst, LinkSpec()), **fields)
        except (CallerError, TypeError) as error:
            raise AdminInputError(f"links.{dst}: {error}") from None
    if change.reset:
        shaper.configure({})
    for dst, spec in specs.items():
        shaper.set_link(dst, spec)


def describe_links(shaper: LinkShaper, peers: Collection[NodeId]) -> dict[str, dict[str, Any]]:
    return {peer: describe_link(shaper.link(peer)) for peer in sorted(peers)}


def describe_link(spec: LinkSpec) -> dict[str, Any]:
    return {
        "delay_ms": spec.delay * 1000.0,
        "jitter_ms": spec.jitter * 1000.0,
        "loss": spec.loss,
        "bandwidth": spec.bandwidth,
        "partitioned": spec.partitioned,
    }


def parse_disk_change(body: object) -> float:
    """The `fsync_delay_seconds` of a `/admin/disk` body."""
    if not isinstance(body, dict):
        raise AdminInputError("body: expected a JSON object")
    for key in body:
        if key != "fsync_delay_seconds":
            raise AdminInputError(f"{key}: unknown field")
    if "fsync_delay_seconds" not in body:
        raise AdminInputError("fsync_delay_seconds: missing")
    value = body["fsync_delay_seconds"]
    if not (_finite(value) and 0 <= value <= MAX_FSYNC_DELAY):
        raise AdminInputError(f"fsync_delay_seconds: expected a number in [0, {MAX_FSYNC_DELAY}]")
    return float(value)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def shaper_body(
    links: Mapping[NodeId, Mapping[str, Any]] | None = None, *, reset: bool = False
) -> dict[str, Any]:
    """A `/admin/shaper` body, for callers that build one in code."""
    return {"reset": reset, "links": {dst: dict(fields) for dst, fields in (links or {}).items()}}
