"""History readers: what each format turns into, and clear errors for what is malformed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workloads.checker import HistoryError, Operation, parse_lines, read_history
from workloads.checker.readers import Keyword, infer_format, parse_edn_map


def jsonl(*events: dict[str, object]) -> list[str]:
    return [json.dumps(e) for e in events]


def ev(
    process: int, type_: str, f: str, value: object, time: float, key: str = "k"
) -> dict[str, object]:
    return {"process": process, "type": type_, "f": f, "key": key, "value": value, "time": time}


# --- jsonl ----------------------------------------------------------------------------------


def test_jsonl_pairs_invocations_with_completions() -> None:
    lines = jsonl(
        ev(1, "invoke", "write", "v1", 1.0),
        ev(2, "invoke", "read", None, 1.5),
        ev(1, "ok", "write", "v1", 2.0),
        ev(2, "ok", "read", "v1", 2.5),
        ev(3, "invoke", "cas", ["v1", "v2"], 3.0),
        ev(3, "fail", "cas", ["v1", "v2"], 3.5),
        ev(4, "invoke", "delete", None, 4.0),
        ev(4, "info", "delete", None, 4.5),
        ev(5, "invoke", "write", "v3", 5.0),
    )
    assert parse_lines(lines, "jsonl") == [
        Operation(1, "write", "k", "v1", 1.0, 2.0, "ok"),
        Operation(2, "read", "k", "v1", 1.5, 2.5, "ok"),
        Operation(3, "cas", "k", ("v1", "v2"), 3.0, 3.5, "fail"),
        Operation(4, "delete", "k", None, 4.0, None, "unknown"),
        Operation(5, "write", "k", "v3", 5.0, None, "unknown"),
    ]


def test_jsonl_read_value_comes_from_the_completion() -> None:
    lines = jsonl(ev(1, "invoke", "read", None, 1), ev(1, "ok", "read", None, 2))
    assert parse_lines(lines, "jsonl")[0].value is None


def test_jsonl_blank_lines_are_skipped() -> None:
    lines = ["", *jsonl(ev(1, "invoke", "write", 1, 1)), "  ", *jsonl(ev(1, "ok", "write", 1, 2))]
    assert len(parse_lines(lines, "jsonl")) == 1


@pytest.mark.parametrize(
    ("second", "message"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"process": 1, "type": "ok", "f": "write", "key": "k", "value": NaN, "time": 2}', "NaN"),
        (json.dumps(ev(1, "invoke", "write", 2, 2)), "still outstanding"),
        (json.dumps(ev(9, "ok", "write", 1, 2)), "never invoked"),
        (json.dumps(ev(1, "ok", "read", 1, 2)), "invoked write"),
        (json.dumps(ev(1, "ok", "write", 1, 2, key="other")), "invoked write"),
        (json.dumps({**ev(1, "ok", "write", 1, 2), "process": "p1"}), "'process'"),
        (json.dumps({**ev(1, "ok", "write", 1, 2), "time": None}), "'time'"),
        (json.dumps({**ev(1, "ok", "write", 1, 2), "key": 5}), "'key'"),
        (json.dumps({**ev(1, "ok", "write", 1, 2), "type": "done"}), "event type"),
        (json.dumps(ev(2, "invoke", "incr", 1, 2)), "unknown operation"),
        (json.dumps(ev(2, "invoke", "write", {"a": 1}, 2)), "JSON object"),
        (json.dumps(ev(1, "ok", "write", 1, 0.5)), "before it is invoked"),
    ],
)
def test_jsonl_malformed_line_names_file_and_line(second: str, message: str) -> None:
    lines = [json.dumps(ev(1, "invoke", "write", 1, 1)), second]
    with pytest.raises(HistoryError, match=message) as caught:
        parse_lines(lines, "jsonl", "run.jsonl")
    assert str(caught.value).startswith("run.jsonl:2: ")
    assert caught.value.line == 2


def test_jsonl_cas_needs_a_pair() -> None:
    lines = jsonl(ev(1, "invoke", "cas", [1, 2, 3], 1), ev(1, "ok", "cas", [1, 2, 3], 2))
    with pytest.raises(HistoryError, match="pair"):
        parse_lines(lines, "jsonl", "h")


# --- jepsen-etcd ----------------------------------------------------------------------------

ETCD = """\
2015-01-01 INFO  jepsen.core - Running test
INFO  jepsen.util - 0\t:invoke\t:write\t4
INFO  jepsen.util - 1\t:invoke\t:read\tnil
INFO  jepsen.util - :nemesis\t:info\t:start\tnil
INFO  jepsen.util - 0\t:ok\t:write\t4
INFO  jepsen.util - 1   :ok     :read   4
INFO  jepsen.util - 2\t:invoke\t:cas\t[4 5]
INFO  jepsen.util - 3\t:invoke\t:read\tnil
INFO  jepsen.util - 2\t:info\t:cas\t:timed-out
INFO  jepsen.util - 3\t:fail\t:read\t:timed-out
INFO  jepsen.util - 4\t:invoke\t:cas\t[nil 1]
INFO  jepsen.util - 4\t:fail\t:cas\t[nil 1]
"""


def test_jepsen_etcd_log() -> None:
    ops = parse_lines(ETCD.splitlines(), "jepsen-etcd")
    assert ops == [
        Operation(0, "write", "register", 4, 2.0, 5.0, "ok"),
        Operation(1, "read", "register", 4, 3.0, 6.0, "ok"),
        Operation(2, "cas", "register", (4, 5), 7.0, None, "unknown"),
        Operation(3, "read", "register", None, 8.0, 10.0, "fail"),
        Operation(4, "cas", "register", (None, 1), 11.0, 12.0, "fail"),
    ]
    assert infer_format(ETCD.splitlines()) == "jepsen-etcd"


@pytest.mark.parametrize(
    "bad",
    [
        "INFO  jepsen.util - 5\t:invoke\t:write\tfour",
        "INFO  jepsen.util - 5\t:invoke\t:incr\t1",
        "INFO  jepsen.util - 5\t:invoke\t:cas\t[1]",
        "INFO  jepsen.util - 5\t:invoke\t:cas\t7",
        "INFO  jepsen.util - 5\t:invoke\t:write\t:timed-out",
        "INFO  jepsen.util - 5\t:invoke",
    ],
)
def test_jepsen_etcd_malformed_operation_line(bad: str) -> None:
    lines = [*ETCD.splitlines(), bad]
    with pytest.raises(HistoryError, match="malformed operation") as caught:
        parse_lines(lines, "jepsen-etcd", "etcd.log")
    assert caught.value.line == len(lines)
    assert str(caught.value).startswith(f"etcd.log:{len(lines)}: ")


# --- jepsen-kv ------------------------------------------------------------------------------

KV = """\
{:process 0, :type :invoke, :f :put, :key "1", :value "x 0 0 y"}
{:process :nemesis, :type :info, :f :start, :value nil}
{:process 1, :type :invoke, :f :get, :key "1", :value nil}
{:process 0, :type :ok, :f :put, :key "1", :value "x 0 0 y"}
{:process 1, :type :ok, :f :get, :key "1", :value "x 0 0 y"}
{:process 2, :type :invoke, :f :append, :key 7, :value "a, \\"b\\""}
{:process 2 :type :info :f :append :key 7 :value :timed-out}
"""


def test_jepsen_kv_lines() -> None:
    ops = parse_lines(KV.splitlines(), "jepsen-kv")
    assert ops == [
        Operation(0, "put", "1", "x 0 0 y", 1.0, 4.0, "ok"),
        Operation(1, "get", "1", "x 0 0 y", 3.0, 5.0, "ok"),
        Operation(2, "append", "7", 'a, "b"', 6.0, None, "unknown"),
    ]
    assert infer_format(KV.splitlines()) == "jepsen-kv"


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{:process 3, :type :invoke, :f :put, :key "1", :value "x}', "malformed EDN"),
        ("{:process 3, :type :invoke, :f :put, :key}", "malformed EDN"),
        ('{:process 3, :type "invoke", :f :put, :key "1", :value "x"}', "keywords"),
        ("{:process 3, :type :invoke, :f :put, :key nil, :value 1}", "':key'"),
        ('{:process 3, :type :invoke, :f :put, :key "1", :value 1} junk', "malformed EDN"),
    ],
)
def test_jepsen_kv_malformed_line(bad: str, message: str) -> None:
    with pytest.raises(HistoryError, match=message) as caught:
        parse_lines([*KV.splitlines(), bad], "jepsen-kv", "kv.edn")
    assert caught.value.line == 8


def test_edn_map_values() -> None:
    parsed = parse_edn_map('{:a 1, :b -2.5, :c "s\\n", :d [1 nil "x"], :e :kw, :f true}')
    assert parsed == {
        "a": 1,
        "b": -2.5,
        "c": "s\n",
        "d": (1, None, "x"),
        "e": Keyword("kw"),
        "f": True,
    }
    for bad in ["{:a [1 2}", "{:a}", "[1 2]", '{"a" 1}', "{:a {:b 1}}", "{:a 1"]:
        with pytest.raises(ValueError):
            parse_edn_map(bad)


# --- files ----------------------------------------------------------------------------------


def test_read_history_infers_the_format_and_reads_files(tmp_path: Path) -> None:
    history = tmp_path / "history.txt"
    history.write_text("\n".join(jsonl(ev(1, "invoke", "write", 1, 1), ev(1, "ok", "write", 1, 2))))
    assert read_history(history) == [Operation(1, "write", "k", 1, 1.0, 2.0, "ok")]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert read_history(empty) == []


def test_unreadable_files_are_history_errors_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(HistoryError, match=r"missing\.jsonl"):
        read_history(missing)
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(HistoryError, match=r"binary\.jsonl"):
        read_history(binary)
    prose = tmp_path / "notes.txt"
    prose.write_text("just some text\n")
    with pytest.raises(HistoryError, match="format"):
        read_history(prose)
    with pytest.raises(HistoryError, match="unknown format"):
        read_history(prose, "csv")
