"""Durable storage of the real runtime: the log and hard state in one append-only file.

Why a file of our own and not SQLite (WAL mode): the engine keeps the whole log in memory and
only ever appends, truncates a suffix and replaces the hard state. A checksummed append-only
file does exactly that with one write and one fdatasync per persist() call, gives byte-level
control over what a crash can leave behind (and so over what recovery may cut), and costs no
dependency; SQLite would add a B-tree, page writes and its own journal to the same fsync.

Modules: `records` (byte layout), `recovery` (reading a file back, torn tail vs corrupt
middle), `file_store` (the LogStore: writing, fsync policy, locking, compaction).
"""

from cluster.storage.file_store import FileLogStore, FsyncPolicy, open_store
from cluster.storage.recovery import RecoveryReport

__all__ = ["FileLogStore", "FsyncPolicy", "RecoveryReport", "open_store"]
