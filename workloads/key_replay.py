"""A real run's operation keys, stored as what the load generator's streams predict.

The keys of a run look random (uniform over hundreds of keys: no compressor shrinks them), but
they are not: every worker of `workloads.loadgen` draws its operations from
`OperationStream(workload, seed, worker_id)`, and the run's metadata says which workload, seed
and batch it used. So the keys are stored as codes against a replay of those streams:

- a worker's operations are its process numbers' (`(worker * batch + lane) * PROCESS_SPAN +
  generation`), taken in invoke order, then each round (a round ends where a lane comes
  again: its lanes may go as separate requests, local reads or etcd's, timed apart) by lane:
  the order the worker drew them in;
- per operation, a code: its place `j < WINDOW` among the stream's next operations not yet
  matched (same `f`, key and consistency, which it then gives too; 0 nearly always, as a run
  of zeros compresses to nothing), else `WINDOW + d - 1` when it has the key of the worker's
  operation `d <= BACK` places before it (the compare-and-set half of a read-modify-write),
  else EXPLICIT: the key is stored as is. An operation no stream gave has its `f` and
  consistency stored as they are.

Whatever the prediction gets wrong costs room, never data: `encode_keys` decodes what it
encoded and returns None (the caller stores the keys plainly) unless it gets the keys back.
The keys now depend on the metadata and on the stream generator's code: a checksum of the
keys is stored too, so that a change to either is an error when reading, never wrong keys.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from protocols.errors import RaftbenchError
from workloads.columnar import Arrays, decode_rows, encode_rows
from workloads.generators import PROCESS_SPAN, OperationStream, OpKind, Workload
from workloads.scenario import parse_scenario

WINDOW = 64  # stream places searched ahead (a round's lanes sent apart come out of order)
BACK = 64  # earlier operations of the worker searched for the same key
EXPLICIT = WINDOW + BACK
Drawn = tuple[str, str, str | None]  # an operation's f, key and consistency
_F = {
    OpKind.READ: "read",
    OpKind.RMW: "read",
    OpKind.WRITE: "write",
    OpKind.DELETE: "delete",
    OpKind.CAS: "cas",
}


class Replay:
    """What a run's streams need: its workload, seed and batch (from its metadata)."""

    def __init__(self, workload: Workload, seed: int, batch: int, span: int) -> None:
        self.workload = workload
        self.seed = seed
        self.batch = batch
        self.span = span  # process numbers of one lane (PROCESS_SPAN)

    @classmethod
    def of_run(cls, metadata: Mapping[str, Any]) -> Replay | None:
        """The replay of a run made by the real driver, or None (a simulated run's streams
        use a seed its metadata does not record, and its process numbers name no worker)."""
        if metadata.get("engine") != "real":
            return None
        try:
            scenario = parse_scenario(metadata["scenario_raw"])
            seed = metadata["seed"]
            batch = metadata.get("driver", {}).get("batch", scenario.load.batch)
        except (KeyError, TypeError, AttributeError, ValueError, RaftbenchError):
            return None
        if not isinstance(seed, int) or not isinstance(batch, int) or seed < 0 or batch < 1:
            return None
        return cls(scenario.workload, seed, batch, PROCESS_SPAN)

    def worker_orders(self, ops: Sequence[Mapping[str, Any]]) -> dict[int, list[int]]:
        """{worker: its rows' indices in draw order}; rows of no worker under -1."""
        orders: dict[int, list[tuple[float, int, int]]] = {}
        for index, op in enumerate(ops):
            process, invoke = op.get("process"), op.get("invoke")
            if (
                not isinstance(process, int)
                or not isinstance(invoke, float | int)
                or process < 0
                or process // self.span >= self.workload.clients * self.batch
            ):
                orders.setdefault(-1, []).append((0.0, 0, index))
                continue
            worker, lane = divmod(process // self.span, self.batch)
            orders.setdefault(worker, []).append((float(invoke), lane, index))
        return {worker: _by_round(sorted(rows)) for worker, rows in sorted(orders.items())}

    def stream(self, worker: int) -> Iterator[Drawn]:
        """(f, key, consistency) of the worker's operations, in the order it draws them."""
        stream = OperationStream(self.workload, self.seed, worker)
        while True:
            planned = stream.next_op()
            level = planned.consistency.value if planned.consistency is not None else None
            yield _F[planned.kind], planned.key, level


def _by_round(rows: list[tuple[float, int, int]]) -> list[int]:
    """The row indices of (invoke, lane, index) in invoke order, each round by lane: a round
    ends where a lane comes again (its lanes may go as several requests, timed apart)."""
    order: list[int] = []
    lanes: set[int] = set()
    round_: list[tuple[int, int]] = []
    for _, lane, index in rows:
        if lane in lanes:
            order += [i for _, i in sorted(round_)]
            lanes.clear()
            round_.clear()
        lanes.add(lane)
        round_.append((lane, index))
    return order + [i for _, i in sorted(round_)]


def encode_keys(
    table: str, replay: Replay, ops: Sequence[Mapping[str, Any]], drawn: Sequence[Drawn]
) -> tuple[Arrays, float] | None:
    """(the arrays storing `drawn`, the share of it the streams predicted), or None when the
    arrays would not give `drawn` back. `ops` are the rows (with `process`, `invoke`) the
    reader will have when it decodes (`decode_keys`)."""
    codes = np.full(len(drawn), EXPLICIT, dtype=np.int64)
    explicit: list[dict[str, Any]] = []
    kinds: list[dict[str, Any]] = []
    predicted = 0
    for worker, order in replay.worker_orders(ops).items():
        stream = replay.stream(worker) if worker >= 0 else None
        pending: list[Drawn] = []
        for place, index in enumerate(order):
            op = drawn[index]
            code = EXPLICIT
            if stream is not None:
                while len(pending) < WINDOW:
                    pending.append(next(stream))
                code = next((j for j, p in enumerate(pending) if p == op), EXPLICIT)
                if code < WINDOW:
                    del pending[code]
                    predicted += 1
            if code == EXPLICIT:
                f, key, consistency = op
                kinds.append({"f": f, "consistency": consistency})
                earlier = range(place - 1, max(place - BACK, 0) - 1, -1)
                back = next((place - e for e in earlier if drawn[order[e]][1] == key), None)
                if back is not None:
                    code = WINDOW + back - 1
                else:
                    explicit.append({"key": key})
            codes[index] = code
    arrays = encode_rows(f"{table}.explicit", explicit)
    arrays |= encode_rows(f"{table}.kinds", kinds)
    arrays[f"{table}.codes"] = _narrow_codes(codes)
    arrays[f"{table}.checksum"] = np.array([_checksum(drawn)], dtype=np.uint32)
    try:
        decoded = decode_keys(table, replay, ops, arrays)
    except (ValueError, IndexError, KeyError, StopIteration):
        return None
    if decoded != list(drawn):
        return None
    return arrays, predicted / len(drawn) if drawn else 1.0


def decode_keys(
    table: str, replay: Replay, ops: Sequence[Mapping[str, Any]], arrays: Mapping[str, Any]
) -> list[Drawn]:
    """The (f, key, consistency) of each of `ops` that `encode_keys` stored."""
    codes = arrays[f"{table}.codes"].tolist()
    if len(codes) != len(ops):
        raise ValueError(f"{table}: {len(codes)} key codes for {len(ops)} operations")
    explicit = iter(row["key"] for row in decode_rows(f"{table}.explicit", arrays))
    kinds = iter(decode_rows(f"{table}.kinds", arrays))
    found: list[Drawn | None] = [None] * len(ops)
    for worker, order in replay.worker_orders(ops).items():
        stream = replay.stream(worker) if worker >= 0 else None
        pending: list[Drawn] = []
        for place, index in enumerate(order):
            code = codes[index]
            if code < 0 or code > EXPLICIT:
                raise ValueError(f"{table}: unknown key code {code}")
            if code < WINDOW:
                if stream is None:
                    raise ValueError(f"{table}: a predicted key for a row of no worker")
                while len(pending) < WINDOW:
                    pending.append(next(stream))
                found[index] = pending.pop(code)
                continue
            if code < EXPLICIT:
                back = code - WINDOW + 1
                earlier = found[order[place - back]] if back <= place else None
                if earlier is None:
                    raise ValueError(f"{table}: a key code refers before the worker's first")
                key = earlier[1]
            else:
                key = next(explicit)
            kind = next(kinds)
            found[index] = (kind["f"], key, kind["consistency"])
    if next(explicit, None) is not None or next(kinds, None) is not None:
        raise ValueError(f"{table}: more keys stored than codes ask for")
    drawn = [op for op in found if op is not None]
    if len(drawn) != len(ops):
        raise ValueError(f"{table}: an operation without a key")
    if arrays[f"{table}.checksum"].tolist() != [_checksum(drawn)]:
        raise ValueError(
            f"{table}: the replayed keys do not match their checksum (the run's metadata or "
            "the operation streams' code changed since the run was stored)"
        )
    return drawn


def _checksum(drawn: Sequence[Drawn]) -> int:
    return zlib.crc32(json.dumps(list(drawn)).encode("utf-8"))


def _narrow_codes(codes: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    return codes.astype(np.uint8) if EXPLICIT < 256 else codes
