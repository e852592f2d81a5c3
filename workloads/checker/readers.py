"""Readers that turn history files into `Operation`s.

Three formats:

- `jsonl`: this project's own (see README, "History format (jsonl)"): one JSON object per event,
  `{"process", "type": invoke|ok|fail|info, "f", "key", "value", "time"}`;
- `jepsen-kv`: Jepsen EDN maps, one per line, `{:process 0, :type :invoke, :f :put, :key "1",
  :value "x"}`; the line number is the time;
- `jepsen-etcd`: Jepsen's log of a single register (`INFO  jepsen.util - 3  :ok  :cas  [1 4]`);
  the line number is the time and the key is "register".

Every format is a sequence of events; `_Pairing` matches each completion (ok, fail, info) with
its process's pending invocation. An invocation never completed has an unknown outcome. Lines
that are not client operations (nemesis, logging, blank) are skipped; a client operation line
that cannot be understood is a `HistoryError` naming the file and line.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from workloads.checker.history import FUNCTIONS, READS, HistoryError, Operation, Value

FORMATS = ("jepsen-etcd", "jepsen-kv", "jsonl")
ETCD_KEY = "register"
_OUTCOME = {"ok": "ok", "fail": "fail", "info": "unknown"}
_EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".edn": "jepsen-kv"}


def read_history(path: Path, fmt: str | None = None) -> list[Operation]:
    """Read the operations of one history file.

    With `fmt` None the format comes from the extension (.jsonl, .json, .edn), else from the
    content. Raises HistoryError, naming the file (and line), for anything unreadable.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise HistoryError(f"cannot read: {error}", path) from None
    lines = text.splitlines()
    if fmt is None:
        fmt = _EXTENSIONS.get(Path(path).suffix.lower()) or infer_format(lines, path)
    return parse_lines(lines, fmt, path)


def parse_lines(
    lines: Iterable[str], fmt: str, source: Path | str = "<history>"
) -> list[Operation]:
    """Parse the lines of a history in a known format."""
    match fmt:
        case "jsonl":
            return _parse_jsonl(lines, source)
        case "jepsen-kv":
            return _parse_jepsen_kv(lines, source)
        case "jepsen-etcd":
            return _parse_jepsen_etcd(lines, source)
        case _:
            raise HistoryError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})", source)


def infer_format(lines: Iterable[str], source: Path | str = "<history>") -> str:
    """Guess the format from the first line that says something."""
    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text.startswith("{"):
            rest = text[1:].lstrip()
            if rest.startswith(('"', "}")):
                return "jsonl"
            if rest.startswith(":"):
                return "jepsen-kv"
        if _ETCD_OP.search(text):
            return "jepsen-etcd"
    raise HistoryError("cannot tell the history format; give --format", source)


@dataclass(slots=True)
class _Pending:
    f: str
    key: str
    value: Value
    time: float
    line: int


class _Pairing:
    """Matches completions with invocations, process by process."""

    def __init__(self, source: Path | str) -> None:
        self.source = source
        self.pending: dict[int, _Pending] = {}
        self.ops: list[tuple[float, int, Operation]] = []

    def event(
        self, line: int, process: int, kind: str, f: str, key: str, value: Value, time: float
    ) -> None:
        if f not in FUNCTIONS:
            raise HistoryError(f"unknown operation {f!r}", self.source, line)
        if math.isnan(time) or math.isinf(time):
            raise HistoryError(f"time {time} is not a finite number", self.source, line)
        if kind == "invoke":
            previous = self.pending.get(process)
            if previous is not None:
                raise HistoryError(
                    f"process {process} invokes while its operation from line "
                    f"{previous.line} is still outstanding",
                    self.source,
                    line,
                )
            self.pending[process] = _Pending(f, key, value, time, line)
            return
        if kind not in _OUTCOME:
            raise HistoryError(f"unknown event type {kind!r}", self.source, line)
        started = self.pending.pop(process, None)
        if started is None:
            raise HistoryError(
                f"process {process} completes an operation it never invoked", self.source, line
            )
        if (started.f, started.key) != (f, key):
            raise HistoryError(
                f"process {process} completes {f} on {key!r} but invoked {started.f} on "
                f"{started.key!r} (line {started.line})",
                self.source,
                line,
            )
        outcome = _OUTCOME[kind]
        observed = value if f in READS and outcome == "ok" else started.value
        complete = None if outcome == "unknown" else time
        self._add(started, process, observed, complete, outcome, line)

    def finish(self) -> list[Operation]:
        """The operations, in invocation order; never-completed ones have unknown outcome."""
        for process, started in self.pending.items():
            self._add(started, process, started.value, None, "unknown", started.line)
        self.pending.clear()
        self.ops.sort(key=lambda item: (item[0], item[1]))
        return [op for _, _, op in self.ops]

    def _add(
        self,
        started: _Pending,
        process: int,
        value: Value,
        complete: float | None,
        outcome: str,
        line: int,
    ) -> None:
        try:
            op = Operation(process, started.f, started.key, value, started.time, complete, outcome)
        except HistoryError as error:
            raise HistoryError(str(error), self.source, line) from None
        self.ops.append((started.time, started.line, op))


# --- jsonl ----------------------------------------------------------------------------------


def _parse_jsonl(lines: Iterable[str], source: Path | str) -> list[Operation]:
    pairing = _Pairing(source)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line, parse_constant=_no_constants)
        except (ValueError, RecursionError) as error:
            raise HistoryError(f"not JSON: {error}", source, number) from None
        if not isinstance(event, dict):
            raise HistoryError("an event must be a JSON object", source, number)
        process = event.get("process")
        if not isinstance(process, int) or isinstance(process, bool):
            raise HistoryError(f"'process' must be an integer, got {process!r}", source, number)
        kind, f, key, time = (event.get(name) for name in ("type", "f", "key", "time"))
        if not isinstance(kind, str) or not isinstance(f, str):
            raise HistoryError("'type' and 'f' must be strings", source, number)
        if not isinstance(key, str):
            raise HistoryError(f"'key' must be a string, got {key!r}", source, number)
        if not isinstance(time, int | float) or isinstance(time, bool):
            raise HistoryError(f"'time' must be a number, got {time!r}", source, number)
        value = _frozen(event.get("value"), source, number)
        pairing.event(number, process, kind, f, key, value, float(time))
    return pairing.finish()


def _no_constants(name: str) -> object:
    raise ValueError(f"{name} is not a value a register can hold")


def _frozen(value: object, source: Path | str, line: int) -> Value:
    """JSON value -> hashable value (lists become tuples)."""
    if isinstance(value, list):
        return tuple(_frozen(item, source, line) for item in value)
    if isinstance(value, dict):
        raise HistoryError("a value cannot be a JSON object", source, line)
    assert value is None or isinstance(value, str | int | float)
    return value


# --- jepsen-etcd ----------------------------------------------------------------------------

# A client operation line: "jepsen.util - <process number> :<event type> ..."; anything else
# (nemesis lines have a keyword, not a number, as process) is not a client operation.
_ETCD_OP = re.compile(r"jepsen\.util\s+-\s+(\d+)\s+:(invoke|ok|fail|info)\b(.*)$")
_ETCD_REST = re.compile(r"\s+:([a-z-]+)\s+(nil|-?\d+|:[a-z-]+|\[\s*(\S+)\s+(\S+)\s*\])\s*$")


def _parse_jepsen_etcd(lines: Iterable[str], source: Path | str) -> list[Operation]:
    pairing = _Pairing(source)
    for number, line in enumerate(lines, start=1):
        head = _ETCD_OP.search(line)
        if head is None:
            continue
        process, kind, rest = int(head.group(1)), head.group(2), head.group(3)
        body = _ETCD_REST.fullmatch(rest)
        try:
            if body is None or body.group(1) not in ("read", "write", "cas"):
                raise ValueError("not a read, write or cas")
            f, text = body.group(1), body.group(2)
            value = _etcd_value(text, body.group(3), body.group(4))
            if text.startswith(":") and kind == "invoke":
                raise ValueError(f"an invocation needs a value, not {text}")
            if f == "cas" and not text.startswith(":") and not isinstance(value, tuple):
                raise ValueError("cas needs [expected new]")
        except ValueError as error:
            message = f"malformed operation ({error}): {line.strip()!r}"
            raise HistoryError(message, source, number) from None
        pairing.event(number, process, kind, f, ETCD_KEY, value, float(number))
    return pairing.finish()


def _etcd_value(text: str, first: str | None, second: str | None) -> Value:
    if first is not None and second is not None:
        return (_etcd_scalar(first), _etcd_scalar(second))
    if text.startswith(":"):
        return None  # e.g. ":timed-out": an outcome, not a value
    return _etcd_scalar(text)


def _etcd_scalar(text: str) -> Value:
    if text == "nil":
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    raise ValueError(f"bad value {text!r}")


# --- jepsen-kv (EDN) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keyword:
    """An EDN keyword such as `:invoke`."""

    name: str


def _parse_jepsen_kv(lines: Iterable[str], source: Path | str) -> list[Operation]:
    pairing = _Pairing(source)
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            event = parse_edn_map(text)
        except ValueError as error:
            raise HistoryError(f"malformed EDN: {error}", source, number) from None
        process = event.get("process")
        if not isinstance(process, int) or isinstance(process, bool):
            continue  # the nemesis and other non-client actors
        kind, f, key = event.get("type"), event.get("f"), event.get("key")
        if not isinstance(kind, Keyword) or not isinstance(f, Keyword):
            raise HistoryError("':type' and ':f' must be keywords", source, number)
        if isinstance(key, int) and not isinstance(key, bool):
            key = str(key)
        if not isinstance(key, str):
            raise HistoryError(f"':key' must be a string, got {key!r}", source, number)
        value = event.get("value")
        if isinstance(value, Keyword):
            value = None  # e.g. :timed-out
        pairing.event(number, process, kind.name, f.name, key, value, float(number))
    return pairing.finish()


_EDN_TOKEN = re.compile(
    r"""[\s,]*(?:
        (?P<open>[{\[])|(?P<close>[}\]])
        |"(?P<string>(?:[^"\\]|\\.)*)"
        |(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(?=[\s,}\]]|$)
        |:(?P<keyword>[^\s,{}\[\]"]+)
        |(?P<word>nil|true|false)(?=[\s,}\]]|$)
    )""",
    re.VERBOSE,
)
_EDN_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def parse_edn_map(text: str) -> dict[str, Value]:
    """Parse one flat EDN map (keyword keys; scalar or vector values). ValueError if not."""
    value, end = _edn_value(text, 0, depth=0)
    if text[end:].strip(" \t,"):
        raise ValueError(f"unexpected text after the map: {text[end:]!r}")
    if not isinstance(value, dict):
        raise ValueError("not a map")
    return value


def _edn_value(text: str, pos: int, depth: int) -> tuple[object, int]:
    if depth > 8:
        raise ValueError("nested too deeply")
    match = _EDN_TOKEN.match(text, pos)
    if match is None or match.lastgroup is None:
        raise ValueError(f"unexpected text at column {pos + 1}: {text[pos : pos + 20]!r}")
    end = match.end()
    kind = match.lastgroup
    if kind == "string":
        raw = match.group("string")
        return re.sub(r"\\(.)", lambda m: _EDN_ESCAPES.get(m.group(1), m.group(1)), raw), end
    if kind == "number":
        number = match.group("number")
        return (float(number) if any(c in number for c in ".eE") else int(number)), end
    if kind == "keyword":
        return Keyword(match.group("keyword")), end
    if kind == "word":
        return {"nil": None, "true": True, "false": False}[match.group("word")], end
    if kind == "close":
        raise ValueError(f"unexpected {match.group('close')!r} at column {end}")
    closer = "}" if match.group("open") == "{" else "]"
    items: list[object] = []
    while True:
        after = _EDN_TOKEN.match(text, end)
        if after is not None and after.lastgroup == "close":
            if after.group("close") != closer:
                raise ValueError(f"mismatched {after.group('close')!r} at column {after.end()}")
            end = after.end()
            break
        item, end = _edn_value(text, end, depth + 1)
        items.append(item)
    if closer == "]":
        return tuple(items), end
    if len(items) % 2:
        raise ValueError("a map needs an even number of forms")
    result: dict[str, Value] = {}
    for name, item in zip(items[::2], items[1::2], strict=True):
        if not isinstance(name, Keyword):
            raise ValueError(f"map key {name!r} is not a keyword")
        if isinstance(item, dict):
            raise ValueError("nested maps are not supported")
        result[name.name] = item
    return result, end
