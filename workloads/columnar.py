"""Lists of JSON-like rows stored as compressed numpy columns, and read back unchanged.

A run's operations are millions of small dicts; as JSON lines (even gzipped) they made the
committed reference tens of megabytes. Stored column by column, each column in the narrowest
exact form, they compress far better, and nothing the report or the checker reads changes:
decoding gives back rows equal to the ones encoded (same keys, same values, same types).

How a column is stored depends on the values it holds (None counts apart, in a `null` mask;
a key absent from some rows, in a `missing` mask):

- ``bool``: one byte per row;
- ``int``: int64 values, as differences from the previous row, in the narrowest integer type;
- ``us``: floats that are all whole microseconds (what the real driver records): integer
  microseconds, as differences from the previous row or, with `relative_to`, from another
  ``us`` column of the same row (a completion time relative to its invocation). The check
  `microseconds / 1e6 == value` is made on every value, so no time (and no order of times)
  changes; a column with one value that is not whole microseconds is stored as ``float``;
- ``float``: float64, bytes regrouped by significance (all first bytes, then all second
  bytes...) so that the compressor sees the repetitive high bytes together;
- ``json``: anything else (strings, None, lists, mixed types): a table of the distinct JSON
  texts, and per row the index of its text.

One table is a set of arrays named `<table>.<column>.<part>` plus `<table>.schema` (JSON).
All tables of a file go in one `.npz` (numpy's zip of arrays), compressed as a whole with
xz: `.npz.xz` (`xz -d` gives a file `numpy.load` reads). One stream over everything
compresses better than zip's member by member (a run holds some sixty small arrays).
"""

from __future__ import annotations

import io
import json
import lzma
import re
import zipfile
import zlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from protocols.errors import RaftbenchError

Arrays = dict[str, npt.NDArray[Any]]
_MISSING = object()
_MICRO = 1_000_000
_JSON = json.JSONEncoder(separators=(",", ":"))
_RECENT = 16  # values remembered per key
_NEW, _OTHER = -1, -2
_DIGITS = re.compile(r"([0-9]+)")
_HOLE = "\x00"  # where a number goes in a skeleton (JSON text never holds a raw NUL)
_MAX_DIGITS = 15
_US_LIMIT = 2**52 / _MICRO  # beyond this, whole microseconds are not exact in a float


class ColumnarError(RaftbenchError, ValueError):
    """A columnar file is unreadable (truncated, corrupt, or not what its schema says)."""


def encode_rows(
    table: str,
    rows: Sequence[Mapping[str, Any]],
    relative_to: Mapping[str, str] | None = None,
    keyed_by: Mapping[str, str] | None = None,
    given: Collection[str] = (),
) -> Arrays:
    """The arrays that store `rows` under the name `table` (see `decode_rows`).

    `relative_to` {column: base}: a time column stored relative to a time column before it.
    `keyed_by` {column: key column}: a `json` column coded by the recent values of rows with
    the same key (a read mostly returns what the last write of its key wrote).
    `given`: columns not stored (the reader has them already: `decode_rows(..., into=)`),
    which `keyed_by` may still name.
    """
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    for name in given:
        names.pop(name, None)
    arrays: Arrays = {}
    columns: list[dict[str, Any]] = []
    decoded_us: dict[str, npt.NDArray[np.int64]] = {}
    columns_done: set[str] = set()
    for name in names:
        values = [row.get(name, _MISSING) for row in rows]
        base = (relative_to or {}).get(name)
        key = (keyed_by or {}).get(name)
        # the key column must come first: decoding reads it before this one
        groups = (
            _groups(rows, key)
            if key is not None and (key in columns_done or key in given)
            else None
        )
        column, parts, exact_us = _encode_column(
            values, decoded_us.get(base) if base else None, groups
        )
        if exact_us is not None:
            decoded_us[name] = exact_us
        if column.pop("relative", False):
            column["relative_to"] = base
        if column.pop("keyed", False):
            column["keyed_by"] = key
        columns.append({"name": name, **column})
        columns_done.add(name)
        arrays.update({f"{table}.{name}.{part}": array for part, array in parts.items()})
    schema = {"rows": len(rows), "columns": columns}
    arrays[f"{table}.schema"] = _text_array(json.dumps(schema))
    return arrays


def decode_rows(
    table: str,
    arrays: Mapping[str, npt.NDArray[Any]],
    into: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """The rows `encode_rows(table, rows)` stored, equal to `rows`.

    `into`: rows holding the `given` columns already; the stored columns are added to them.
    """
    schema = json.loads(_array_text(arrays[f"{table}.schema"]))
    count = int(schema["rows"])
    rows: list[dict[str, Any]] = [{} for _ in range(count)] if into is None else into
    _expect(len(rows) == count, "row count of the given columns")
    decoded_us: dict[str, npt.NDArray[np.int64]] = {}
    for column in schema["columns"]:
        name = column["name"]
        prefix = f"{table}.{name}."
        parts = {key.removeprefix(prefix): arrays[key] for key in arrays if key.startswith(prefix)}
        base = decoded_us.get(column["relative_to"]) if "relative_to" in column else None
        groups = _groups(rows, column["keyed_by"]) if "keyed_by" in column else None
        values, exact_us = _decode_column(column["kind"], parts, count, base, groups)
        if exact_us is not None:
            decoded_us[name] = exact_us
        null = parts.get("null")
        missing = parts.get("missing")
        for i, value in enumerate(values):
            if missing is not None and missing[i]:
                continue
            rows[i][name] = None if null is not None and null[i] else value
    return rows


def save_arrays(path: Path, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
    """Write `arrays` into one xz-compressed `.npz` (see the module's docstring)."""
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
    path.write_bytes(lzma.compress(packed.getvalue(), preset=9 | lzma.PRESET_EXTREME))


def load_arrays(path: Path) -> Arrays:
    """Every array of `path`; a truncated or corrupt file raises ColumnarError naming it."""
    try:
        packed = io.BytesIO(lzma.decompress(path.read_bytes()))
        with np.load(packed, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (
        OSError,
        EOFError,
        ValueError,
        KeyError,
        zipfile.BadZipFile,
        lzma.LZMAError,
        zlib.error,
    ) as error:
        raise ColumnarError(f"{path}: unreadable columnar file: {error}") from None


def _encode_column(
    values: list[Any], base: npt.NDArray[np.int64] | None, groups: list[str] | None
) -> tuple[dict[str, Any], Arrays, npt.NDArray[np.int64] | None]:
    """(schema entry, arrays, the integer microseconds when stored as `us`)."""
    parts: Arrays = {}
    missing = np.fromiter((v is _MISSING for v in values), dtype=bool, count=len(values))
    if missing.any():
        parts["missing"] = missing
    present = [v for v in values if v is not _MISSING and v is not None]
    kind = _kind_of(present)
    if kind == "json":
        texts = ["null" if v is _MISSING else _JSON.encode(v) for v in values]
        index: dict[str, int] = {}
        codes = np.fromiter(
            (index.setdefault(text, len(index)) for text in texts), np.int64, len(texts)
        )
        parts.update(_encode_table(list(index)))
        if groups is None:
            parts["index"] = _narrow(codes)
            return {"kind": kind}, parts, None
        recent, misses = _recent_codes(codes.tolist(), groups)
        parts["recent"] = _narrow(np.array(recent, dtype=np.int64))
        parts["index"] = _narrow(np.array(misses, dtype=np.int64))
        return {"kind": kind, "keyed": True}, parts, None
    null = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    if null.any():
        parts["null"] = null
    filled = [v if v is not _MISSING and v is not None else 0 for v in values]
    if kind == "bool":
        parts["values"] = np.array(filled, dtype=np.uint8)
        return {"kind": kind}, parts, None
    if kind == "int":
        parts["delta"] = _narrow(_delta(np.array(filled, dtype=np.int64)))
        return {"kind": kind}, parts, None
    floats = np.array(filled, dtype="<f8")
    micros = _whole_micros(floats)
    if micros is None:
        parts["bytes"] = floats.view(np.uint8).reshape(-1, 8).T.copy()
        return {"kind": "float"}, parts, None
    if base is not None:
        parts["offset"] = _narrow(micros - base)
        return {"kind": "us", "relative": True}, parts, micros
    parts["delta"] = _narrow(_delta(micros))
    return {"kind": "us"}, parts, micros


def _decode_column(
    kind: str,
    parts: Mapping[str, npt.NDArray[Any]],
    count: int,
    base: npt.NDArray[np.int64] | None,
    groups: list[str] | None,
) -> tuple[list[Any], npt.NDArray[np.int64] | None]:
    if kind == "json":
        texts = _decode_table(parts)
        table = [json.loads(text) for text in texts]
        if groups is None:
            codes = parts["index"].tolist()
        else:
            codes = _codes_from_recent(parts["recent"].tolist(), parts["index"].tolist(), groups)
        _expect(len(codes) == count, "json index")
        out: list[Any] = []
        for code in codes:
            value = table[code]
            # a list or dict must not be shared between rows: give each row its own copy
            out.append(json.loads(texts[code]) if isinstance(value, list | dict) else value)
        return out, None
    if kind == "bool":
        return [bool(v) for v in parts["values"].tolist()], None
    if kind == "int":
        return np.cumsum(parts["delta"], dtype=np.int64).tolist(), None
    if kind == "float":
        raw = parts["bytes"]
        _expect(raw.shape == (8, count), "float bytes")
        return raw.T.copy().view("<f8").reshape(-1).tolist(), None
    if kind == "us":
        if "offset" in parts:
            _expect(base is not None, "base column of a relative time")
            assert base is not None
            micros = parts["offset"].astype(np.int64) + base
        else:
            micros = np.cumsum(parts["delta"], dtype=np.int64)
        _expect(micros.shape == (count,), "microseconds")
        return (micros / _MICRO).tolist(), micros
    raise ColumnarError(f"unknown column kind {kind!r}")


def _groups(rows: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    """A hashable group per row from its `key` value, the same when encoding and decoding
    (two values that share a group only cost compression, never correctness)."""
    found = (row.get(key) for row in rows)
    return [value if isinstance(value, str) else _JSON.encode(value) for value in found]


def _recent_codes(codes: list[int], groups: list[str]) -> tuple[list[int], list[int]]:
    """Per row: the code's place among its group's recent codes (most recent first), or
    NEW (the next code never seen), or OTHER (then the code itself goes in the second list)."""
    recent: dict[str, list[int]] = {}
    places: list[int] = []
    others: list[int] = []
    seen = 0
    for code, group in zip(codes, groups, strict=True):
        mine = recent.setdefault(group, [])
        if code in mine:
            place = mine.index(code)
            del mine[place]
        elif code == seen:
            place = _NEW
        else:
            place = _OTHER
            others.append(code)
        seen = max(seen, code + 1)
        places.append(place)
        _remember(mine, code)
    return places, others


def _codes_from_recent(places: list[int], others: list[int], groups: list[str]) -> list[int]:
    """The inverse of `_recent_codes`."""
    recent: dict[str, list[int]] = {}
    codes: list[int] = []
    pending = iter(others)
    seen = 0
    for place, group in zip(places, groups, strict=True):
        mine = recent.setdefault(group, [])
        if place == _NEW:
            code = seen
        elif place == _OTHER:
            code = next(pending)
        else:
            _expect(0 <= place < len(mine), "recent value place")
            code = mine.pop(place)
        seen = max(seen, code + 1)
        codes.append(code)
        _remember(mine, code)
    return codes


def _remember(recent: list[int], code: int) -> None:
    recent.insert(0, code)
    if len(recent) > _RECENT:
        recent.pop()


def _encode_table(texts: list[str]) -> Arrays:
    """Distinct JSON texts as skeletons (digits taken out) and the numbers taken out, each
    number as a difference from the last one seen after the same skeleton and numbers before
    it: "c17-12", "c17-13" cost a few bits, not a few bytes."""
    skeletons: dict[str, int] = {}
    which: list[int] = []
    deltas: list[int] = []
    last: dict[tuple[int, ...], int] = {}
    for text in texts:
        pieces = _DIGITS.split(text)
        skeleton = [pieces[0]]
        numbers: list[int] = []
        for digits, literal in zip(pieces[1::2], pieces[2::2], strict=True):
            if len(digits) <= _MAX_DIGITS and (digits == "0" or digits[0] != "0"):
                skeleton.append(_HOLE)
                numbers.append(int(digits))
            else:  # a number that would not print back the same stays in the skeleton
                skeleton.append(digits)
            skeleton.append(literal)
        code = skeletons.setdefault("".join(skeleton), len(skeletons))
        which.append(code)
        for place, number in enumerate(numbers):
            context = (code, *numbers[:place])
            deltas.append(number - last.get(context, 0))
            last[context] = number
    return {
        "skeletons": _text_array("\n".join(skeletons)),
        "skeleton": _narrow(np.array(which, dtype=np.int64)),
        "numbers": _narrow(np.array(deltas, dtype=np.int64)),
    }


def _decode_table(parts: Mapping[str, npt.NDArray[Any]]) -> list[str]:
    """The inverse of `_encode_table`."""
    skeletons = [s.split(_HOLE) for s in _array_text(parts["skeletons"]).split("\n")]
    deltas = iter(parts["numbers"].tolist())
    last: dict[tuple[int, ...], int] = {}
    texts: list[str] = []
    for code in parts["skeleton"].tolist():
        _expect(0 <= code < len(skeletons), "table skeleton")
        literals = skeletons[code]
        numbers: list[int] = []
        for place in range(len(literals) - 1):
            context = (code, *numbers[:place])
            number = last.get(context, 0) + next(deltas)
            last[context] = number
            numbers.append(number)
        text = [literals[0]]
        for number, literal in zip(numbers, literals[1:], strict=True):
            text += (str(number), literal)
        texts.append("".join(text))
    return texts


def _kind_of(present: Iterable[Any]) -> str:
    types = {type(v) for v in present}
    if types == {bool}:
        return "bool"
    if types == {int}:
        values = list(present)
        return "int" if min(values) >= -(2**62) and max(values) < 2**62 else "json"
    if types == {float}:
        return "float"
    return "json"


def _whole_micros(floats: npt.NDArray[np.float64]) -> npt.NDArray[np.int64] | None:
    """The values as integer microseconds when that is exact for every one, else None."""
    if floats.size and not (np.isfinite(floats).all() and np.abs(floats).max() < _US_LIMIT):
        return None
    if np.signbit(floats[floats == 0]).any():  # -0.0 would come back as 0.0
        return None
    micros = np.rint(floats * _MICRO).astype(np.int64)
    return micros if np.array_equal(micros / _MICRO, floats) else None


def _delta(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    return np.diff(values, prepend=np.int64(0))


def _narrow(values: npt.NDArray[np.int64]) -> npt.NDArray[Any]:
    """The same integers in the smallest signed type that holds them all."""
    if values.size == 0:
        return values.astype(np.int8)
    low, high = int(values.min()), int(values.max())
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return values.astype(dtype)
    return values


def _text_array(text: str) -> npt.NDArray[np.uint8]:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _array_text(array: npt.NDArray[Any]) -> str:
    _expect(array.dtype == np.uint8 and array.ndim == 1, "text")
    return array.tobytes().decode("utf-8")


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise ColumnarError(f"malformed columnar data: {what}")
