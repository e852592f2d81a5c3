"""`raftbench check`: output lines, total line and exit status."""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import pytest
from linearizability_data import DATA, ETCD_LOGS, KV_FILES, expected_etcd, expected_kv

from raftbench.commands import check

LINE = re.compile(r"^(?P<file>.+): (?P<verdict>[a-z-]+) \(\d+\.\d{3} s\)$")
TOTAL = re.compile(
    r"^total: (\d+) files, (\d+) linearizable, (\d+) not-linearizable, (\d+) unknown"
    r"(?:, (\d+) unreadable)? in \d+\.\d\d s$"
)


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, list[str], str]:
    parser = argparse.ArgumentParser(prog="raftbench")
    check.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["check", *map(str, argv)])
    code = args.handler(args)
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def verdict_of(line: str) -> str:
    match = LINE.match(line)
    assert match is not None, line
    return match["verdict"]


def totals(line: str) -> tuple[str | None, ...]:
    """(files, linearizable, not-linearizable, unknown, unreadable or None)"""
    match = TOTAL.match(line)
    assert match is not None, line
    return match.groups()


def test_shared_data_verdicts_and_total(capsys: pytest.CaptureFixture[str]) -> None:
    files = ETCD_LOGS + KV_FILES
    code, lines, _ = run(capsys, *files)
    expected = {str(p): expected_etcd()[p.name] for p in ETCD_LOGS}
    expected |= {str(p): expected_kv(p) for p in KV_FILES}
    verdicts = {}
    for number, line in enumerate(lines[:-1]):
        match = LINE.match(line)
        if match is None:
            assert line.startswith("    key "), line  # the explanation under a failure
            assert verdict_of(lines[number - 1]) == "not-linearizable"
            continue
        verdicts[match["file"]] = match["verdict"]
    assert verdicts == expected
    bad = sum(v == "not-linearizable" for v in expected.values())
    assert totals(lines[-1]) == (str(len(files)), str(len(files) - bad), str(bad), "0", None)
    assert code == 1


def test_all_linearizable_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    good = [p for p in ETCD_LOGS if expected_etcd()[p.name] == "linearizable"][:3]
    code, lines, _ = run(capsys, *good)
    assert [verdict_of(line) for line in lines[:-1]] == ["linearizable"] * 3
    assert code == 0


def test_budget_exhausted_is_unknown_and_exits_two(capsys: pytest.CaptureFixture[str]) -> None:
    good = next(p for p in ETCD_LOGS if expected_etcd()[p.name] == "linearizable")
    code, lines, _ = run(capsys, good, "--max-steps", "5")
    assert verdict_of(lines[0]) == "unknown"
    assert "budget exhausted" in lines[1]
    assert totals(lines[-1])[3] == "1"
    assert code == 2


def test_unreadable_and_malformed_files_exit_two(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    broken = tmp_path / "broken.jsonl"
    event = {"process": 1, "type": "invoke", "f": "write", "key": "k", "value": 1, "time": 1}
    broken.write_text(json.dumps(event) + "\n{oops\n")
    missing = tmp_path / "missing.jsonl"
    code, lines, err = run(capsys, broken, missing)
    assert lines[:2] == [f"{broken}: unreadable", f"{missing}: unreadable"]
    assert f"{broken}:2: not JSON" in err
    assert str(missing) in err
    assert totals(lines[-1])[4] == "2"
    assert code == 2


def test_forced_format_is_used(capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, err = run(capsys, KV_FILES[0], "--format", "jsonl")
    assert lines[0] == f"{KV_FILES[0]}: unreadable"
    assert "not JSON" in err
    assert code == 2


def test_a_violation_outranks_an_unreadable_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = next(p for p in KV_FILES if expected_kv(p) == "not-linearizable")
    code, _, _ = run(capsys, bad, tmp_path / "missing.jsonl")
    assert code == 1


def test_negative_budget_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        run(capsys, ETCD_LOGS[0], "--budget", "-1")
    assert caught.value.code == 2
    assert "must be >= 0" in capsys.readouterr().err


def test_expected_table_is_read_not_assumed() -> None:
    # The verdict table drives the tests above; make sure it has both kinds of verdict.
    with (DATA / "etcd" / "EXPECTED.tsv").open(newline="") as table:
        kinds = {row["expected"] for row in csv.DictReader(table, delimiter="\t")}
    assert kinds == {"linearizable", "not-linearizable"}
