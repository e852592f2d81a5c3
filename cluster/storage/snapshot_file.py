"""The snapshot file of a node: written atomically, verified on every read.

Layout (little-endian)::

    header  8s magic | u16 version | u16 reserved (0) | u64 index | u64 term | u64 size
            | u32 crc32 of the data | u32 crc32 of the header bytes before it
    data    `size` bytes: protocols.snapshot's encoding of the state machine and sessions

Writing goes to `snapshot.tmp`, is fsynced, renamed over `snapshot`, and the directory is
fsynced: a crash leaves the old snapshot or the new one, never a mix. A file that does not
verify is refused with an error naming it; it is never skipped, because the log behind it may
already be gone.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from protocols.errors import StorageError
from protocols.snapshot import Snapshot

SNAPSHOT_FILE = "snapshot"
SNAPSHOT_TMP = "snapshot.tmp"
MAGIC = b"RBSNAP\x00\n"
VERSION = 1
_HEADER = struct.Struct("<8sHHQQQI")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size + _CRC.size


def encode(snapshot: Snapshot) -> bytes:
    head = _HEADER.pack(
        MAGIC, VERSION, 0, snapshot.index, snapshot.term, snapshot.size, snapshot.checksum
    )
    return head + _CRC.pack(zlib.crc32(head)) + snapshot.data


def decode(data: bytes, path: Path) -> Snapshot:
    """The snapshot in `data` (a whole file); StorageError saying what is wrong otherwise."""
    refuse = f"{path}: corrupt snapshot file"
    hint = "refusing to start (restore the data directory, or wipe it to resync the node)"
    if len(data) < HEADER_SIZE:
        raise StorageError(f"{refuse}: {len(data)} bytes, shorter than its header; {hint}")
    magic, version, reserved, index, term, size, checksum = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StorageError(f"{refuse}: not a raftbench snapshot (magic {magic!r}); {hint}")
    (header_crc,) = _CRC.unpack_from(data, _HEADER.size)
    if header_crc != zlib.crc32(data[: _HEADER.size]):
        raise StorageError(f"{refuse}: header checksum mismatch; {hint}")
    if version != VERSION or reserved != 0:
        raise StorageError(f"{path}: unsupported snapshot format version {version}; {hint}")
    body = data[HEADER_SIZE:]
    if len(body) != size:
        raise StorageError(f"{refuse}: {len(body)} data bytes, header says {size}; {hint}")
    if zlib.crc32(body) != checksum:
        raise StorageError(f"{refuse}: data checksum mismatch; {hint}")
    return Snapshot(index, term, bytes(body), checksum)


def read(data_dir: Path) -> Snapshot | None:
    """The node's snapshot, None when it has none; StorageError if the file does not verify."""
    path = data_dir / SNAPSHOT_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise StorageError(f"cannot read {path}: {error}") from error
    return decode(data, path)


def write(data_dir: Path, snapshot: Snapshot, sync: bool) -> int:
    """Atomically replace the snapshot file (temp file, fsync, rename, fsync directory)."""
    tmp = data_dir / SNAPSHOT_TMP
    payload = encode(snapshot)
    try:
        with open(tmp, "wb") as file:
            file.write(payload)
            file.flush()
            if sync:
                os.fsync(file.fileno())
        os.replace(tmp, data_dir / SNAPSHOT_FILE)
        if sync:
            fd = os.open(data_dir, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    except OSError as error:
        raise StorageError(f"cannot write the snapshot in {data_dir}: {error}") from error
    return len(payload)
