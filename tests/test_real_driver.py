"""`run_real`: a short scenario on real node processes, with the leader killed and restarted,
recorded exactly like a simulated run and checked for linearizability."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from test_calibrate import point

from workloads.calibrate import save_calibration
from workloads.checker import LINEARIZABLE, check_operations
from workloads.lost_writes import acked_writes_lost
from workloads.real_driver import run_real
from workloads.results import SAMPLE_INTERVAL, read_run, write_run
from workloads.scenario import Scenario, parse_scenario
from workloads.sim_driver import run_sim
from workloads.summary import summarize

WARMUP, DURATION, COOLDOWN = 1.0, 3.0, 1.0
CRASH_AT, CRASH_FOR = 1.0, 1.0
KEYS = 8


def scenario(batch: int) -> Scenario:
    return parse_scenario(
        {
            "name": "driver-test",
            "cluster": {"nodes": 3, "election_timeout": 0.5, "heartbeat_interval": 0.05},
            "workload": {
                "mix": {
                    "read": 0.3,
                    "write": 0.4,
                    "cas": 0.2,
                    "rmw": 0.1,
                    "consistency": {"linearizable": 0.8, "local": 0.2},
                },
                "key_count": KEYS,
                "value_size": 16,
                "clients": 4,
            },
            "run": {"warmup": WARMUP, "duration": DURATION, "cooldown": COOLDOWN},
            "load": {"processes": 2, "batch": batch},
            "faults": [
                {"at": CRASH_AT, "action": "crash", "node": "leader", "duration": CRASH_FOR}
            ],
        }
    )


@pytest.mark.parametrize(("protocol", "batch"), [("push", 1), ("pull", 4)])
def test_a_real_run_is_recorded_like_a_simulated_one(
    tmp_path: Path, protocol: str, batch: int
) -> None:
    calibration = tmp_path / "calibration.json"
    save_calibration(calibration, [point(2, 4, batch, 1234.0), point(2, 4, 99, 1.0)])
    plan = scenario(batch)
    record = run_real(
        plan, protocol, None, 3, 0, protocol, "test", work_dir=tmp_path / "run",
        calibration=calibration,
    )  # fmt: skip
    meta = record.metadata

    # The same metadata keys as the simulator's records, with real values filled in.
    sim_keys = set(run_sim(plan, protocol, None, 3, 0, protocol, "test").metadata) - {"sim"}
    assert sim_keys <= set(meta)
    assert meta["engine"] == "real" and meta["window"] == [WARMUP, WARMUP + DURATION]
    driver = meta["driver"]
    assert (driver["processes"], driver["workers"], driver["batch"]) == (2, 4, batch)
    assert driver["cpu_seconds"] > 0 and 0 < driver["cpu_share"] <= 1
    assert driver["ceiling_ops_s"] == 1234.0 and driver["ceiling_from"]["exact"]

    # The history: linearizable, operations on both sides of the crash, each lane's operations
    # one after the other.
    verdict = check_operations(record.history())
    assert verdict.verdict == LINEARIZABLE, verdict.detail
    (crash,) = [f for f in record.faults if f.kind == "crash"]
    (restart,) = [f for f in record.faults if f.kind == "restart"]
    writes = [op for op in record.ops if op.f == "write" and op.outcome == "ok"]
    assert any(op.complete is not None and op.complete < crash.t for op in writes)
    assert any(op.invoke > restart.t for op in writes)
    assert any(op.consistency == "local" for op in record.ops)

    # The fault: fired no earlier than scheduled, aimed at the leader of that moment, and
    # undone on the same node at its scheduled end.
    assert crash.t >= WARMUP + CRASH_AT
    assert restart.t >= WARMUP + CRASH_AT + CRASH_FOR and restart.nodes == crash.nodes
    (victim,) = crash.nodes
    before = [r for r in record.timeseries if r["t"] < crash.t and r["up"]]
    last_leader = max(
        (r for r in before if r["role"] == "leader"), key=lambda r: (r["term"], r["t"])
    )
    assert last_leader["node"] == victim
    changes = meta["real"]["leader_changes"]
    assert any(c["t"] > crash.t and victim not in c["event"] for c in changes)

    # Time series: every node, one sample per 100 ms slot at most, down while killed.
    for node in ("n1", "n2", "n3"):
        slots = [
            math.floor(r["t"] / SAMPLE_INTERVAL) for r in record.timeseries if r["node"] == node
        ]
        assert slots and slots == sorted(set(slots))
    # A fault's time is when it was issued; the kill has taken effect `took` seconds later
    # (it waits until the process is gone). Samples started after that must see it down.
    took = float(re.search(r"took ([0-9.]+) s", crash.detail).group(1))  # type: ignore[union-attr]
    gone = crash.t + took
    down = [r for r in record.timeseries if r["node"] == victim and gone < r["t"] < restart.t]
    assert down and not any(r["up"] for r in down)
    assert all("cpu" in r and "sent" in r for r in record.timeseries)

    # Costs: CPU of every node, bytes on the leader's links, leadership time in the window.
    assert all(record.nodes[n]["cpu_seconds"] > 0 for n in record.nodes)
    assert sum(link["bytes"] for link in record.links if link["src"] == victim) > 0
    assert all(link["messages"] >= 0 for link in record.links)
    assert record.nodes[victim]["leader_time"] > 0
    assert sum(n["leader_time"] for n in record.nodes.values()) <= DURATION + 0.2

    # Final state: every key read back, and no acknowledged write lost.
    assert len(meta["final_state"]) == KEYS
    loss = acked_writes_lost(record.ops, verdict.verdict, meta["final_state"])
    assert loss.lost == 0, loss.detail

    # The folder written from it reads back the same and summarises.
    folder = write_run(record, tmp_path / "results", "run")
    again = read_run(folder)
    assert again.ops == record.ops and again.faults == record.faults
    assert summarize(again).verdict == LINEARIZABLE
    assert (tmp_path / "run" / "cluster").is_dir()  # a work_dir given is kept


def processes_under(folder: Path) -> list[int]:
    """Pids of live processes whose command line names something inside `folder`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(folder).encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_an_interrupted_run_leaves_no_process_behind(tmp_path: Path) -> None:
    started: list[int] = []

    def interrupt(text: str) -> None:
        if "warm-up" in text:
            started.extend(processes_under(tmp_path))
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_real(scenario(1), "push", None, 1, 0, "push", "test", work_dir=tmp_path,
                 progress=interrupt)  # fmt: skip
    assert len(started) == 3 + 2  # the nodes and the load generators were running
    assert processes_under(tmp_path) == []
