"""The peer wire format, sans-I/O: frames, the authenticating handshake, sealed frames.

Nothing here touches a socket or a clock, so both ends of a connection can be paired in memory
in a test, and a hostile peer can be played by a test with the very same functions.

Every frame on the wire is ``u32 length | u8 kind | body`` (length counts kind and body, big
endian). A connection starts with a handshake in which each side proves it knows the cluster
secret without sending it:

    dialer   -> HELLO      [magic, version, dialer id, acceptor id, dialer nonce]
    acceptor -> CHALLENGE  [acceptor id, acceptor nonce, acceptor proof]
    dialer   -> AUTH       [dialer proof]
    acceptor -> WELCOME    (the first sealed frame, so the dialer knows the keys agree)

A proof is HMAC-SHA256(secret, role label | transcript), the transcript binding both ids and both
fresh nonces, so a recorded handshake cannot be replayed and one side's proof cannot stand in for
the other's. Both sides then derive one key per direction from the same transcript. After the
handshake every frame is sealed: its body is ``payload | mac`` with
mac = HMAC-SHA256(direction key, u64 sequence | kind | payload) cut to 16 bytes. The sequence
number is implicit (each side counts frames per direction), so a frame replayed, reordered or
spliced in from another connection (other nonces, other keys) fails its MAC.

A DATA frame carries a batch of codec-encoded envelopes, each prefixed by its u32 length.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from protocols.errors import PeerError
from protocols.types import NodeId

MAGIC = "raftbench-peer"
VERSION = 1
NONCE_BYTES = 16
MAC_BYTES = 16  # HMAC-SHA256 truncated to 128 bits (RFC 2104 section 5 allows truncation)
HEADER = struct.Struct(">IB")  # length (of kind + body), kind
HANDSHAKE_MAX_FRAME = 1024  # bytes a peer may make us buffer before it has authenticated
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class FrameKind(IntEnum):
    DATA = 1  # a batch of envelopes
    PING = 2  # u64 id: answered by a PONG with the same id (RTT measurement)
    PONG = 3
    HELLO = 16  # handshake frames are not sealed
    CHALLENGE = 17
    AUTH = 18
    WELCOME = 19  # sealed, empty payload


SEALED_KINDS = frozenset({FrameKind.DATA, FrameKind.PING, FrameKind.PONG, FrameKind.WELCOME})


class FramingError(PeerError):
    """The byte stream cannot be split into frames any more: the connection must be closed."""


class AuthError(PeerError):
    """A proof or a frame MAC does not verify: the sender does not hold the cluster secret."""


class HandshakeError(PeerError):
    """A handshake message is malformed, of the wrong version, or addressed to someone else."""


@dataclass(frozen=True, slots=True)
class RawFrame:
    kind: FrameKind
    body: bytes

    @property
    def wire_size(self) -> int:
        return HEADER.size + len(self.body)


def pack_frame(kind: FrameKind, body: bytes) -> bytes:
    return HEADER.pack(1 + len(body), kind) + body


class FrameDecoder:
    """Splits a received byte stream into frames; refuses lengths above `max_frame`.

    The limit bounds what a peer can make us buffer; it is small until the peer has
    authenticated and is raised afterwards.
    """

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[RawFrame]:
        self._buffer += data
        frames: list[RawFrame] = []
        offset = 0
        buffer = self._buffer
        while len(buffer) - offset >= HEADER.size:
            length, kind = HEADER.unpack_from(buffer, offset)
            if length < 1 or length - 1 > self.max_frame:
                raise FramingError(f"frame length {length} outside 1..{self.max_frame + 1}")
            try:
                frame_kind = FrameKind(kind)
            except ValueError as error:
                raise FramingError(f"unknown frame kind {kind}") from error
            end = offset + _U32.size + length
            if len(buffer) < end:
                break
            start = offset + HEADER.size
            frames.append(RawFrame(frame_kind, bytes(buffer[start:end])))
            offset = end
        del buffer[:offset]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buffer)


# ---- sealed frames ---------------------------------------------------------------------------


def _mac(key: bytes, seq: int, kind: FrameKind, payload: bytes) -> bytes:
    return hmac.digest(key, _U64.pack(seq) + bytes((kind,)) + payload, hashlib.sha256)[:MAC_BYTES]


class Sealer:
    """Seals outgoing frames of one direction of one connection."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.seq = 0

    def seal(self, kind: FrameKind, payload: bytes) -> bytes:
        mac = _mac(self._key, self.seq, kind, payload)
        self.seq += 1
        return pack_frame(kind, payload + mac)


class Opener:
    """Verifies incoming sealed frames of one direction; a rejected frame does not use a number.

    Not advancing on failure means a frame injected by someone without the key is dropped and
    the genuine stream carries on verifying.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self.seq = 0

    def open(self, frame: RawFrame) -> bytes:
        if frame.kind not in SEALED_KINDS or len(frame.body) < MAC_BYTES:
            raise AuthError(f"{frame.kind.name} frame is not a sealed frame")
        payload, mac = frame.body[:-MAC_BYTES], frame.body[-MAC_BYTES:]
        if not hmac.compare_digest(mac, _mac(self._key, self.seq, frame.kind, payload)):
            raise AuthError(f"bad MAC on {frame.kind.name} frame #{self.seq}")
        self.seq += 1
        return payload


# ---- payloads --------------------------------------------------------------------------------


def pack_batch(items: Sequence[bytes]) -> bytes:
    return b"".join(_U32.pack(len(item)) + item for item in items)


def unpack_batch(payload: bytes) -> list[bytes]:
    """The encoded envelopes of a DATA payload; a length running past the end is an error."""
    items: list[bytes] = []
    offset = 0
    view = memoryview(payload)
    while offset < len(payload):
        if len(payload) - offset < _U32.size:
            raise FramingError("truncated item length in batch")
        (length,) = _U32.unpack_from(payload, offset)
        offset += _U32.size
        if length > len(payload) - offset:
            raise FramingError("batch item runs past the end of the frame")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items


def pack_ping(ping_id: int) -> bytes:
    return _U64.pack(ping_id)


def unpack_ping(payload: bytes) -> int:
    if len(payload) != _U64.size:
        raise FramingError("ping payload must be 8 bytes")
    (ping_id,) = _U64.unpack(payload)
    return int(ping_id)


# ---- handshake -------------------------------------------------------------------------------


def _field(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return _U32.pack(len(raw)) + raw  # length-prefixed so no two transcripts concatenate alike


def _transcript(
    dialer: NodeId, acceptor: NodeId, dialer_nonce: bytes, acceptor_nonce: bytes
) -> bytes:
    parts = (MAGIC, str(VERSION), dialer, acceptor, dialer_nonce, acceptor_nonce)
    return b"".join(_field(part) for part in parts)


def _proof(secret: bytes, label: bytes, transcript: bytes) -> bytes:
    return hmac.digest(secret, _field(label) + transcript, hashlib.sha256)


@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated connection's identity and keys, as one side sees it."""

    peer: NodeId
    sealer: Sealer
    opener: Opener


def _session(secret: bytes, transcript: bytes, peer: NodeId, *, dialer: bool) -> Session:
    to_acceptor = _proof(secret, b"key:dialer->acceptor", transcript)
    to_dialer = _proof(secret, b"key:acceptor->dialer", transcript)
    if dialer:
        return Session(peer, Sealer(to_acceptor), Opener(to_dialer))
    return Session(peer, Sealer(to_dialer), Opener(to_acceptor))


def _unpack_handshake(frame: RawFrame, kind: FrameKind, count: int) -> list[Any]:
    if frame.kind is not kind:
        raise HandshakeError(f"expected {kind.name}, got {frame.kind.name}")
    try:
        fields = msgpack.unpackb(frame.body, raw=False, use_list=True)
    except Exception as error:  # msgpack raises several unrelated types on garbage
        raise HandshakeError(f"{kind.name} is not msgpack") from error
    if type(fields) is not list or len(fields) != count:
        raise HandshakeError(f"{kind.name} must be a list of {count} fields")
    return fields


def _check_id(value: Any, what: str) -> NodeId:
    if type(value) is not str or not value or len(value) > 128:
        raise HandshakeError(f"{what} must be a non-empty string of at most 128 characters")
    return value


def _check_nonce(value: Any, what: str) -> bytes:
    if type(value) is not bytes or len(value) != NONCE_BYTES:
        raise HandshakeError(f"{what} must be {NONCE_BYTES} bytes")
    return value


def _pack(kind: FrameKind, fields: list[Any]) -> bytes:
    body: bytes = msgpack.packb(fields, use_bin_type=True)
    return pack_frame(kind, body)


class DialerHandshake:
    """The connecting side: hello(), then on_challenge(), then on_welcome()."""

    def __init__(self, secret: bytes, local: NodeId, remote: NodeId, nonce: bytes) -> None:
        self._secret = secret
        self._local = local
        self._remote = remote
        self._nonce = nonce
        self._session: Session | None = None

    def hello(self) -> bytes:
        return _pack(FrameKind.HELLO, [MAGIC, VERSION, self._local, self._remote, self._nonce])

    def on_challenge(self, frame: RawFrame) -> bytes:
        """Check the acceptor's proof; return the AUTH frame to send."""
        acceptor, acceptor_nonce, proof = _unpack_handshake(frame, FrameKind.CHALLENGE, 3)
        if acceptor != self._remote:
            raise HandshakeError(f"dialed {self._remote!r} but {acceptor!r} answered")
        _check_nonce(acceptor_nonce, "acceptor nonce")
        transcript = _transcript(self._local, self._remote, self._nonce, acceptor_nonce)
        expected = _proof(self._secret, b"proof:acceptor", transcript)
        if type(proof) is not bytes or not hmac.compare_digest(proof, expected):
            raise AuthError(f"{self._remote!r} does not hold the cluster secret")
        self._session = _session(self._secret, transcript, self._remote, dialer=True)
        return _pack(FrameKind.AUTH, [_proof(self._secret, b"proof:dialer", transcript)])

    def on_welcome(self, frame: RawFrame) -> Session:
        if self._session is None:
            raise HandshakeError("WELCOME before CHALLENGE")
        if frame.kind is not FrameKind.WELCOME:
            raise HandshakeError(f"expected WELCOME, got {frame.kind.name}")
        self._session.opener.open(frame)
        return self._session


class AcceptorHandshake:
    """The accepting side: on_hello() -> CHALLENGE, on_auth() -> (session, WELCOME frame).

    Whether the authenticated id is a current member is the caller's decision, made after
    on_auth so that an unauthenticated claim is never counted against a real member.
    """

    def __init__(self, secret: bytes, local: NodeId, nonce: bytes) -> None:
        self._secret = secret
        self._local = local
        self._nonce = nonce
        self._transcript: bytes | None = None
        self.claimed: NodeId | None = None

    def on_hello(self, frame: RawFrame) -> bytes:
        magic, version, dialer, acceptor, dialer_nonce = _unpack_handshake(
            frame, FrameKind.HELLO, 5
        )
        if magic != MAGIC or version != VERSION:
            raise HandshakeError(f"unsupported protocol {magic!r} version {version!r}")
        self.claimed = _check_id(dialer, "dialer id")
        if _check_id(acceptor, "acceptor id") != self._local:
            raise HandshakeError(f"HELLO addressed to {acceptor!r}, this is {self._local!r}")
        nonce = _check_nonce(dialer_nonce, "dialer nonce")
        self._transcript = _transcript(self.claimed, self._local, nonce, self._nonce)
        proof = _proof(self._secret, b"proof:acceptor", self._transcript)
        return _pack(FrameKind.CHALLENGE, [self._local, self._nonce, proof])

    def on_auth(self, frame: RawFrame) -> tuple[Session, bytes]:
        if self._transcript is None or self.claimed is None:
            raise HandshakeError("AUTH before HELLO")
        (proof,) = _unpack_handshake(frame, FrameKind.AUTH, 1)
        expected = _proof(self._secret, b"proof:dialer", self._transcript)
        if type(proof) is not bytes or not hmac.compare_digest(proof, expected):
            raise AuthError(f"{self.claimed!r} does not hold the cluster secret")
        session = _session(self._secret, self._transcript, self.claimed, dialer=False)
        return session, session.sealer.seal(FrameKind.WELCOME, b"")
