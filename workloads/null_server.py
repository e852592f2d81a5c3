"""A server that answers the node's client API and does nothing: the load generator's yardstick.

`raftbench calibrate` drives it with the very code path that drives a real cluster, so the
operations per second it reaches are the load generator's own ceiling on this machine. It is
the same stack as a node's API (starlette served by uvicorn, TCP_NODELAY) so that the request
parsing cost is comparable, with everything behind the API left out: writes succeed, reads find
nothing, every answer is immediate (or after `delay` seconds, for tests that need a slow server).

``python -m workloads.null_server [--port P] [--delay S]`` prints ``ready <port>`` once it
listens. Several processes may serve one port (SO_REUSEPORT: the kernel spreads connections),
see `NullServer`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

READY = "ready"


def null_app(delay: float = 0.0) -> Starlette:
    """The API's routes with canned answers (`delay` seconds before each answer)."""
    index = 0

    async def pause() -> None:
        if delay > 0:
            await anyio.sleep(delay)

    def write_answer() -> dict[str, Any]:
        nonlocal index
        index += 1
        return {"ok": True, "prev": None, "duplicate": False, "index": index}

    async def kv(request: Request) -> Response:
        await request.body()
        await pause()
        if request.method == "GET":
            return JSONResponse({"value": None, "found": False, "index": index})
        return JSONResponse(write_answer())

    async def cas(request: Request) -> Response:
        await request.body()
        await pause()
        return JSONResponse(write_answer())

    async def batch(request: Request) -> Response:
        try:
            body = await request.json()
            ops = body["ops"]
            if not isinstance(ops, list):
                raise TypeError("ops")
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "bad-request", "detail": "ops: expected a list"}, 400)
        await pause()
        results = []
        for op in ops:
            if isinstance(op, dict) and op.get("op") == "get":
                results.append({"status": 200, "value": None, "found": False, "index": index})
            else:
                results.append({"status": 200, **write_answer()})
        return JSONResponse({"results": results})

    async def status(request: Request) -> Response:
        return JSONResponse(
            {"id": "null", "role": "leader", "term": 1, "leader": "null", "is_leader": True}
        )

    return Starlette(
        routes=[
            Route("/kv/{key:path}", kv, methods=["GET", "PUT", "DELETE"]),
            Route("/cas/{key:path}", cas, methods=["POST"]),
            Route("/batch", batch, methods=["POST"]),
            Route("/status", status, methods=["GET"]),
        ]
    )


def listening_socket(host: str, port: int) -> socket.socket:
    """TCP_NODELAY (no delayed-ACK stalls on keep-alive answers) and SO_REUSEPORT."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def serve(host: str, port: int, delay: float) -> int:
    sock = listening_socket(host, port)
    print(f"{READY} {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(null_app(delay), lifespan="off", log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


class NullServer:
    """`processes` null-server processes on one loopback port; a context manager.

    Leaving it stops exactly the processes it started (SIGTERM, then SIGKILL).
    """

    def __init__(self, *, delay: float = 0.0, processes: int = 1, host: str = "127.0.0.1") -> None:
        if processes < 1:
            raise ValueError("processes: must be >= 1")
        self.delay = delay
        self.host = host
        self.count = processes
        self.port = 0
        self.processes: list[subprocess.Popen[str]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def __enter__(self) -> NullServer:
        try:
            for _ in range(self.count):
                self._spawn()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _spawn(self, timeout: float = 30.0) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        command = [
            sys.executable, "-m", "workloads.null_server",
            "--host", self.host, "--port", str(self.port), "--delay", repr(self.delay),
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        self.processes.append(process)
        assert process.stdout is not None
        if not select.select([process.stdout], [], [], timeout)[0]:
            raise RuntimeError(f"null server not ready within {timeout:g} s")
        words = process.stdout.readline().split()
        if len(words) != 2 or words[0] != READY:
            raise RuntimeError(f"null server did not start (said {words!r})")
        self.port = int(words[1])

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for process in self.processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5.0)
            if process.stdout is not None:
                with contextlib.suppress(OSError):
                    process.stdout.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    return serve(args.host, args.port, args.delay)


if __name__ == "__main__":
    sys.exit(main())
