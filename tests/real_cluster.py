"""Waiting on a local cluster of real node processes: bounded polls, and writes retried at
whoever leads (under load the leader can move between finding it and writing to it)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from cluster.launcher import LocalCluster

DEADLINE = 60.0  # guards against hangs only


def poll(what: str, check: Callable[[], Any], timeout: float = DEADLINE) -> Any:
    """Call `check` until it returns something truthy (an HTTP error counts as not yet),
    bounded by `timeout`; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def put_at_leader(
    cluster: LocalCluster, http: httpx.Client, key: str, body: Mapping[str, Any], leader: str
) -> str:
    """PUT `body` at `key` until some leader answers 200, asking whoever leads after each
    refusal; returns the node that took it. `body` carries a client id and seq, so a retried
    write applies once."""
    known = [leader]

    def attempt() -> bool:
        answer = http.put(cluster.url(known[0]) + f"/kv/{key}", json=dict(body))
        if answer.status_code == 200:
            return True
        known[0] = cluster.leader() or known[0]
        return False

    poll(f"write {key}", attempt)
    return known[0]
