"""The faults in force on a cluster folder, kept in ``DIR/faults.json`` between commands.

Each `raftbench cluster kill|partition|...` is a fresh process: it opens the cluster from its
state file, reads what earlier commands left in force (`DesiredFaults`), lets a `Nemesis` act,
and writes the record back, so `restart` puts a node's cuts, slow links and disk delay back,
and `status` can show them. The file is replaced atomically, and one command at a time holds
``DIR/faults.lock`` (flock) from reading the record to writing it, so two commands run at once
cannot lose each other's faults.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from cluster.launcher import LauncherError, LocalCluster
from cluster.nemesis import DesiredFaults, Nemesis, NemesisError

FAULTS_FILE = "faults.json"
LOCK_FILE = "faults.lock"
RECORD_VERSION = 1


def load(cluster: LocalCluster) -> DesiredFaults:
    """The record of `cluster`'s folder (empty if there is none); LauncherError if damaged."""
    path = cluster.directory / FAULTS_FILE
    if not path.is_file():
        return DesiredFaults()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            raise NemesisError(f"unknown record version {data.get('version')!r}")
        return DesiredFaults.from_json(data.get("faults"), cluster.node_ids)
    except (ValueError, AttributeError, NemesisError) as error:
        raise LauncherError(f"{path}: unreadable: {error}") from None


def save(cluster: LocalCluster, desired: DesiredFaults) -> None:
    """Write the record (removed when nothing is in force)."""
    path = cluster.directory / FAULTS_FILE
    if not cluster.directory.is_dir():
        return  # purged
    if desired.is_empty():
        path.unlink(missing_ok=True)
        return
    document = {"version": RECORD_VERSION, "faults": desired.to_json()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the folder's fault lock (blocks while another command holds it)."""
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def session(directory: Path | str) -> Iterator[Nemesis]:
    """A nemesis over the cluster in `directory` that starts from the recorded faults; what it
    leaves in force is recorded on the way out, also when an action failed half-way (nodes
    already told keep what they were told)."""
    directory = Path(directory).absolute()
    LocalCluster.open(directory)  # a clear error for a folder without a cluster, before locking
    with locked(directory):
        cluster = LocalCluster.open(directory)  # under the lock: pids as the last command left them
        nemesis = Nemesis(cluster, desired=load(cluster))
        try:
            yield nemesis
        finally:
            save(cluster, nemesis.desired)


def clear(directory: Path | str) -> None:
    """Forget every fault (after `down`: the processes and namespaces that had them are gone)."""
    directory = Path(directory).absolute()
    if not directory.is_dir():
        return
    with locked(directory):
        (directory / FAULTS_FILE).unlink(missing_ok=True)
