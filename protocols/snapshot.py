"""Snapshots of the replicated state: the KV data, the client sessions and the configuration.

A snapshot stands for the committed log prefix 1..index: applying those entries to an empty
state machine gives exactly the state it holds. It carries the client-session table, because
without it a retried command whose first attempt lies behind the snapshot would apply twice;
and the configuration (voters and learners) in force at `index`, which a node that installs
the snapshot adopts (protocols/membership.py).

The encoding is deterministic (keys and sessions sorted), so two members that snapshot the same
index produce the same bytes: a transfer interrupted at one source can resume at another that
holds the same (index, term). `checksum` is the CRC-32 of `data`; every reader verifies it.
Encoding and decoding are pure (no files): storage lives in cluster/storage/.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

from protocols.kv import KVStateMachine, Result, Session
from protocols.membership import Membership
from protocols.types import NodeId

FORMAT = 2  # 2 adds the learners; format 1 (voters only) is still read


class SnapshotError(ValueError):
    """Snapshot bytes that do not verify or decode: refused, never half-installed."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state after applying entries 1..index (`term`: the term of entry `index`)."""

    index: int
    term: int
    data: bytes
    checksum: int

    @property
    def size(self) -> int:
        return len(self.data)

    def verify(self) -> None:
        """Raise SnapshotError unless `data` matches `checksum`."""
        actual = zlib.crc32(self.data)
        if actual != self.checksum:
            raise SnapshotError(
                f"snapshot {self.index}/{self.term}: checksum mismatch"
                f" (stored {self.checksum:#010x}, data has {actual:#010x})"
            )


def take(
    index: int, term: int, membership: Membership | tuple[NodeId, ...], kv: KVStateMachine
) -> Snapshot:
    """Snapshot `kv`, which must have applied exactly entries 1..index, with the configuration
    in force at `index` (a bare tuple: voters only)."""
    if not isinstance(membership, Membership):
        membership = Membership(tuple(membership))
    if kv.applied_index != index:
        raise ValueError(f"state machine applied {kv.applied_index}, snapshot wants {index}")
    data_rows = sorted(kv.data_items())
    session_rows = [
        [client, session.seq, session.result.ok, session.result.value]
        for client, session in sorted(kv.session_items())
    ]
    payload = [
        FORMAT,
        list(membership.voters),
        data_rows,
        session_rows,
        list(membership.learners),
    ]
    data: bytes = msgpack.packb(payload, use_bin_type=True)
    return Snapshot(index, term, data, zlib.crc32(data))


def restore(snapshot: Snapshot) -> tuple[Membership, KVStateMachine]:
    """The configuration and a state machine rebuilt from `snapshot`; SnapshotError if
    malformed."""
    snapshot.verify()
    try:
        raw = msgpack.unpackb(snapshot.data, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types on garbage
        raise SnapshotError(f"snapshot {snapshot.index}: not msgpack: {error}") from error
    if type(raw) is not list or (raw[:1], len(raw)) not in (([1], 4), ([FORMAT], 5)):
        raise SnapshotError(f"snapshot {snapshot.index}: not a format-1 or -{FORMAT} snapshot")
    _, members_raw, data_raw, sessions_raw, *rest = raw
    voters = tuple(_str(member, "member") for member in _list(members_raw, "members"))
    learners = tuple(
        _str(member, "learner") for member in _list(rest[0] if rest else [], "learners")
    )
    try:
        membership = Membership(voters, learners)
    except ValueError as error:
        raise SnapshotError(f"snapshot {snapshot.index}: {error}") from error
    data: dict[str, str] = {}
    for row in _list(data_raw, "data"):
        key, value = _pair(row)
        data[key] = value
    sessions: dict[str, Session] = {}
    for row in _list(sessions_raw, "sessions"):
        if type(row) is not list or len(row) != 4:
            raise SnapshotError("a session is [client, seq, ok, value]")
        client, seq, ok, value = row
        if type(seq) is not int or seq < 0 or type(ok) is not bool:
            raise SnapshotError(f"session {client!r}: bad seq or ok")
        if value is not None:
            _str(value, "session value")
        sessions[_str(client, "client")] = Session(seq, Result(ok, value))
    return membership, KVStateMachine.restored(snapshot.index, data, sessions)


def _list(value: Any, what: str) -> list[Any]:
    if type(value) is not list:
        raise SnapshotError(f"{what} must be a list")
    return value


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise SnapshotError(f"{what} must be a str, not {type(value).__name__}")
    return value


def _pair(row: Any) -> tuple[str, str]:
    if type(row) is not list or len(row) != 2:
        raise SnapshotError("a data row is [key, value]")
    return _str(row[0], "key"), _str(row[1], "value")
