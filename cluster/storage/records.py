"""Byte layout of the durable log: a file header, then self-checking records.

All integers are little-endian::

    file header    8s magic | u16 version | u16 reserved (0) | u32 crc32 of the 12 bytes before
    record header  2s marker | u8 type | u8 flags (0) | u32 payload length | u32 payload crc32
                   | u32 crc32 of the 12 header bytes before it
    record body    msgpack, `payload length` bytes

Why the record header carries its own checksum: a flipped bit in a length field must not make a
record in the middle of the file look like a torn tail, which recovery would silently cut
(losing fsynced records behind it). With the header checked on its own, recovery knows where a
good record ends; the fixed marker lets it look for valid records after a bad one quickly
(`bytes.find`), which is how a corrupt middle is told apart from a torn tail.

One `persist()` call is one BATCH record holding its truncation point, its entries and its hard
state. A record is all-or-nothing, so a call's hard state is never visible without its entries
(the commit point never points past the recovered log). A BASE record says the log continues
after (index, term), a snapshot's point: a compacted log starts with one.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import msgpack

from protocols.types import Command, Entry, HardState, Op

FILE_MAGIC = b"RBLOG\x00\r\n"  # the \r\n catches text-mode mangling, the \x00 text editors
FORMAT_VERSION = 1
_FILE_HEADER = struct.Struct("<8sHH")
_CRC = struct.Struct("<I")
FILE_HEADER_SIZE = _FILE_HEADER.size + _CRC.size

RECORD_MARKER = b"\xa7\x1e"
_RECORD_PREFIX = struct.Struct("<2sBBII")
RECORD_HEADER_SIZE = _RECORD_PREFIX.size + _CRC.size
MAX_PAYLOAD = 1 << 30  # a sanity bound: one persist call never writes a gigabyte


class RecordType(IntEnum):
    BATCH = 1  # one persist() call: [truncate_after, hard_state, first_index, rows]
    BASE = 2  # the log starts after [index, term] (a snapshot covers what came before)


class MalformedRecord(ValueError):
    """A record whose checksums hold but whose payload is not what this version writes."""


@dataclass(frozen=True, slots=True)
class Batch:
    """The content of one persist() call, applied in this order: truncate, append, hard state."""

    truncate_after: int | None
    entries: list[Entry]
    hard_state: HardState | None


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A record whose framing and checksums are intact; `end` is where the next one starts."""

    record_type: int
    flags: int
    payload: memoryview
    end: int


# ---- file header ----------------------------------------------------------------------------


def file_header() -> bytes:
    head = _FILE_HEADER.pack(FILE_MAGIC, FORMAT_VERSION, 0)
    return head + _CRC.pack(zlib.crc32(head))


def check_file_header(data: bytes) -> str | None:
    """None when `data` starts with a header this version reads, else what is wrong with it."""
    if len(data) < FILE_HEADER_SIZE:
        return f"file is {len(data)} bytes, shorter than the {FILE_HEADER_SIZE}-byte header"
    magic, version, reserved = _FILE_HEADER.unpack_from(data)
    if magic != FILE_MAGIC:
        return f"not a raftbench log file (magic {magic!r})"
    (crc,) = _CRC.unpack_from(data, _FILE_HEADER.size)
    if crc != zlib.crc32(data[: _FILE_HEADER.size]):
        return "file header checksum mismatch"
    if version != FORMAT_VERSION or reserved != 0:
        return f"unsupported log format version {version} (this build reads {FORMAT_VERSION})"
    return None


# ---- record framing -------------------------------------------------------------------------


def frame(record_type: RecordType, payload: bytes) -> bytes:
    """Header + payload, ready to append."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"record payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    head = _RECORD_PREFIX.pack(RECORD_MARKER, record_type, 0, len(payload), zlib.crc32(payload))
    return head + _CRC.pack(zlib.crc32(head)) + payload


def parse_record(data: bytes, offset: int) -> RawRecord | str:
    """The intact record starting at `offset`, or a short reason why there is none."""
    left = len(data) - offset
    if left < RECORD_HEADER_SIZE:
        return f"incomplete record header ({left} bytes left)"
    marker, record_type, flags, length, payload_crc = _RECORD_PREFIX.unpack_from(data, offset)
    if marker != RECORD_MARKER:
        return "no record marker"
    (header_crc,) = _CRC.unpack_from(data, offset + _RECORD_PREFIX.size)
    if header_crc != zlib.crc32(memoryview(data)[offset : offset + _RECORD_PREFIX.size]):
        return "record header checksum mismatch"
    start = offset + RECORD_HEADER_SIZE
    end = start + length
    if end > len(data):
        return f"record of {length} bytes runs {end - len(data)} bytes past the end of the file"
    payload = memoryview(data)[start:end]
    if zlib.crc32(payload) != payload_crc:
        return "record payload checksum mismatch"
    return RawRecord(record_type, flags, payload, end)


# ---- BATCH payload --------------------------------------------------------------------------


def encode_batch(batch: Batch) -> bytes:
    """A framed BATCH record; entry indexes are implied by the first (a batch is contiguous)."""
    hard = batch.hard_state
    hard_row = None if hard is None else [hard.term, hard.vote, hard.commit, hard.rollback_id]
    first = batch.entries[0].index if batch.entries else 0
    rows = [
        [e.term, c.op.value, c.key, c.value, c.expected, c.client_id, c.seq]
        for e in batch.entries
        for c in (e.command,)
    ]
    payload: bytes = msgpack.packb([batch.truncate_after, hard_row, first, rows], use_bin_type=True)
    return frame(RecordType.BATCH, payload)


def decode_batch(payload: memoryview) -> Batch:
    """The batch in a checksummed payload; MalformedRecord if it is not a well-typed batch."""
    try:
        raw = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types on garbage
        raise MalformedRecord(f"not msgpack: {error}") from error
    if type(raw) is not list or len(raw) != 4:
        raise MalformedRecord("a batch is [truncate_after, hard_state, first_index, rows]")
    truncate_raw, hard_raw, first_raw, rows = raw
    truncate_after = None if truncate_raw is None else _int(truncate_raw, "truncate_after")
    hard_state = None if hard_raw is None else _hard_state(hard_raw)
    first = _int(first_raw, "first_index")
    if type(rows) is not list:
        raise MalformedRecord("entries must be a list")
    if rows and first < 1:
        raise MalformedRecord(f"first entry index {first} < 1")
    entries = [_entry(row, first + offset) for offset, row in enumerate(rows)]
    return Batch(truncate_after, entries, hard_state)


def encode_base(index: int, term: int) -> bytes:
    """A framed BASE record: the entries that follow start at index + 1."""
    return frame(RecordType.BASE, msgpack.packb([index, term], use_bin_type=True))


def decode_base(payload: memoryview) -> tuple[int, int]:
    try:
        raw = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True)
    except Exception as error:  # msgpack raises several unrelated types on garbage
        raise MalformedRecord(f"not msgpack: {error}") from error
    if type(raw) is not list or len(raw) != 2:
        raise MalformedRecord("a base is [index, term]")
    return _int(raw[0], "base index"), _int(raw[1], "base term")


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise MalformedRecord(f"{what} must be an int >= 0, not {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if type(value) is not str:
        raise MalformedRecord(f"{what} must be a str, not {value!r}")
    return value


def _optional_str(value: Any, what: str) -> str | None:
    return None if value is None else _str(value, what)


def _hard_state(raw: Any) -> HardState:
    if type(raw) is not list or len(raw) != 4:
        raise MalformedRecord("hard state must be [term, vote, commit, rollback_id]")
    term, vote, commit, rollback_id = raw
    return HardState(
        _int(term, "term"),
        _optional_str(vote, "vote"),
        _int(commit, "commit"),
        _int(rollback_id, "rollback_id"),
    )


def _entry(row: Any, index: int) -> Entry:
    if type(row) is not list or len(row) != 7:
        raise MalformedRecord(f"entry {index} must be [term, op, key, value, expected, id, seq]")
    term, op, key, value, expected, client_id, seq = row
    try:
        command = Command(
            Op(_str(op, "op")),
            _str(key, "key"),
            _optional_str(value, "value"),
            _optional_str(expected, "expected"),
            _str(client_id, "client_id"),
            _int(seq, "seq"),
        )
    except ValueError as error:  # also unknown ops and Command's own checks
        raise MalformedRecord(f"entry {index}: {error}") from error
    return Entry(_int(term, "term"), index, command)
