"""Rows stored as compressed columns come back exactly: same keys, values and types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workloads.columnar import (
    ColumnarError,
    decode_rows,
    encode_rows,
    load_arrays,
    save_arrays,
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.from_regex(r"[a-z]{0,2}[0-9]{0,20}-?[0-9]{0,3}\.{0,4}", fullmatch=True)
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3), max_leaves=4)
rows_strategy = st.lists(
    st.dictionaries(st.sampled_from(["a", "b", "key", "value", "t"]), values, max_size=5),
    max_size=30,
)


def exact(rows: list[dict[str, Any]]) -> str:
    """A text that tells 1 from 1.0 from True and -0.0 from 0.0 (== does not)."""
    return json.dumps(rows, sort_keys=True)


@settings(max_examples=150, deadline=None)
@given(rows_strategy)
def test_any_rows_round_trip(rows: list[dict[str, Any]]) -> None:
    arrays = encode_rows("x", rows, keyed_by={"value": "key"})
    assert exact(decode_rows("x", arrays)) == exact(rows)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=10**9),
            st.integers(min_value=-(10**6), max_value=10**6),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_microsecond_times_are_stored_as_integers_and_come_back_to_the_bit(
    times: list[tuple[int, int, bool]],
) -> None:
    rows: list[dict[str, Any]] = [
        {"invoke": round(start / 1e6, 6), "complete": None if unknown else (start + lag) / 1e6}
        for start, lag, unknown in times
    ]
    arrays = encode_rows("ops", rows, relative_to={"complete": "invoke"})
    assert exact(decode_rows("ops", arrays)) == exact(rows)
    if rows:
        assert "ops.invoke.delta" in arrays
        assert "ops.invoke.bytes" not in arrays


def test_times_finer_than_a_microsecond_are_kept_as_floats() -> None:
    rows = [{"t": 0.0005763036172095282}, {"t": 1.6991649049999116}, {"t": -0.0}]
    arrays = encode_rows("ts", rows)
    assert "ts.t.bytes" in arrays
    assert exact(decode_rows("ts", arrays)) == exact(rows)


def test_read_values_are_coded_by_their_keys_last_writes() -> None:
    rows: list[dict[str, Any]] = [
        {"f": "write", "key": "k1", "value": "c1-1...."},
        {"f": "write", "key": "k2", "value": "c1-2...."},
        {"f": "read", "key": "k1", "value": "c1-1...."},
        {"f": "read", "key": "k2", "value": "c1-1...."},  # a value seen, not under k2
        {"f": "read", "key": "k3", "value": None},
        {"f": "cas", "key": "k1", "value": ["c1-1....", "c1-3...."]},
    ]
    arrays = encode_rows("ops", rows, keyed_by={"value": "key"})
    assert decode_rows("ops", arrays) == rows
    assert arrays["ops.value.recent"].tolist() == [-1, -1, 0, -2, -1, -1]
    assert arrays["ops.value.index"].tolist() == [0]


def test_a_given_column_is_not_stored_but_still_keys_another() -> None:
    rows: list[dict[str, Any]] = [
        {"key": "k1", "value": "c1-1"},
        {"key": "k1", "value": "c1-1"},
        {"key": "k2", "value": None},
    ]
    arrays = encode_rows("ops", rows, keyed_by={"value": "key"}, given=("key",))
    assert not any(name.startswith("ops.key.") for name in arrays)
    assert arrays["ops.value.recent"].tolist() == [-1, 0, -1]
    given = [{"key": row["key"]} for row in rows]
    assert decode_rows("ops", arrays, into=given) == rows
    with pytest.raises(ColumnarError, match="row count"):
        decode_rows("ops", arrays, into=given[:2])


def test_numbers_inside_strings_come_back_as_written() -> None:
    texts = ["k000001", "c17-12", "c17-13", "0", "007", "1" * 30, "x-9", "é9", "a\nb1"]
    rows = [{"s": text} for text in texts]
    assert decode_rows("x", encode_rows("x", rows)) == rows


def test_saved_arrays_load_back(tmp_path: Path) -> None:
    rows = [{"t": 0.25, "node": "n1", "up": True}, {"t": 0.5, "node": "n2"}]
    path = tmp_path / "run.npz.xz"
    save_arrays(path, encode_rows("ts", rows))
    assert decode_rows("ts", load_arrays(path)) == rows


def test_a_file_that_is_not_a_zip_is_named(tmp_path: Path) -> None:
    path = tmp_path / "run.npz.xz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ColumnarError, match=r"run\.npz\.xz"):
        load_arrays(path)
