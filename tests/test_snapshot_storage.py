"""Snapshots on disk (cluster/storage): atomic snapshot file, compacted log, crash recovery;
and the snapshot settings in the cluster file and scenarios."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from cluster.config import (
    ConfigError,
    dump_cluster_config,
    load_cluster_config,
    parse_cluster_config,
)
from cluster.storage import FsyncPolicy, open_store
from cluster.storage.file_store import LOG_FILE
from cluster.storage.records import FILE_HEADER_SIZE, RecordType, parse_record
from cluster.storage.recovery import replay, scan
from cluster.storage.snapshot_file import SNAPSHOT_FILE, SNAPSHOT_TMP
from cluster.storage.snapshot_file import write as write_snapshot_file
from protocols.config import Config
from protocols.engine import ClientRequest
from protocols.errors import CallerError, StorageError
from protocols.kv import KVStateMachine
from protocols.push import PushEngine
from protocols.snapshot import Snapshot, take
from protocols.storage import MemoryLogStore
from protocols.types import Command, Entry, HardState, Op
from workloads.real_driver import cluster_spec
from workloads.scenario import ScenarioError, load_scenario, parse_scenario
from workloads.sim_driver import sim_config


def entries(first: int, last: int, term: int = 1) -> list[Entry]:
    return [
        Entry(term, i, Command(Op.PUT, f"k{i % 7}", f"v{i}", client_id="c", seq=i))
        for i in range(first, last + 1)
    ]


def snapshot_of(log: list[Entry], index: int, term: int | None = None) -> Snapshot:
    kv = KVStateMachine()
    for entry in log[:index]:
        kv.apply(entry)
    return take(index, term if term is not None else log[index - 1].term, ("n1",), kv)


def log_records(data_dir: Path) -> list[int]:
    data = (data_dir / LOG_FILE).read_bytes()
    return [record.record_type for _, record in scan(data, data_dir / LOG_FILE).records]


def test_save_snapshot_compacts_the_log_and_survives_a_reopen(tmp_path: Path) -> None:
    log = entries(1, 30)
    snapshot = snapshot_of(log, 20)
    model = MemoryLogStore()
    with open_store(tmp_path) as store:
        store.persist(HardState(1, "n1", 25), None, log)
        model.persist(HardState(1, "n1", 25), None, log)
        whole_log = store.file_bytes
        store.save_snapshot(snapshot)
        model.save_snapshot(snapshot)
        assert store.file_bytes < whole_log  # the covered entries left the file
        assert store.load() == model.load()
        assert store.last_index == model.last_index == 30
        store.persist(None, None, entries(31, 32))
        model.persist(None, None, entries(31, 32))
        with pytest.raises(CallerError):
            store.persist(None, 19, [])  # below the snapshot: refused, nothing written
        with pytest.raises(CallerError):
            store.persist(None, None, entries(20, 20))
    with open_store(tmp_path) as store:
        loaded = store.load()
        assert loaded == model.load()
        assert loaded.snapshot == snapshot
        assert [e.index for e in loaded.entries] == list(range(21, 33))
    assert log_records(tmp_path)[0] == RecordType.BASE


def test_an_older_snapshot_is_ignored(tmp_path: Path) -> None:
    log = entries(1, 30)
    with open_store(tmp_path) as store:
        store.persist(HardState(1), None, log)
        store.save_snapshot(snapshot_of(log, 20))
        store.save_snapshot(snapshot_of(log, 10))
        assert store.load().snapshot == snapshot_of(log, 20)


def test_a_received_snapshot_that_does_not_continue_the_log_drops_it(tmp_path: Path) -> None:
    """An installed snapshot whose point has another term than our entry: the log goes."""
    log = entries(1, 12)
    foreign = snapshot_of(entries(1, 15, term=2), 15)
    with open_store(tmp_path) as store:
        store.persist(HardState(2), None, log)
        store.save_snapshot(foreign)
        assert store.load().entries == []
        store.persist(None, 15, entries(16, 17, term=2))
    with open_store(tmp_path) as store:
        assert [e.index for e in store.load().entries] == [16, 17]


def test_crash_between_snapshot_write_and_log_truncation_recovers(tmp_path: Path) -> None:
    """The snapshot file is renamed into place, then the process dies before the log rewrite:
    opening drops the covered entries, keeps the rest, and finishes the rewrite."""
    log = entries(1, 30)
    with open_store(tmp_path) as store:
        store.persist(HardState(1, "n1", 30), None, log)
    snapshot = snapshot_of(log, 18)
    write_snapshot_file(tmp_path, snapshot, sync=True)  # ... and the crash comes here
    assert log_records(tmp_path)[0] == RecordType.BATCH  # the log still starts at 1
    with open_store(tmp_path) as store:
        loaded = store.load()
        assert loaded.snapshot == snapshot
        assert [e.index for e in loaded.entries] == list(range(19, 31))
        assert loaded.hard_state == HardState(1, "n1", 30)
    assert log_records(tmp_path)[0] == RecordType.BASE  # the rewrite was finished
    data = (tmp_path / LOG_FILE).read_bytes()
    assert replay(scan(data, tmp_path / LOG_FILE).records, tmp_path).base_index == 18


def test_a_node_restarts_from_snapshot_and_log(tmp_path: Path) -> None:
    """A single-node engine compacts as it goes; rebuilt from disk it has the same state."""
    config = Config(node_id="n1", members=("n1",), snapshot_entries=5)
    store = open_store(tmp_path, FsyncPolicy.NEVER)
    engine = PushEngine(config, store.load(), random.Random(1), 0.0)
    now = 0.0

    def pump() -> None:
        while engine.has_ready():
            ready = engine.ready()
            if ready.snapshot is not None:
                store.save_snapshot(ready.snapshot)
            store.persist(ready.hard_state, ready.truncate_after, ready.entries)
            engine.advance(ready)

    while engine.role.value != "leader":
        now += 1.0
        engine.tick(now)
        pump()
    for i in range(23):
        command = Command(Op.PUT, f"key{i % 4}", f"value{i}", client_id="c", seq=i + 1)
        engine.propose(ClientRequest(i + 1, command), now)
        pump()
    assert engine.log.snapshot_index >= 20
    state, applied = engine.kv.snapshot(), engine.kv.applied_index
    sessions = dict(engine.kv.session_items())
    store.close()
    with open_store(tmp_path, FsyncPolicy.NEVER) as reopened:
        stored = reopened.load()
        assert stored.snapshot is not None
        assert len(stored.entries) < 5
        restarted = PushEngine(config, stored, random.Random(2), now)
        assert restarted.commit_index >= stored.snapshot.index
        restarted.tick(now)
        while restarted.has_ready():
            restarted.advance(restarted.ready())  # (nothing new to persist in this test)
        assert restarted.kv.applied_index == applied
        assert restarted.kv.snapshot() == state
        assert dict(restarted.kv.session_items()) == sessions


@pytest.mark.parametrize("where", ["magic", "header", "data", "short"])
def test_a_corrupt_snapshot_file_is_refused_with_a_clear_error(tmp_path: Path, where: str) -> None:
    log = entries(1, 10)
    with open_store(tmp_path) as store:
        store.persist(HardState(1), None, log)
        store.save_snapshot(snapshot_of(log, 8))
    path = tmp_path / SNAPSHOT_FILE
    image = bytearray(path.read_bytes())
    if where == "magic":
        image[0] ^= 0xFF
    elif where == "header":
        image[12] ^= 0x01  # inside the index field
    elif where == "data":
        image[-1] ^= 0x01
    else:
        del image[-5:]
    path.write_bytes(bytes(image))
    with pytest.raises(StorageError, match="snapshot"):
        open_store(tmp_path)
    assert path.read_bytes() == bytes(image)  # nothing was "repaired" away


def test_a_compacted_log_without_its_snapshot_is_refused(tmp_path: Path) -> None:
    log = entries(1, 10)
    with open_store(tmp_path) as store:
        store.persist(HardState(1), None, log)
        store.save_snapshot(snapshot_of(log, 8))
    (tmp_path / SNAPSHOT_FILE).unlink()
    with pytest.raises(StorageError, match="no snapshot file"):
        open_store(tmp_path)


def test_a_leftover_snapshot_temp_file_is_discarded(tmp_path: Path) -> None:
    log = entries(1, 10)
    with open_store(tmp_path) as store:
        store.persist(HardState(1), None, log)
        store.save_snapshot(snapshot_of(log, 8))
    (tmp_path / SNAPSHOT_TMP).write_bytes(b"half a snapshot")
    with open_store(tmp_path) as store:
        assert store.load().snapshot == snapshot_of(log, 8)
    assert not (tmp_path / SNAPSHOT_TMP).exists()


def test_a_base_record_is_intact_and_typed(tmp_path: Path) -> None:
    log = entries(1, 10)
    with open_store(tmp_path) as store:
        store.persist(HardState(1), None, log)
        store.save_snapshot(snapshot_of(log, 8))
    data = (tmp_path / LOG_FILE).read_bytes()
    first = parse_record(data, FILE_HEADER_SIZE)
    assert not isinstance(first, str) and first.record_type == RecordType.BASE


# ---- settings: cluster file, scenario, node options ---------------------------------------------


def test_cluster_file_carries_the_snapshot_settings(tmp_path: Path) -> None:
    data: dict[str, Any] = {
        "cluster": {"secret": "s" * 32, "snapshot_entries": 500, "snapshot_bytes": 1 << 20},
        "members": [{"id": "n1", "peer": "127.0.0.1:7001", "client": "127.0.0.1:8001"}],
    }
    config = parse_cluster_config(data, tmp_path)
    engine = config.engine_config("n1")
    assert (engine.snapshot_entries, engine.snapshot_bytes) == (500, 1 << 20)
    (tmp_path / "cluster.toml").write_text(dump_cluster_config(config))
    assert load_cluster_config(tmp_path / "cluster.toml").snapshot_entries == 500
    for bad in (-1, "10", True):
        data["cluster"]["snapshot_entries"] = bad
        with pytest.raises(ConfigError, match=r"cluster\.snapshot_entries"):
            parse_cluster_config(data, tmp_path)


def test_a_scenario_sets_snapshots_for_the_simulator_and_real_clusters() -> None:
    raw = dict(load_scenario("quick").raw)
    raw["cluster"] = {**raw.get("cluster", {}), "snapshot_entries": 50}
    scenario = parse_scenario(raw)
    assert sim_config(scenario, "push", None, 1).config_overrides["snapshot_entries"] == 50
    assert cluster_spec(scenario, "pull", None, 1, False).snapshot_entries == 50
    assert scenario.cluster_config({"n1": ("127.0.0.1", 7000)}).snapshot_entries == 50
    raw["cluster"] = {**raw["cluster"], "snapshot_bytes": -5}
    with pytest.raises(ScenarioError, match="snapshot_bytes"):
        parse_scenario(raw)
