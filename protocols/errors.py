"""Errors raised by the protocol layer.

Two kinds of mistakes are kept apart, as h11 does: the local caller breaking the contract,
and a remote peer sending something it should not. Bad remote input is an expected event that
the runtime counts and drops; a broken invariant is a bug and must never be swallowed::

    RaftbenchError
    ├── CallerError          the local caller misused an engine or a data structure
    ├── PeerError            a peer sent bytes or a message that cannot be accepted
    │   └── DecodeError      the bytes do not decode to a known, well-typed message
    ├── StorageError         durable state is unreadable or inconsistent
    └── InvariantViolation   a safety property failed: a bug, stop loudly
"""


class RaftbenchError(Exception):
    """Root of every error this project raises on purpose."""


class CallerError(RaftbenchError):
    """The local caller broke a documented contract (e.g. ready() twice without advance())."""


class PeerError(RaftbenchError):
    """A remote peer sent something unacceptable; drop it, count it, keep running."""


class DecodeError(PeerError):
    """Bytes that are not a well-formed, well-typed message."""


class StorageError(RaftbenchError):
    """Durable state that cannot be trusted (corrupt record in the middle, bad header, ...)."""


class InvariantViolation(RaftbenchError):
    """A safety invariant failed. Never caught by protocol code."""
