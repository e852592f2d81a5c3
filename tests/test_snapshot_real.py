"""Real processes: a member of a compacted cluster that was down catches up from a snapshot.

Node processes on loopback (ports from the OS), started and stopped by pid through
LocalCluster. Waits are bounded polls of the processes' /status; nothing is asserted about
elapsed time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from real_cluster import DEADLINE, poll, put_at_leader

from cluster.launcher import ClusterSpec, LocalCluster

WRITES = 120
THRESHOLD = 20


def write(cluster: LocalCluster, http: httpx.Client, key: str, seq: int, leader: str) -> str:
    """One acknowledged write (see `put_at_leader`); returns the leader that took it."""
    body = {"value": f"value-{seq}", "client_id": "snapshot-test", "seq": seq}
    return put_at_leader(cluster, http, key, body, leader)


@pytest.mark.parametrize(("protocol", "policy"), [("push", None), ("pull", "nearest")])
def test_a_member_that_was_down_catches_up_from_a_snapshot(
    tmp_path: Path, protocol: str, policy: str | None
) -> None:
    spec = ClusterSpec(
        nodes=3,
        protocol=protocol,
        sync_policy=policy,
        election_timeout=0.5,
        heartbeat_interval=0.05,
        snapshot_entries=THRESHOLD,
    )
    with (
        LocalCluster.up(tmp_path / "c", spec) as cluster,
        httpx.Client(trust_env=False, timeout=10.0) as http,
    ):
        leader = cluster.wait_for_leader(DEADLINE)
        lagging = next(n for n in cluster.node_ids if n != leader)
        assert cluster.kill(lagging)
        for seq in range(1, WRITES + 1):
            leader = write(cluster, http, f"key-{seq}", seq, leader)

        def compacted_past_lagging() -> dict[str, Any] | None:
            statuses = cluster.statuses()
            live = [s for n, s in statuses.items() if n != lagging and s is not None]
            return live[0] if live and all(s["snapshot_index"] > THRESHOLD for s in live) else None

        status = poll("compaction on the live members", compacted_past_lagging)
        assert status["log_entries"] < WRITES  # the log was truncated behind the snapshot

        cluster.restart(lagging)
        target = max(s["commit_index"] for s in cluster.statuses().values() if s is not None)

        def caught_up() -> dict[str, Any] | None:
            mine = cluster.statuses()[lagging]
            if mine is None or mine["applied_index"] < target or mine["snapshot_index"] == 0:
                return None
            return mine

        mine = poll(f"{lagging} catching up", caught_up)
        assert mine["snapshot_index"] > THRESHOLD  # it got there through a snapshot
        events = http.get(cluster.url(lagging) + "/events").json()["events"]
        assert any(e["kind"] == "snapshot-installed" for e in events)
        # No acknowledged write is lost: the caught-up member holds every one.
        for seq in range(1, WRITES + 1):
            answer = http.get(cluster.url(lagging) + f"/kv/key-{seq}?consistency=local")
            assert answer.json().get("value") == f"value-{seq}", (seq, answer.text)
        # And it keeps replicating after the snapshot.
        write(cluster, http, "after", WRITES + 1, leader)
        poll(
            "the write after the snapshot",
            lambda: (
                http.get(cluster.url(lagging) + "/kv/after?consistency=local").json().get("value")
                == f"value-{WRITES + 1}"
            ),
        )
        cluster.down()
