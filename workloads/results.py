"""The raw data of one run, on disk: what every report is regenerated from.

One run = one folder `results/<UTC timestamp>-<scenario>-<label>[-t<trial>]/` holding:

``metadata.json``
    scenario (name, source file, the parsed TOML as `scenario_raw`), protocol, label
    (`push`, `pull`, `pull:<policy>`), sync policy, engine (`sim` | `real`), seed, trial,
    the exact command line, versions (python, packages, git revision), machine facts (cores,
    memory, CPU model, kernel), fsync policy, start time, wall seconds, the measured window
    (`window`: [start, end] in run seconds), and `driver` (load-generator processes, batch
    size, CPU seconds and share of the machine, the calibrated ceiling if known).

Two storage forms; `metadata["results_format"]` says which (absent: 1).

- Compact (format 3, what runs write unless asked for plain files): the operations, the time
  series and the final state (`metadata["final_state"]`, taken out of metadata.json) are
  tables of one xz-compressed `run.npz.xz`, stored column by column (`workloads.columnar`):
  `ops` (every column but `f`, `key`, `consistency` and `value`), `ops_key` (those three of
  a real run as codes against a replay of its load generator's streams,
  `workloads.key_replay`: the keys look random, and were most of the file; else as plain
  columns), `ops_value` (coded by key),
  `timeseries` and `final_state`. Lossless: the rows read back equal the rows written,
  every time to the bit, so the report and the checker see exactly what the driver recorded.
  `history.jsonl` is left out: it is derived from the ops (the report re-checks the history
  from them). Format 2 (still read) stored the ops as one table `ops`, keys included.
- Plain (format 1): the JSON-lines files below, readable with any tool, plus history.jsonl.
  Older run folders hold them gzip-compressed (`ops.jsonl.gz`, `timeseries.jsonl.gz`, no
  history); they are still read. `python -m workloads.results_compact DIR...` converts run
  folders (plain, or compact format 2) to compact format 3 in place.

``ops.jsonl``
    one line per client operation: `process`, `f` (read|write|delete|cas), `key`, `value`
    (cas: [expected, new]; read: the value read), `consistency` (reads), `intended` (open
    loop: the scheduled start; else = invoke), `invoke`, `complete` (null when unknown),
    `outcome` (ok|fail|unknown). Times are seconds since the run started.
``history.jsonl``
    the linearizable operations in DESIGN.md's Jepsen-style event format, for the checker
    (`raftbench check` reads it as `jsonl`). Local/leader reads are left out (not meant to be
    linearizable).
``timeseries.jsonl``
    every 100 ms (or finer) per node: `t`, `node`, `up`, `role`, `term`, `commit`, `applied`,
    `last`, and, when known, `sync_source`, `sync_depth` (hops from the primary: 0 for it,
    null without a source), `cpu` (seconds used so far), `sent`/`received`
    (bytes so far), `rss` (resident bytes of the node's process; real runs), `log_entries`
    and `log_bytes` (the log held in memory) and `snapshot_index` (null for etcd).
``links.json``
    bytes and messages per directed peer link over the measured window:
    `[{"src", "dst", "bytes", "messages"}]`, plus `regions` ({node: region}).
``nodes.json``
    per node: `region`, `cpu_seconds` (window; null when unknown), `bytes_sent`,
    `bytes_received` (window), `leader_time` (seconds it led in the window).
``faults.jsonl``
    `t`, `kind`, `nodes`, `detail` for every fault injected (and undone), and `took`: seconds
    from `t` until the fault was in force (absent before it was recorded; read from the
    detail's "(took X s)" then).
``events.jsonl``
    the engines' protocol events (protocols/events.py), time order: `t` (run seconds), `node`,
    `kind`, `term`, `detail`, `last_contact` (election starts: when that node last heard a
    leader). Absent in runs made before it existed (read as none).
``summary.json``
    what `workloads.summary` computes from the files above (the report re-computes it).

Only `workloads/` writes here; tests write to temporary folders.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from workloads.checker import Operation
from workloads.columnar import (
    Arrays,
    ColumnarError,
    decode_rows,
    encode_rows,
    load_arrays,
    save_arrays,
)
from workloads.key_replay import Replay, decode_keys, encode_keys

SAMPLE_INTERVAL = 0.1  # seconds between time-series samples
PLAIN_FORMAT, COMPACT_FORMAT = 1, 3  # metadata["results_format"]
OPS_TABLE_FORMAT = 2  # compact, with the ops in one table (keys stored as they are)
COMPACT_FILE = "run.npz.xz"


@dataclass(slots=True)
class OpRecord:
    """One client operation as the driver saw it."""

    process: int
    f: str
    key: str
    value: Any
    invoke: float
    complete: float | None
    outcome: str  # ok | fail | unknown
    consistency: str | None = None
    intended: float | None = None

    @property
    def latency(self) -> float | None:
        if self.complete is None:
            return None
        start = self.intended if self.intended is not None else self.invoke
        return self.complete - start

    def is_linearizable_op(self) -> bool:
        return self.f != "read" or self.consistency in (None, "linearizable")

    def as_operation(self) -> Operation:
        return Operation(
            self.process, self.f, self.key, self.value, self.invoke, self.complete, self.outcome
        )


@dataclass(slots=True)
class FaultRecord:
    """A fault as the driver applied it: started at `t`, in force `took` seconds later (None:
    at once, as in the simulator, or not known)."""

    t: float
    kind: str
    nodes: tuple[str, ...]
    detail: str = ""
    took: float | None = None

    @property
    def in_force(self) -> float:
        return self.t + (self.took or 0.0)


@dataclass(slots=True)
class RunRecord:
    """Everything a driver hands over to be written."""

    metadata: dict[str, Any]
    ops: list[OpRecord]
    timeseries: list[dict[str, Any]]
    links: list[dict[str, Any]]
    regions: dict[str, str]
    nodes: dict[str, dict[str, Any]]
    faults: list[FaultRecord] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def history(self) -> list[Operation]:
        return [op.as_operation() for op in self.ops if op.is_linearizable_op()]


def history_events(ops: Iterable[OpRecord]) -> list[dict[str, Any]]:
    """DESIGN.md's event lines: an invoke and a completion per operation, in time order.

    An operation with an unknown outcome completes with an `info` event at the end of the run.
    """
    chosen = [op for op in ops if op.is_linearizable_op()]
    end = max((op.complete or op.invoke for op in chosen), default=0.0)
    events: list[tuple[float, int, dict[str, Any]]] = []
    for op in chosen:
        value = list(op.value) if isinstance(op.value, tuple) else op.value
        base = {"process": op.process, "f": op.f, "key": op.key}
        invoke = {**base, "type": "invoke", "value": None if op.f == "read" else value}
        events.append((op.invoke, 0, {**invoke, "time": op.invoke}))
        kind = {"ok": "ok", "fail": "fail", "unknown": "info"}[op.outcome]
        done = op.complete if op.complete is not None else end
        events.append((done, 1, {**base, "type": kind, "value": value, "time": done}))
    events.sort(key=lambda item: (item[0], item[1]))
    return [event for _, _, event in events]


def write_run(record: RunRecord, results_dir: Path, run_name: str, compress: bool = True) -> Path:
    """Write one run's folder; returns it. `compress`: the compact form, else plain files."""
    folder = results_dir / run_name
    folder.mkdir(parents=True, exist_ok=False)
    if compress:
        _write_compact(record, folder)
    else:
        _dump(folder / "metadata.json", record.metadata)
        _lines(folder / "ops.jsonl", (_op_row(op) for op in record.ops))
        _lines(folder / "history.jsonl", history_events(record.ops))
        _lines(folder / "timeseries.jsonl", record.timeseries)
    _dump(folder / "links.json", {"links": record.links, "regions": record.regions})
    _dump(folder / "nodes.json", record.nodes)
    _lines(folder / "faults.jsonl", (asdict(f) for f in record.faults))
    _lines(folder / "events.jsonl", record.events)
    return folder


def read_run(folder: Path) -> RunRecord:
    """Load a run folder back (the report's only input), whichever form it is stored in."""
    metadata = json.loads((folder / "metadata.json").read_text())
    stored = metadata.get("results_format", PLAIN_FORMAT)
    if stored in (COMPACT_FORMAT, OPS_TABLE_FORMAT):
        metadata, op_rows, timeseries = _read_compact(folder, metadata)
    elif stored == PLAIN_FORMAT:
        op_rows = list(_read_lines(_either(folder, "ops")))
        timeseries = list(_read_lines(_either(folder, "timeseries")))
    else:
        raise ValueError(f"{folder / 'metadata.json'}: unknown results_format {stored!r}")
    ops = [OpRecord(**row) for row in op_rows]
    for op in ops:
        if op.f == "cas" and isinstance(op.value, list):
            op.value = tuple(op.value)
    links = json.loads((folder / "links.json").read_text())
    faults = [
        FaultRecord(
            row["t"],
            row["kind"],
            tuple(row["nodes"]),
            row.get("detail", ""),
            row.get("took", _took_in(row.get("detail", ""))),
        )
        for row in _read_lines(folder / "faults.jsonl")
    ]
    events_file = folder / "events.jsonl"
    events = list(_read_lines(events_file)) if events_file.exists() else []
    return RunRecord(
        metadata=metadata,
        ops=ops,
        timeseries=timeseries,
        links=links["links"],
        regions=links["regions"],
        nodes=json.loads((folder / "nodes.json").read_text()),
        faults=faults,
        events=events,
    )


def is_compact(folder: Path) -> bool:
    metadata = json.loads((folder / "metadata.json").read_text())
    return bool(metadata.get("results_format") == COMPACT_FORMAT)


def compact_run(folder: Path) -> bool:
    """Rewrite a plain (or older compact) run folder in the compact form; False when it
    already is in the current one.

    The old files go only once the new ones read back the same data; an interrupted
    conversion leaves a folder that reads as before (metadata.json is replaced last).
    """
    if is_compact(folder):
        return False
    record = read_run(folder)
    metadata_text = (folder / "metadata.json").read_bytes()
    compact = folder / COMPACT_FILE
    older = compact.read_bytes() if compact.exists() else None
    _write_compact(record, folder)
    if read_run(folder) != record:  # never lose data to a bug: put the old form back
        if older is None:
            compact.unlink()
        else:
            compact.write_bytes(older)
        (folder / "metadata.json").write_bytes(metadata_text)
        raise ValueError(f"{folder}: the compact form did not read back the same data")
    for stem in ("ops", "timeseries", "history"):
        for name in (f"{stem}.jsonl", f"{stem}.jsonl.gz"):
            (folder / name).unlink(missing_ok=True)
    return True


_OP_FIELDS = tuple(f.name for f in fields(OpRecord))


def _op_row(op: OpRecord) -> dict[str, Any]:
    """An op's fields as a dict, shallow: `dataclasses.asdict` deep-copies every value and
    was most of the time it took to write a long run (the rows are only read)."""
    return {name: getattr(op, name) for name in _OP_FIELDS}


def _write_compact(record: RunRecord, folder: Path) -> float | None:
    """Write the compact form; returns the share of keys the streams predicted (None: the
    keys are stored plainly)."""
    metadata = dict(record.metadata)
    arrays, predicted = _encode_ops(record.ops, metadata)
    arrays |= encode_rows("timeseries", record.timeseries)
    final_state = metadata.get("final_state")
    if isinstance(final_state, dict):
        rows = [{"key": key, "value": value} for key, value in final_state.items()]
        arrays |= encode_rows("final_state", rows)
        del metadata["final_state"]
    metadata["results_format"] = COMPACT_FORMAT
    partial = folder / f"{COMPACT_FILE}.{os.getpid()}.partial"  # two converters never clash
    save_arrays(partial, arrays)
    partial.replace(folder / COMPACT_FILE)
    partial = folder / f"metadata.json.{os.getpid()}.partial"
    _dump(partial, metadata)
    partial.replace(folder / "metadata.json")
    return predicted


def _encode_ops(
    ops: Sequence[OpRecord], metadata: Mapping[str, Any]
) -> tuple[Arrays, float | None]:
    """The tables `ops`, `ops_key`, `ops_value` (see the module's docstring), and the share of
    operations the streams predicted."""
    rows = [_op_row(op) for op in ops]
    drawn = [(row.pop("f"), row.pop("key"), row.pop("consistency")) for row in rows]
    values = [
        {"key": op[1], "value": row.pop("value")} for op, row in zip(drawn, rows, strict=True)
    ]
    arrays = encode_rows("ops", rows, relative_to={"complete": "invoke", "intended": "invoke"})
    replay = Replay.of_run(metadata)
    coded = None
    if replay is not None and all(isinstance(key, str) for _, key, _ in drawn):
        coded = encode_keys("ops_key", replay, rows, drawn)
    if coded is None:
        plain = [{"f": f, "key": key, "consistency": level} for f, key, level in drawn]
        arrays |= encode_rows("ops_key", plain)
    else:
        arrays |= coded[0]
    arrays |= encode_rows("ops_value", values, keyed_by={"value": "key"}, given=("key",))
    return arrays, None if coded is None else coded[1]


def _decode_ops(arrays: Arrays, metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The inverse of `_encode_ops`."""
    rows = decode_rows("ops", arrays)
    if "ops_key.codes" in arrays:
        replay = Replay.of_run(metadata)
        if replay is None:
            raise ColumnarError("keys coded against a replay the metadata does not allow")
        drawn = [
            {"f": f, "key": key, "consistency": level}
            for f, key, level in decode_keys("ops_key", replay, rows, arrays)
        ]
    else:
        drawn = decode_rows("ops_key", arrays)
    if len(drawn) != len(rows):
        raise ColumnarError(f"{len(drawn)} keys for {len(rows)} operations")
    values = decode_rows("ops_value", arrays, into=[{"key": op["key"]} for op in drawn])
    return [{**row, **op, **value} for row, op, value in zip(rows, drawn, values, strict=True)]


def _read_compact(
    folder: Path, metadata: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(metadata with its final state back, op rows, time-series rows) of a compact run."""
    path = folder / COMPACT_FILE
    arrays = load_arrays(path)
    try:
        if metadata.get("results_format") == OPS_TABLE_FORMAT:
            op_rows = decode_rows("ops", arrays)
        else:
            op_rows = _decode_ops(arrays, metadata)
        timeseries = decode_rows("timeseries", arrays)
        if "final_state.schema" in arrays:
            rows = decode_rows("final_state", arrays)
            metadata = {**metadata, "final_state": {row["key"]: row["value"] for row in rows}}
    except (KeyError, IndexError, ValueError, TypeError, StopIteration) as error:
        raise ColumnarError(f"{path}: malformed columnar data: {error!r}") from None
    metadata.pop("results_format", None)
    return metadata, op_rows, timeseries


def run_metadata(
    scenario: Any,
    *,
    protocol: str,
    policy: str | None,
    label: str,
    engine: str,
    seed: int,
    trial: int,
    command: str,
    started: float,
    wall_seconds: float,
    window: tuple[float, float],
) -> dict[str, Any]:
    """The metadata every driver writes the same way (a `workloads.scenario.Scenario`)."""
    return {
        "scenario": scenario.name,
        "scenario_file": scenario.source,
        "scenario_raw": dict(scenario.raw),
        "protocol": protocol,
        "label": label,
        "sync_policy": (policy or scenario.sync_policy) if protocol == "pull" else None,
        "max_pullers": (
            scenario.max_pullers
            if protocol == "pull" and (policy or scenario.sync_policy) == "spread"
            else None
        ),
        "engine": engine,
        "seed": seed,
        "trial": trial,
        "command": command,
        "versions": versions(),
        "machine": machine_facts(),
        "fsync": scenario.fsync,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(wall_seconds, 3),
        "window": list(window),
    }


def run_name(scenario: str, label: str, trial: int, when: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when if when is not None else time.time()))
    safe = label.replace(":", "-")
    return f"{stamp}-{scenario}-{safe}-t{trial}"


def machine_facts() -> dict[str, Any]:
    """What the report must state about where the numbers come from."""
    facts: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                facts["memory_kib"] = int(line.split()[1])
                break
    except OSError:
        pass
    return facts


def versions(
    packages: Sequence[str] = ("raftbench", "numpy", "httpx", "starlette"),
) -> dict[str, str]:
    found: dict[str, str] = {}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    try:
        found["git"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found["git"] = "unknown"
    return found


def _dump(path: Path, data: Mapping[str, Any] | list[Any]) -> None:
    path.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def _either(folder: Path, stem: str) -> Path:
    """`stem.jsonl`, or its compressed form when that is what the folder holds."""
    plain = folder / f"{stem}.jsonl"
    packed = folder / f"{stem}.jsonl.gz"
    return packed if packed.exists() and not plain.exists() else plain


def _open_text(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        raw = gzip.GzipFile(path, mode + "b", compresslevel=9)
        return io.TextIOWrapper(raw, encoding="utf-8")
    return path.open(mode, encoding="utf-8")


def _lines(path: Path, rows: Iterable[Mapping[str, Any]]) -> None:
    with _open_text(path, "w") as out:
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":"), default=str) + "\n")


def _read_lines(path: Path) -> Iterable[dict[str, Any]]:
    with _open_text(path, "r") as source:
        for line in source:
            if line.strip():
                yield json.loads(line)


def _took_in(detail: str) -> float | None:
    """How long a fault took to apply, from the "(took X s)" its detail carried before the
    record had a field for it."""
    found = re.search(r"\(took (\d+(?:\.\d+)?) s\)", detail)
    return float(found.group(1)) if found else None
