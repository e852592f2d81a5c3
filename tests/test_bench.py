"""`raftbench bench`: the interleaved node-cost benchmark (one tiny real run with etcd), its
summary arithmetic on made-up rounds, the py-spy profile summary, and bad flags."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from workloads.bench import (
    BenchSettings,
    Block,
    Phase,
    Spread,
    format_table,
    pair_ratio,
    summarise,
)
from workloads.profiling import stage_shares
from workloads.profiling import summarise as profile_summary


def phase(width: int, p50: float, cpu: float, rate: float = 100.0) -> Phase:
    return Phase(
        width, int(rate * 5), 0, rate, p50, 2 * p50, cpu * rate * 5 / 1000, cpu, cpu / 2, 0.1
    )


def block(label: str, round_: int, idle: float, p50: float, cpu: float) -> Block:
    return Block(label, round_, "n1", idle, [phase(1, p50, cpu), phase(64, 10 * p50, cpu / 4)])


def test_ratios_are_taken_within_each_round_then_the_median() -> None:
    blocks = [
        block("push", 0, 0.04, 6.0, 6.0),
        block("etcd", 0, 0.02, 2.0, 2.0),
        block("push", 1, 0.06, 3.0, 4.0),  # a slow round for both: the ratio is what counts
        block("etcd", 1, 0.03, 1.0, 1.0),
        block("push", 2, 0.05, 5.0, 5.0),
        block("etcd", 2, 0.025, 2.5, 2.0),
    ]
    summary = summarise(blocks)
    ratio = summary["push"]["w1"]["ratio"]["p50_ms"]
    assert (ratio.median, ratio.low, ratio.high) == (3.0, 2.0, 3.0)
    assert summary["push"]["w1"]["p50_ms"] == Spread(5.0, 3.0, 6.0)
    assert summary["push"]["idle_ratio"].median == pytest.approx(2.0)
    assert summary["push"]["w64"]["ratio"]["cpu_per_write_ms"].high == pytest.approx(4.0)
    assert summary["etcd"]["w1"]["ratio"]["p50_ms"] == Spread(1.0, 1.0, 1.0)


def test_a_missing_round_of_the_reference_gives_no_ratio_for_that_round() -> None:
    blocks = [block("push", 0, 0.04, 6.0, 6.0), block("etcd", 1, 0.02, 2.0, 2.0)]
    ratio = summarise(blocks)["push"]["w1"]["ratio"]["p50_ms"]
    assert math.isnan(ratio.median)
    assert pair_ratio(blocks, "push", "etcd").median != pair_ratio(blocks, "push", "etcd").median


def test_the_table_names_every_label_phase_and_the_idle_ratio_of_pull_to_push() -> None:
    blocks = [block("push", 0, 0.04, 6.0, 6.0), block("pull", 0, 0.06, 7.0, 7.0)]
    blocks.append(block("etcd", 0, 0.02, 2.0, 2.0))
    text = format_table(blocks, BenchSettings(rounds=1))
    assert "idle pull/push: 1.50x" in text
    assert "push: W=1 p50 3.00x" in text
    for label in ("push", "pull", "etcd"):
        assert sum(line.startswith(label) for line in text.splitlines()) == 3


def test_profile_summary_counts_self_and_inclusive_samples(tmp_path: Path) -> None:
    collapsed = tmp_path / "p.txt"
    collapsed.write_text(
        "main (a/node.py:1);loop (a/engine_loop.py:9);persist (a/store.py:3) 6\n"
        "main (a/node.py:1);loop (a/engine_loop.py:12) 3\n"
        "main (a/node.py:1);send (a/transport.py:4) 1\n"
    )
    shares = {s.frame: s for s in profile_summary(collapsed)}
    assert shares["persist (store.py)"].self_share == pytest.approx(0.6)
    assert shares["loop (engine_loop.py)"].self_share == pytest.approx(0.3)
    assert "main (node.py)" not in shares  # never on top of a stack


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftbench", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--rounds", "0"], "must be >= 1"),
        (["--protocols", "push,raft"], "unknown protocol"),
        (["--widths", "1", "x"], "not a number"),
    ],
)
def test_nonsense_flags_are_usage_errors(args: list[str], message: str) -> None:
    done = bench(*args)
    assert done.returncode == 2 and message in done.stderr


def test_one_tiny_round_against_etcd_measures_every_phase(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = bench(
        "--protocols", "push,pull,etcd", "--rounds", "1", "--duration", "1", "--warmup", "0.3",
        "--idle", "0.5", "--widths", "1", "4", "--json", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert {b["label"] for b in data["blocks"]} == {"push", "pull", "etcd"}
    for recorded in data["blocks"]:
        assert [p["width"] for p in recorded["phases"]] == [1, 4]
        for measured in recorded["phases"]:
            assert measured["writes"] > 0 and measured["server_cpu_s"] > 0
            assert measured["p50_ms"] <= measured["p99_ms"]
            # Phases run one after another on one cluster: the second phase's workers must
            # not reuse the first's sessions (their writes were answered as stale duplicates).
            assert measured["failures"] == 0, (recorded["label"], measured)
        assert recorded["idle_cores"] >= 0
    assert "ratios to etcd" in done.stdout and "idle pull/push" in done.stdout


def test_profile_stages_charge_each_sample_to_the_innermost_frame_of_our_code(
    tmp_path: Path,
) -> None:
    loop = "Runner.run (asyncio/runners.py:1);TaskHandle._run_coro (anyio/_core/_tasks.py:3)"
    collapsed = tmp_path / "p.txt"
    collapsed.write_text(
        f"{loop};_write_loop (cluster/transport.py:9);seal (cluster/framing.py:2);"
        "digest (hmac.py:5) 4\n"
        f"{loop};EngineLoop.run (cluster/engine_loop.py:1);_persist (cluster/engine_loop.py:2);"
        "FileLogStore.persist (cluster/storage/file_store.py:3);_datasync "
        "(cluster/storage/file_store.py:4) 2\n"
        f"{loop};_read_authentic (cluster/transport.py:5);_deliver (cluster/transport.py:6);"
        "decode (protocols/codec.py:7);unpackb (msgpack/__init__.py:1) 3\n"
        f"{loop};_Api.kv (cluster/api.py:1);loads (json/__init__.py:2) 1\n"
        f"{loop} 10\n"
    )
    shares = stage_shares(collapsed)
    assert shares["transport send (batch, MAC, write)"] == pytest.approx(0.2)
    assert shares["fsync"] == pytest.approx(0.1)
    assert shares["codec decode"] == pytest.approx(0.15)
    assert shares["HTTP (parse, route, answer)"] == pytest.approx(0.05)
    assert shares["event loop, tasks, threads"] == pytest.approx(0.5)
    assert sum(shares.values()) == pytest.approx(1.0)
