"""The run folder format: what is written reads back the same, in every storage form."""

from __future__ import annotations

import gzip
import json
import random
import re
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
from run_builder import Spec, crash_timeseries, make_record

from raftbench.cli import build_parser
from workloads import key_replay, results_compact
from workloads import results as results_module
from workloads.checker import check_operations, read_history
from workloads.columnar import ColumnarError, encode_rows, load_arrays, save_arrays
from workloads.generators import PROCESS_SPAN, OperationStream, OpKind, Workload
from workloads.report import ReportError, generate_report, load_run
from workloads.results import (
    COMPACT_FILE,
    FaultRecord,
    OpRecord,
    RunRecord,
    compact_run,
    read_run,
    write_run,
)
from workloads.scenario import parse_scenario
from workloads.summary import summarize


def record() -> RunRecord:
    ops = [
        OpRecord(0, "write", "k", "v1", 0.10, 0.12, "ok"),
        OpRecord(1, "read", "k", "v1", 0.13, 0.14, "ok", "linearizable"),
        OpRecord(2, "cas", "k", ("v1", "v2"), 0.15, None, "unknown"),
        OpRecord(3, "read", "k", "stale", 0.16, 0.17, "ok", "local"),
    ]
    return RunRecord(
        metadata={"scenario": "s", "window": [0.0, 1.0], "final_state": {"k": "v2", "j": None}},
        ops=ops,
        timeseries=[{"t": 0.1, "node": "n1", "up": True, "role": "leader", "commit": 3}],
        links=[{"src": "n1", "dst": "n2", "bytes": 100, "messages": 2}],
        regions={"n1": "a", "n2": "a"},
        nodes={"n1": {"region": "a", "cpu_seconds": None}},
        faults=[FaultRecord(0.5, "crash", ("n1",), "crash n1")],
    )


@pytest.mark.parametrize("compress", [False, True])
def test_a_run_reads_back_as_written(tmp_path: Path, compress: bool) -> None:
    original = record()
    folder = write_run(original, tmp_path, "run", compress)
    assert (folder / COMPACT_FILE).exists() is compress
    assert (folder / "ops.jsonl").exists() is not compress
    assert (folder / "history.jsonl").exists() is not compress
    again = read_run(folder)
    assert again == original
    assert again.ops[2].value == ("v1", "v2")


def test_compact_is_the_default_and_keeps_the_final_state_out_of_metadata(
    tmp_path: Path,
) -> None:
    folder = write_run(record(), tmp_path, "run")
    text = (folder / "metadata.json").read_text()
    assert '"results_format": 3' in text
    assert "final_state" not in text
    assert read_run(folder).metadata["final_state"] == {"k": "v2", "j": None}


def test_history_file_is_what_the_checker_reads(tmp_path: Path) -> None:
    """Local reads are left out (they may be stale by design); the rest checks as recorded."""
    folder = write_run(record(), tmp_path, "run", compress=False)
    history = read_history(folder / "history.jsonl", "jsonl")
    assert sorted(op.f for op in history) == ["cas", "read", "write"]
    assert check_operations(history).verdict == "linearizable"


def gzipped_old_folder(tmp_path: Path, original: RunRecord) -> Path:
    """A folder as the earlier `--compress` wrote it: gzipped JSON lines, no history."""
    folder = write_run(original, tmp_path, "old", compress=False)
    for stem in ("ops", "timeseries"):
        plain = folder / f"{stem}.jsonl"
        (folder / f"{stem}.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
        plain.unlink()
    (folder / "history.jsonl").unlink()
    return folder


def test_old_gzipped_folders_still_read(tmp_path: Path) -> None:
    original = record()
    assert read_run(gzipped_old_folder(tmp_path, original)) == original


@pytest.mark.parametrize("old_form", ["plain", "gzip"])
def test_converting_keeps_the_data_and_is_idempotent(tmp_path: Path, old_form: str) -> None:
    original = record()
    if old_form == "gzip":
        folder = gzipped_old_folder(tmp_path, original)
    else:
        folder = write_run(original, tmp_path, "old", compress=False)
    assert compact_run(folder) is True
    assert sorted(p.name for p in folder.iterdir()) == [
        "events.jsonl",
        "faults.jsonl",
        "links.json",
        "metadata.json",
        "nodes.json",
        COMPACT_FILE,
    ]
    assert read_run(folder) == original
    stored = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert compact_run(folder) is False
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == stored


def test_unknown_format_is_refused(tmp_path: Path) -> None:
    folder = write_run(record(), tmp_path, "run")
    metadata = folder / "metadata.json"
    metadata.write_text(metadata.read_text().replace('"results_format": 3', '"results_format": 9'))
    with pytest.raises(ValueError, match="results_format 9"):
        read_run(folder)


@pytest.mark.parametrize("damage", ["truncate", "garble", "remove"])
def test_a_damaged_compact_file_is_named(tmp_path: Path, damage: str) -> None:
    folder = write_run(record(), tmp_path, "run")
    path = folder / COMPACT_FILE
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garble":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]))
    else:
        path.unlink()
    with pytest.raises((ColumnarError, OSError), match=COMPACT_FILE):
        read_run(folder)
    with pytest.raises(ReportError, match="run: not a readable run folder"):
        load_run(folder, budget=1.0)


def crash_spec(name: str) -> Spec:
    return Spec(
        scenario="leader-crash",
        label=name,
        outage=(5.0, 6.2),
        timeseries=crash_timeseries(),
        faults=[FaultRecord(5.0, "crash", ("n1",), "crash n1")],
        metadata={"final_state": {f"k{i}": f"v{i}" for i in range(1200) if i % 5 != 4}},
    )


def test_old_and_converted_folders_give_the_same_summary_and_report(tmp_path: Path) -> None:
    old_results, new_results = tmp_path / "old" / "results", tmp_path / "new" / "results"
    for results in (old_results, new_results):
        for label in ("push", "pull"):
            record = make_record(crash_spec(label))
            gzipped_old_folder(results, record).rename(results / f"crash-{label}-t0")
    for folder in new_results.iterdir():
        assert compact_run(folder)
    summaries = [
        [
            replace(summarize(read_run(folder), run=folder.name), check_seconds=0.0)
            for folder in sorted(results.iterdir())
        ]
        for results in (old_results, new_results)
    ]
    assert summaries[0] == summaries[1]
    texts = []
    for results in (old_results, new_results):
        folders = sorted(results.iterdir())
        report = generate_report(folders, results.parent / "reports", "r", "raftbench report")
        texts.append(
            {
                name: comparable((report.folder / name).read_text(), results.parent)
                for name in ("report.md", "summary.json")
            }
        )
    assert texts[0] == texts[1]


def comparable(text: str, root: Path) -> str:
    """A report text without what differs between two readings of the same data: the
    folder it sits in, when it was made and the time the checker took (wall clock)."""
    text = text.replace(str(root), "ROOT")
    text = re.sub(r'"generated": "[^"]*"', '"generated": ""', text)
    return re.sub(r'"check_seconds": [0-9.e-]+', '"check_seconds": 0', text)


def test_a_plain_copy_converts_like_a_fresh_compact_write(tmp_path: Path) -> None:
    """Converting gives the same files as writing compact in the first place."""
    original = make_record(crash_spec("push"))
    fresh = write_run(original, tmp_path / "fresh", "run")
    converted = write_run(original, tmp_path / "converted", "run", compress=False)
    compact_run(converted)
    assert read_run(fresh) == read_run(converted) == original


@pytest.mark.parametrize(
    ("flags", "compact"), [([], True), (["--compress"], True), (["--plain"], False)]
)
def test_runs_are_stored_compact_unless_plain_is_asked(flags: list[str], compact: bool) -> None:
    for command in ("run", "compare"):
        extra = ["--protocol", "push"] if command == "run" else []
        args = build_parser(command).parse_args([command, "--scenario", "quick", *extra, *flags])
        assert args.compress is compact


REPLAYED_SCENARIO: dict[str, Any] = {
    "name": "replayed",
    "load": {"batch": 4, "processes": 1},
    "workload": {
        "clients": 3,
        "key_count": 500,
        "mix": {"read": 0.4, "write": 0.4, "rmw": 0.2},
        "value_size": 16,
    },
}


def real_record(rounds: int = 30) -> RunRecord:
    """A run as the real driver records it: each worker's rounds of `batch` lanes (some sent
    apart, later), the read of a read-modify-write answered and its cas sent first in the
    next round, some outcomes unknown (the lane goes on as a new process), all workers'
    operations interleaved."""
    workload = REPLAYED_SCENARIO["workload"]
    batch = REPLAYED_SCENARIO["load"]["batch"]
    ops: list[OpRecord] = []
    for worker in range(workload["clients"]):
        stream = OperationStream(parse_workload(), seed=7, client_id=worker)
        generations = [0] * batch
        followups: list[tuple[str, str]] = []
        for round_ in range(rounds):
            invoke = 1.0 + round_ * 0.01 + worker * 0.001
            lanes: list[tuple[str, str, Any, str | None]] = [
                ("cas", k, (None, v), None) for k, v in followups
            ]
            followups = []
            while len(lanes) < batch:
                planned = stream.next_op()
                if planned.kind is OpKind.RMW:
                    followups.append((planned.key, planned.value or ""))
                f = "read" if planned.kind in (OpKind.READ, OpKind.RMW) else planned.kind.value
                level = planned.consistency.value if planned.consistency else None
                lanes.append((f, planned.key, planned.value, level))
            for lane, (f, key, value, level) in enumerate(lanes):
                apart = f == "read" and lane % 2  # as local reads are: a request of their own
                sent = invoke + 0.002 * apart
                process = (worker * batch + lane) * PROCESS_SPAN + generations[lane]
                unknown = (round_ + lane) % 7 == 3 and f != "read"
                outcome, complete = ("unknown", None) if unknown else ("ok", sent + 0.004)
                ops.append(OpRecord(process, f, key, value, sent, complete, outcome, level))
                generations[lane] += unknown
    random.Random(1).shuffle(ops)
    metadata = {
        "scenario": "replayed",
        "scenario_raw": REPLAYED_SCENARIO,
        "engine": "real",
        "seed": 7,
        "driver": {"batch": batch, "processes": 1, "workers": workload["clients"]},
        "window": [1.0, 2.0],
    }
    return replace(record(), metadata=metadata, ops=ops)


def parse_workload() -> Workload:
    return parse_scenario(REPLAYED_SCENARIO).workload


def stored(folder: Path) -> dict[str, Any]:
    return load_arrays(folder / COMPACT_FILE)


def test_a_real_runs_keys_are_stored_as_its_streams_predict(tmp_path: Path) -> None:
    original = real_record()
    folder = write_run(original, tmp_path, "run")
    assert read_run(folder) == original
    arrays = stored(folder)
    codes = arrays["ops_key.codes"].tolist()
    cas_rows = [i for i, op in enumerate(original.ops) if op.f == "cas"]
    assert cas_rows  # the second halves of read-modify-writes: not drawn from the stream
    # every drawn operation is the stream's next; every cas has the key of an earlier read
    assert {codes[i] for i in range(len(codes)) if i not in cas_rows} == {0}
    assert all(key_replay.WINDOW <= codes[i] < key_replay.EXPLICIT for i in cas_rows)
    assert not any(name.startswith("ops_key.explicit.key.") for name in arrays)  # none


def test_keys_the_streams_do_not_predict_are_stored_as_they_are(tmp_path: Path) -> None:
    original = real_record()
    ops = sorted(original.ops, key=lambda op: (op.process // PROCESS_SPAN, op.invoke))
    ops[5].key = "not-from-any-stream"  # a key no stream draws
    ops[40].invoke += 0.5  # out of its place in the draw order
    ops[60].f, ops[60].consistency = "delete", "odd"  # a kind no stream drew there
    ops.append(OpRecord(10**9, "write", "k-stranger", "v", 1.5, 1.6, "ok"))  # of no worker
    original = replace(original, ops=ops)
    folder = write_run(original, tmp_path, "run")
    assert read_run(folder) == original
    codes = stored(folder)["ops_key.codes"].tolist()
    assert codes.count(key_replay.EXPLICIT) >= 2
    assert codes[original.ops.index(ops[60])] >= key_replay.WINDOW
    assert any(0 < code < key_replay.WINDOW for code in codes)  # found further in the stream


def test_keys_are_stored_plainly_when_the_replay_would_not_give_them_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = real_record()
    monkeypatch.setattr(key_replay, "decode_keys", lambda *_: ["wrong"] * len(original.ops))
    folder = write_run(original, tmp_path, "run")
    arrays = stored(folder)
    assert "ops_key.codes" not in arrays
    assert "ops_key.key.index" in arrays
    monkeypatch.undo()
    assert read_run(folder) == original


def test_a_simulated_run_stores_its_keys_plainly(tmp_path: Path) -> None:
    original = replace(real_record(), metadata={**real_record().metadata, "engine": "sim"})
    folder = write_run(original, tmp_path, "run")
    assert "ops_key.codes" not in stored(folder)
    assert read_run(folder) == original


def test_metadata_that_no_longer_replays_the_keys_is_an_error_not_wrong_keys(
    tmp_path: Path,
) -> None:
    folder = write_run(real_record(), tmp_path, "run")
    path = folder / "metadata.json"
    path.write_text(path.read_text().replace('"seed": 7', '"seed": 8'))
    with pytest.raises(ColumnarError, match="checksum"):
        read_run(folder)


def format_2_folder(tmp_path: Path, original: RunRecord) -> Path:
    """A folder as format 2 stored it: the ops in one table, keys and all."""
    folder = write_run(original, tmp_path, "old")
    rows = [asdict(op) for op in original.ops]
    arrays = encode_rows(
        "ops",
        rows,
        relative_to={"complete": "invoke", "intended": "invoke"},
        keyed_by={"value": "key"},
    )
    arrays |= encode_rows("timeseries", original.timeseries)
    final_state = original.metadata.get("final_state", {})
    arrays |= encode_rows("final_state", [{"key": k, "value": v} for k, v in final_state.items()])
    save_arrays(folder / COMPACT_FILE, arrays)
    metadata = {k: v for k, v in original.metadata.items() if k != "final_state"}
    (folder / "metadata.json").write_text(json.dumps({**metadata, "results_format": 2}))
    return folder


@pytest.mark.parametrize("make", [record, real_record])
def test_a_format_2_folder_reads_and_converts_to_format_3(tmp_path: Path, make: Any) -> None:
    original = make()
    original.metadata.setdefault("final_state", {"k": "v2"})
    folder = format_2_folder(tmp_path, original)
    assert read_run(folder) == original
    assert compact_run(folder) is True
    assert json.loads((folder / "metadata.json").read_text())["results_format"] == 3
    assert read_run(folder) == original
    assert compact_run(folder) is False


def test_the_converter_rewrites_format_2_folders_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = format_2_folder(tmp_path, real_record())
    assert results_compact.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"compacted: {folder}\n"
    assert results_compact.main([str(tmp_path)]) == 0
    assert capsys.readouterr().out == f"already in the current form: {folder}\n"


def test_a_conversion_that_would_change_the_data_puts_the_format_2_folder_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = format_2_folder(tmp_path, real_record())
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    reads = iter([read_run(folder), replace(real_record(), ops=[])])
    monkeypatch.setattr(results_module, "read_run", lambda _: next(reads))
    with pytest.raises(ValueError, match="did not read back the same data"):
        compact_run(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
