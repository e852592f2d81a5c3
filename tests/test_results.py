"""The run folder format: what is written reads back the same, in every storage form."""

from __future__ import annotations

import gzip
import re
from dataclasses import replace
from pathlib import Path

import pytest
from run_builder import Spec, crash_timeseries, make_record

from raftbench.cli import build_parser
from workloads.checker import check_operations, read_history
from workloads.columnar import ColumnarError
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
    assert '"results_format": 2' in text
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
    metadata.write_text(metadata.read_text().replace('"results_format": 2', '"results_format": 9'))
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
