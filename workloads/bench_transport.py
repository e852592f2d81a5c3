"""Micro-benchmark of the peer transport: envelopes/s and MB/s one node pushes to another.

Run: ``.venv/bin/python -m workloads.bench_transport [--messages 200000] [--kind heartbeat]``.
The receiver runs in its own process (as a real node would), both on loopback with the
default transport settings (HMAC per frame, batching, no shaping). The sender keeps its queue
below the in-flight limit, so the number measures the link, not the drop policy. It prints one
line per run and records nothing under results/.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection

import anyio

from cluster.transport import PeerAddress, PeerTransport, TransportSettings
from protocols import codec
from protocols.messages import AppendEntries, Envelope, Heartbeat
from protocols.types import Command, Entry, Op

SECRET = b"bench-transport-secret-0123456789"
HOST = "127.0.0.1"
IDLE_LIMIT = 30.0  # seconds without a new envelope before the receiver gives up


def make_envelope(kind: str, n: int) -> Envelope:
    if kind == "heartbeat":
        return Envelope("s", "r", Heartbeat(term=3, commit=n))
    entry = Entry(3, n + 1, Command(Op.PUT, f"key{n % 1000}", "v" * 100, None, "client", n))
    return Envelope("s", "r", AppendEntries(3, n, 3, (entry,), n))


async def _receiver(pipe: Connection, messages: int) -> None:
    async with PeerTransport("r", SECRET, PeerAddress(HOST, 0), {}) as node:
        pipe.send(node.listen_address.port)
        sender_port = await anyio.to_thread.run_sync(pipe.recv)
        node.set_peers({"s": PeerAddress(HOST, sender_port)})
        received = len(await node.receive_batch())
        started = finished = time.perf_counter()  # from the first arrival: no dial measured
        while received < messages:
            with anyio.move_on_after(IDLE_LIMIT) as idle:
                received += len(await node.receive_batch())
                finished = time.perf_counter()
            if idle.cancelled_caught:  # something was lost or refused: say so, do not hang
                break
        counters = node.counters()["s"]
        pipe.send((received, finished - started, counters.as_dict()))


def _receiver_process(pipe: Connection, messages: int) -> None:
    anyio.run(_receiver, pipe, messages)


async def _sender(pipe: Connection, kind: str, messages: int) -> str:
    settings = TransportSettings()
    high_water = settings.max_queue_messages // 2
    envelopes = [make_envelope(kind, n) for n in range(messages)]
    receiver_port = await anyio.to_thread.run_sync(pipe.recv)
    async with PeerTransport(
        "s",
        SECRET,
        PeerAddress(HOST, 0),
        {"r": PeerAddress(HOST, receiver_port)},
        rng=random.Random(1),
    ) as node:
        pipe.send(node.listen_address.port)
        await node.wait_connected("r")
        started = time.perf_counter()
        for item in envelopes:
            while node.queue_depth("r")[0] >= high_water:
                await anyio.sleep(0)  # let the writer drain; never overflow the queue
            node.send(item)
        send_done = time.perf_counter() - started
        received, elapsed, theirs = await anyio.to_thread.run_sync(pipe.recv)
        counters = node.counters()["r"]
    size = len(codec.encode(envelopes[0]))
    line = (
        f"{kind:9s} {size:4d} B/envelope  {received / elapsed:9,.0f} envelopes/s  "
        f"{theirs['bytes_received'] / elapsed / 1e6:6.2f} MB/s envelopes  "
        f"{theirs['wire_bytes_received'] / elapsed / 1e6:6.2f} MB/s wire  "
        f"{counters.messages_sent / max(1, counters.data_frames_sent):6.1f} envelopes/frame  "
        f"dropped {counters.dropped_overflow}  (sender busy {send_done:.2f} s)"
    )
    if received < messages:
        refused = {name: count for name, count in theirs.items() if name.startswith("rejected")}
        line += f"  INCOMPLETE: {received} of {messages} arrived; receiver refused {refused}"
    return line


def bench(kind: str, messages: int) -> str:
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    receiver = context.Process(target=_receiver_process, args=(theirs, messages))
    receiver.start()
    try:
        return anyio.run(_sender, ours, kind, messages)
    finally:
        receiver.join(timeout=30)
        if receiver.is_alive():
            receiver.kill()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument(
        "--kind",
        choices=("heartbeat", "append", "both"),
        default="both",
        help="heartbeat: ~10-byte envelopes; append: one 100-byte entry per envelope",
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    kinds = ("heartbeat", "append") if args.kind == "both" else (args.kind,)
    for kind in kinds:
        for _ in range(args.repeat):
            print(bench(kind, args.messages), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
