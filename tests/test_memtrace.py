"""The memory diagnostics a node runs when its environment asks: the memtrace samples
(`cluster.memtrace`) and the periodic heap trim (`cluster.heap_trim`), alone and in a real node
process (which also refuses malformed settings with a clear error)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from cluster.config import CLUSTER_FILE, local_cluster_config, write_cluster_config
from cluster.heap_trim import TRIM_ENV, HeapTrimError, heap_trimmer, trim_period
from cluster.memtrace import (
    FRAMES_ENV,
    MEMTRACE_ENV,
    PERIOD_ENV,
    MemorySampler,
    MemtraceError,
    MemtraceSettings,
    mallinfo,
    run_memtrace,
    settings_from_env,
)

DEADLINE = 60.0  # guards against hangs only
MIB = 1024 * 1024


# ---- settings -------------------------------------------------------------------------------


def test_memtrace_is_off_unless_its_directory_is_given() -> None:
    assert settings_from_env("n1", {}) is None
    assert settings_from_env("n1", {MEMTRACE_ENV: ""}) is None


def test_memtrace_settings_come_from_the_environment(tmp_path: Path) -> None:
    settings = settings_from_env(
        "n2", {MEMTRACE_ENV: str(tmp_path), PERIOD_ENV: "2.5", FRAMES_ENV: "3"}
    )
    assert settings == MemtraceSettings(tmp_path / "n2.jsonl", 2.5, 3)
    default = settings_from_env("n1", {MEMTRACE_ENV: str(tmp_path)})
    assert default is not None and default.frames == 0  # tracemalloc off unless asked


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (PERIOD_ENV, "soon"),
        (PERIOD_ENV, "0"),
        (PERIOD_ENV, "-1"),
        (PERIOD_ENV, "inf"),
        (FRAMES_ENV, "-1"),
        (FRAMES_ENV, "1.5"),
        (FRAMES_ENV, "many"),
    ],
)
def test_malformed_memtrace_settings_name_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(MemtraceError, match=name):
        settings_from_env("n1", {MEMTRACE_ENV: str(tmp_path), name: value})


def test_the_trim_period_comes_from_the_environment() -> None:
    assert trim_period({}) is None
    assert trim_period({TRIM_ENV: "0"}) is None
    assert trim_period({TRIM_ENV: "5"}) == 5.0
    for bad in ("often", "-2", "nan", "inf"):
        with pytest.raises(HeapTrimError, match=TRIM_ENV):
            trim_period({TRIM_ENV: bad})


# ---- what a sample holds --------------------------------------------------------------------


_MAPPED = """
import json
from cluster.memtrace import mapped_memory, status_memory
print(json.dumps([mapped_memory(), status_memory()["VmRSS"]]))
"""


def test_mapped_memory_adds_up_to_the_resident_size() -> None:
    # In a fresh, single-threaded interpreter: the kernel keeps VmRSS in per-thread counters
    # that it folds in lazily (up to 64 pages a thread), so in a process whose other threads
    # just allocated or freed (a test before this one) VmRSS lags smaps by megabytes.
    done = subprocess.run(
        [sys.executable, "-c", _MAPPED], capture_output=True, text=True, check=True
    )
    mapped, rss = json.loads(done.stdout)
    assert mapped["heap"] > 0 and mapped["file"] > 0
    assert abs(sum(mapped.values()) - rss) < 2 * MIB


def test_mallinfo_sees_blocks_in_use_grow_and_shrink() -> None:
    before = mallinfo()
    assert before is not None  # glibc
    ballast = [bytearray(4096) for _ in range(1024)]  # 4 MiB in blocks too big for pymalloc
    during = mallinfo()
    assert during is not None
    assert during["uordblks"] - before["uordblks"] >= 4 * MIB
    del ballast
    after = mallinfo()
    assert after is not None
    assert during["uordblks"] - after["uordblks"] >= 4 * MIB


@pytest.fixture
def tracing() -> Iterator[None]:
    yield
    tracemalloc.stop()


def test_a_sample_names_the_line_whose_memory_grew(tmp_path: Path, tracing: None) -> None:
    sampler = MemorySampler(MemtraceSettings(tmp_path / "n1.jsonl", 1.0, 1))
    first = sampler.sample()
    assert "top_since_first" not in first and first["traced"] >= 0
    kept = [bytearray(1000) for _ in range(2000)]  # about 2 MB, allocated on the next line
    line = sys._getframe().f_lineno - 1
    second = sampler.sample()
    where = f"{__file__}:{line}"
    grown = {item["where"]: item for item in second["top_since_previous"]}
    assert where in grown, second["top_since_previous"]
    assert grown[where]["size_diff"] >= 2000 * 1000
    assert grown[where]["count_diff"] >= 2000
    assert second["traced"] - first["traced"] >= 2000 * 1000
    assert len(kept) == 2000


def test_without_frames_a_sample_leaves_tracemalloc_off(tmp_path: Path) -> None:
    sample = MemorySampler(MemtraceSettings(tmp_path / "n1.jsonl", 1.0, 0)).sample()
    assert not tracemalloc.is_tracing()
    assert "traced" not in sample
    assert sample["rss"] > 0 and sample["py_blocks"] > 0 and sample["gc_objects"] > 0
    assert len(sample["gc_collections"]) == 3 and set(sample["mapped"]) == {"heap", "anon", "file"}


_BALLAST = textwrap.dedent(
    """
    import json
    from cluster.memtrace import pymalloc_stats
    before = pymalloc_stats()
    ballast = [float(i) for i in range(200_000)]  # 24-byte objects: about 6 MiB of blocks
    during = pymalloc_stats()
    del ballast
    after = pymalloc_stats()
    print(json.dumps({"before": before, "during": during, "after": after}))
    """
)


def test_pymalloc_stats_count_the_arenas_a_ballast_takes() -> None:
    # In a fresh interpreter: in this one, earlier tests leave partly used arenas that the
    # ballast would fill first and then keep alive.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run(
        [sys.executable, "-c", _BALLAST], capture_output=True, text=True, env=env, check=True
    )
    stats = json.loads(done.stdout)
    before, during, after = stats["before"], stats["during"], stats["after"]
    assert during["arenas"] - before["arenas"] >= 4
    assert during["allocated"] - before["allocated"] >= 200_000 * 24
    assert during["arenas_highwater"] >= during["arenas"]
    assert during["arenas"] - after["arenas"] >= 4  # emptied arenas go back to the kernel


@pytest.mark.anyio
async def test_memtrace_appends_one_line_per_period(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "n1.jsonl"
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as group:
            group.start_soon(run_memtrace, MemtraceSettings(path, 0.01, 0))
            while not path.exists() or len(path.read_text().splitlines()) < 3:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    times = [row["t"] for row in rows]
    assert times == sorted(times) and all(row["rss"] > 0 for row in rows)


# ---- the heap trim --------------------------------------------------------------------------

# A fresh interpreter fills its heap with 64 KiB blocks (glibc serves them from the main heap,
# below its 128 KiB mmap threshold), keeps a small block after each (so the freed ones are holes
# under the top, which glibc never hands back by itself), frees the big ones, and reports the
# heap's resident bytes before and after one trim.
_HOLES = textwrap.dedent(
    """
    import json
    from cluster.heap_trim import heap_trimmer
    from cluster.memtrace import mapped_memory
    big, small = [], []
    for _ in range(256):
        block = bytearray(64 * 1024)
        block[::4096] = b"x" * 16  # touch every page: calloc may hand out untouched zero pages
        big.append(block)
        small.append(bytearray(600))
    del big
    before = mapped_memory()["heap"]
    released = heap_trimmer()()
    print(json.dumps({"before": before, "after": mapped_memory()["heap"], "released": released}))
    """
)


def test_a_trim_returns_free_pages_inside_the_heap() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    for name in list(env):
        if name.startswith("MALLOC_") or name.startswith("GLIBC_TUNABLES"):
            del env[name]  # glibc's defaults, whatever the caller runs with
    done = subprocess.run(
        [sys.executable, "-c", _HOLES], capture_output=True, text=True, env=env, check=True
    )
    figures = json.loads(done.stdout)
    assert figures["released"] is True
    freed = 256 * 64 * 1024
    assert figures["before"] - figures["after"] >= freed // 2, figures


def test_the_trimmer_is_glibc_malloc_trim() -> None:
    trim = heap_trimmer()
    assert trim is not None  # this machine runs glibc
    assert isinstance(trim(), bool)


# ---- in a node process ----------------------------------------------------------------------


def _node(directory: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    config = local_cluster_config(1)
    write_cluster_config(config, directory / CLUSTER_FILE)
    command = [sys.executable, "-m", "raftbench", "node", "--config"]
    command += [str(directory / CLUSTER_FILE), "--id", "n1", "--protocol", "push"]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
    )


def _stop(node: subprocess.Popen[bytes]) -> None:
    if node.poll() is None:
        node.kill()
        node.wait()


def test_a_node_asked_to_samples_its_memory_and_trims_its_heap(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    env = {MEMTRACE_ENV: str(trace), PERIOD_ENV: "0.05", TRIM_ENV: "0.05"}
    with _node(tmp_path, env) as node:
        try:
            assert node.stdout is not None
            assert node.stdout.readline().startswith(b"ready n1 ")
            path = trace / "n1.jsonl"
            anyio.run(_lines_appear, path, 3)
            node.send_signal(signal.SIGTERM)
            assert node.wait(timeout=DEADLINE) == 0
        finally:
            _stop(node)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert all(row["rss"] > 0 and row["malloc"]["arena"] > 0 for row in rows)
    assert all(row["pymalloc"]["arenas"] > 0 for row in rows)


async def _lines_appear(path: Path, count: int) -> None:
    with anyio.fail_after(DEADLINE):
        while not path.exists() or len(path.read_text().splitlines()) < count:
            await anyio.sleep(0.05)


@pytest.mark.parametrize(
    ("env", "named"),
    [({MEMTRACE_ENV: "x", PERIOD_ENV: "never"}, PERIOD_ENV), ({TRIM_ENV: "-1"}, TRIM_ENV)],
)
def test_a_node_refuses_malformed_memory_settings(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    with _node(tmp_path, env) as node:
        try:
            _, stderr = node.communicate(timeout=DEADLINE)
        finally:
            _stop(node)
    assert node.returncode == 2
    assert named.encode() in stderr and b"raftbench node: error:" in stderr
