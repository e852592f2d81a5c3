"""A Jepsen-style key-value history with many clients, made by running a real register store.

The shared data stops at 10 clients; failing histories with many clients per key are where a
search that explores every interleaving explodes, so the benchmark makes its own.
"""

from __future__ import annotations

import random

from workloads.checker import Operation

PUT_SHARE = 0.05
GET_SHARE = 0.45


def kv_history(clients: int, keys: int, ops_per_client: int, seed: int) -> list[Operation]:
    """Each client runs `ops_per_client` operations back to back (get, append of a unique
    "x CLIENT N y", rarely put) on random keys; each takes effect at a random moment inside its
    interval, in that order, against one store. The result is linearizable by construction."""
    rng = random.Random(seed)
    planned: list[tuple[float, float, float, int, str, str, str]] = []
    for client in range(clients):
        now = rng.random()
        for number in range(ops_per_client):
            duration = rng.expovariate(1.0)
            effect = now + rng.random() * duration
            roll = rng.random()
            f = "put" if roll < PUT_SHARE else "get" if roll < PUT_SHARE + GET_SHARE else "append"
            key = str(rng.randrange(keys))
            planned.append((effect, now, now + duration, client, f, key, f"x {client} {number} y"))
            now += duration + rng.expovariate(4.0)
    store: dict[str, str] = {}
    ops = []
    for _, invoke, complete, client, f, key, argument in sorted(planned):
        current = store.get(key, "")
        if f == "append":
            store[key] = current + argument
        elif f == "put":
            store[key] = argument
        seen = current if f == "get" else argument
        ops.append(Operation(client, f, key, seen, invoke, complete, "ok"))
    return ops
