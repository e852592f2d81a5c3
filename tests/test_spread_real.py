"""`pull:spread` on real node processes: 5 nodes on loopback form a capped tree and commit.

Waits are bounded polls of the real processes' /status; nothing is asserted about time.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import httpx
from real_cluster import DEADLINE, put_at_leader

from cluster.config import CLUSTER_FILE, load_cluster_config
from cluster.launcher import ClusterSpec, LocalCluster
from cluster.target import RaftbenchTarget

WRITES = 40
CAP = 2


def tree_problems(statuses: dict[str, dict[str, Any] | None], commit: int) -> list[str]:
    """What keeps the cluster from being a settled, capped tree that applied `commit`."""
    problems = []
    up = {n: s for n, s in statuses.items() if s is not None}
    if len(up) < len(statuses):
        problems.append(f"no answer from {sorted(set(statuses) - set(up))}")
    leaders = [n for n, s in up.items() if s["role"] == "leader"]
    if len(leaders) != 1:
        return [*problems, f"leaders: {leaders}"]
    (leader,) = leaders
    served = Counter(s["sync_source"] for s in up.values() if s["sync_source"] is not None)
    for source, count in served.items():
        if count > CAP:
            problems.append(f"{source} serves {count}")
    for node, status in up.items():
        if status["applied_index"] < commit:
            problems.append(f"{node} applied {status['applied_index']} < {commit}")
        if len(status["pullers"]) > CAP:
            problems.append(f"{node} holds {status['pullers']}")
        if node == leader:
            if status["sync_depth"] != 0:
                problems.append(f"leader depth {status['sync_depth']}")
            continue
        source = status["sync_source"]
        if source is None or source not in up:
            problems.append(f"{node} has no source")
            continue
        parent = up[source]
        if parent["sync_depth"] is None or status["sync_depth"] != parent["sync_depth"] + 1:
            problems.append(f"{node} depth {status['sync_depth']} under {source}")
    return problems


def test_five_real_nodes_form_a_capped_tree_and_commit(tmp_path: Path) -> None:
    spec = ClusterSpec(
        nodes=5,
        protocol="pull",
        sync_policy="spread",
        max_pullers=CAP,
        election_timeout=0.5,
        heartbeat_interval=0.05,
    )
    with LocalCluster.up(tmp_path / "c", spec) as cluster:
        config = load_cluster_config(cluster.directory / CLUSTER_FILE)
        assert (config.sync.policy, config.sync.max_pullers) == ("spread", CAP)
        leader = cluster.wait_for_leader(DEADLINE)
        with httpx.Client(trust_env=False, timeout=DEADLINE) as http:
            for seq in range(1, WRITES + 1):
                body = {"value": f"v{seq}", "client_id": "spread-test", "seq": seq}
                leader = put_at_leader(cluster, http, f"k{seq % 7}", body, leader)
            # The node that acknowledged the last write has committed at least that far.
            commit = int(http.get(cluster.url(leader) + "/status").json()["commit_index"])
        assert commit >= WRITES
        deadline = time.monotonic() + DEADLINE
        while True:  # bounded poll of real processes: the tree settles after the writes
            statuses = cluster.statuses(timeout=2.0)
            problems = tree_problems(statuses, commit)
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not problems, (problems, statuses)
        depths = sorted(s["sync_depth"] for s in statuses.values() if s is not None)
        assert depths == [0, 1, 1, 2, 2]  # four secondaries, two slots per source

        # The run's node samples carry the tree too (workloads.node_sampler reads this).
        target = RaftbenchTarget(cluster)

        async def sample() -> dict[str, dict[str, Any] | None]:
            async with httpx.AsyncClient(trust_env=False, timeout=5.0) as http:
                return {n: await target.status(http, n) for n in cluster.node_ids}

        # A secondary may re-choose its source at any time (a closer one, a pull timed out under
        # load); until its new source first answers it reports no depth. So poll, bounded, for a
        # sample in which the tree is whole again.
        deadline = time.monotonic() + DEADLINE
        while True:
            rows = anyio.run(sample)
            # A node may also miss the sample's 5 s timeout under load (None): poll on.
            if any(row is None for row in rows.values()) and time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            assert all(row is not None and "sync_depth" in row for row in rows.values()), rows
            seen = sorted((row["sync_depth"] for row in rows.values() if row), key=str)
            assert set(seen) <= {0, 1, 2, None}, rows
            if seen == [0, 1, 1, 2, 2] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert seen == [0, 1, 1, 2, 2], rows
