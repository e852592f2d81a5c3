"""SSH to the inventory's hosts (asyncssh): one connection per host, reused by every step.

Why a background event loop: the steps that use the hosts live in different places (deploy,
`cluster up`, each trial's own `anyio.run`, the nemesis in a worker thread), and an asyncssh
connection belongs to the event loop it was made in. So the pool runs its own loop in a thread
(an anyio blocking portal) for as long as the command runs; callers use the blocking methods, or
`arun` from async code in any loop.

Host keys are checked against the inventory's known_hosts file. A host with no entry there is
refused unless `accept_new_host_keys` is given, and then its key is appended; a host whose key
differs from its entry is always refused.

`check` connects to every host at once and runs its Python: an unreachable host, a refused
key, a wrong host key or a host without a usable Python (3.11 or later) is reported, all of
them in one `HostError`, before anything is started anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import asyncssh

from cluster.inventory import Host, Inventory
from protocols.errors import RaftbenchError

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 120.0
MIN_PYTHON = (3, 11)
CLOCK_SAMPLES = 7


class HostError(RaftbenchError):
    """A host cannot be reached, trusted or used; the message names the host and why."""


@dataclass(frozen=True, slots=True)
class Completed:
    """What a remote command did."""

    exit_status: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class ClockSample:
    """A host's clock against this machine's, NTP-style over the SSH channel (seconds).

    offset = remote time - the midpoint of the round trip; residual = half the round trip
    (the offset is right within that much)."""

    offset: float
    residual: float
    rtt: float

    def to_json(self) -> dict[str, float]:
        return {
            "offset_ms": round(self.offset * 1000, 3),
            "residual_ms": round(self.residual * 1000, 3),
            "ssh_rtt_ms": round(self.rtt * 1000, 3),
        }


def known_hosts_name(host: Host) -> str:
    """How `host` is written in a known_hosts file."""
    return host.address if host.port == 22 else f"[{host.address}]:{host.port}"


class HostPool:
    """Connections to every host of an inventory (see the module docstring)."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        accept_new_host_keys: bool = False,
        connect_timeout: float = CONNECT_TIMEOUT,
    ) -> None:
        self.inventory = inventory
        self.accept_new = accept_new_host_keys
        self.connect_timeout = connect_timeout
        self.pythons: dict[str, str] = {}  # host name -> its Python's version, once checked
        self._closed = False
        self._pumps: list[asyncio.Future[None]] = []
        self._stack = contextlib.ExitStack()
        self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
        self._connections: dict[str, asyncssh.SSHClientConnection] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def __enter__(self) -> HostPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._portal.call(self._close_all)
        self._stack.close()

    # ---- blocking API ------------------------------------------------------------------------

    def check(self, hosts: tuple[Host, ...] | None = None) -> dict[str, str]:
        """Connect to every host and check its Python; HostError lists every failure."""
        wanted = hosts if hosts is not None else self.inventory.hosts
        problems = self._portal.call(self._check_all, wanted)
        if problems:
            raise HostError("; ".join(problems))
        return {h.name: self.pythons[h.name] for h in wanted}

    def run(
        self, host: Host, command: str, *, stdin: str | None = None, timeout: float = 0.0
    ) -> Completed:
        """Run `command` (a shell line) on `host`."""
        return self._portal.call(self._run, host, command, stdin, timeout or COMMAND_TIMEOUT)

    def run_json(self, host: Host, command: str, *, timeout: float = 0.0) -> dict[str, Any]:
        """Run a command that answers one JSON object on its last stdout line."""
        done = self.run(host, command, timeout=timeout)
        lines = done.stdout.strip().splitlines()
        try:
            answer = json.loads(lines[-1])
        except (IndexError, ValueError):
            raise HostError(
                f"{host.name}: `{command}` gave no answer (exit {done.exit_status}): "
                + (done.stderr.strip()[-500:] or done.stdout.strip()[-500:])
            ) from None
        if not isinstance(answer, dict):
            raise HostError(f"{host.name}: `{command}` answered {answer!r}")
        return answer

    def put(self, host: Host, files: list[tuple[Path, str]], mode: int | None = None) -> None:
        """Copy local files to remote paths over SFTP (their folders are made)."""
        self._portal.call(self._put, host, files, mode)

    def get(self, host: Host, remote: str, local: Path) -> bool:
        """Fetch a remote file over SFTP; False when it does not exist."""
        return self._portal.call(self._get, host, remote, local)

    def clock(self, host: Host, python: str, samples: int = CLOCK_SAMPLES) -> ClockSample:
        """The host's clock offset, from the round trip with the smallest residual."""
        return self._portal.call(self._clock, host, python, samples)

    def start_stream(self, host: Host, command: str, on_line: Callable[[str], None]) -> Stream:
        """Run a long-lived command, calling `on_line` for each stdout line (in the pool's
        thread); the `Stream` writes to its stdin and stops it."""
        process = self._portal.call(self._start_stream, host, command, on_line)
        return Stream(self, process)

    async def arun(self, host: Host, command: str, *, timeout: float = 0.0) -> Completed:
        """`run` for async callers in any event loop."""
        return await anyio.to_thread.run_sync(lambda: self.run(host, command, timeout=timeout))

    # ---- in the pool's loop ------------------------------------------------------------------

    async def _connection(self, host: Host) -> asyncssh.SSHClientConnection:
        lock = self._locks.setdefault(host.name, asyncio.Lock())
        async with lock:
            connection = self._connections.get(host.name)
            if connection is not None and not connection.is_closed():
                return connection
            connection = await self._connect(host)
            self._connections[host.name] = connection
            return connection

    async def _connect(self, host: Host) -> asyncssh.SSHClientConnection:
        known = self.inventory.known_hosts
        entries = known.read_text(encoding="utf-8") if known.is_file() else ""
        trusted = asyncssh.import_known_hosts(entries).match(host.address, host.address, host.port)
        new = not trusted[0] and not trusted[1]
        if new and not self.accept_new:
            raise HostError(
                f"{host.label}: no host key in {known}; add it (ssh-keyscan -p {host.port} "
                f"{host.address} >> {known}) or pass --accept-new-host-keys"
            )
        options: dict[str, Any] = {
            "host": host.address,
            "port": host.port,
            "username": host.user,
            "known_hosts": None if new else asyncssh.import_known_hosts(entries),
            "connect_timeout": self.connect_timeout,
        }
        if host.key is not None:
            options |= {"client_keys": [str(host.key)], "agent_path": None}
        try:
            connection = await asyncssh.connect(**options)
        except asyncssh.HostKeyNotVerifiable as error:
            raise HostError(
                f"{host.label}: its host key does not match {known} ({error.reason}); "
                "if the host was reinstalled, remove its old line from that file"
            ) from None
        except asyncssh.PermissionDenied:
            how = f"key {host.key}" if host.key else "the SSH agent's keys"
            raise HostError(f"{host.label}: login refused with {how}") from None
        except (OSError, TimeoutError, asyncssh.Error) as error:
            raise HostError(
                f"{host.label}: unreachable: {error.__class__.__name__}: {error}"
            ) from None
        if new:
            key = connection.get_server_host_key()
            assert key is not None
            line = f"{known_hosts_name(host)} {key.export_public_key('openssh').decode().strip()}"
            known.parent.mkdir(parents=True, exist_ok=True)
            with known.open("a", encoding="utf-8") as file:
                file.write(line + "\n")
        return connection

    async def _check_all(self, hosts: tuple[Host, ...]) -> list[str]:
        problems: list[str] = []

        async def one(host: Host) -> None:
            try:
                self.pythons[host.name] = await self._check_python(host)
            except HostError as error:
                problems.append(str(error))

        if self.accept_new:  # one at a time: each appends to the known_hosts file
            for host in hosts:
                await one(host)
        else:
            async with anyio.create_task_group() as group:
                for host in hosts:
                    group.start_soon(one, host)
        return sorted(problems)

    async def _check_python(self, host: Host) -> str:
        probe = "import sys; print('%d.%d.%d' % sys.version_info[:3])"
        done = await self._run(host, f"{shlex.quote(host.python)} -c {shlex.quote(probe)}", None)
        version = done.stdout.strip()
        if done.exit_status != 0 or not version:
            raise HostError(
                f"{host.label}: no usable Python: `{host.python}` exited {done.exit_status}"
                + (f" ({done.stderr.strip()[-200:]})" if done.stderr.strip() else "")
                + " (set `python` for this host in the inventory)"
            )
        parts = tuple(int(p) for p in version.split(".")[:2])
        if parts < MIN_PYTHON:
            raise HostError(
                f"{host.label}: `{host.python}` is Python {version}; raftbench needs "
                f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} or later"
            )
        return version

    async def _run(
        self, host: Host, command: str, stdin: str | None, timeout: float = COMMAND_TIMEOUT
    ) -> Completed:
        connection = await self._connection(host)
        try:
            done = await connection.run(command, input=stdin, check=False, timeout=timeout)
        except asyncssh.TimeoutError:
            raise HostError(f"{host.name}: `{command}` did not finish in {timeout} s") from None
        except (OSError, asyncssh.Error) as error:
            raise HostError(f"{host.name}: `{command}` failed: {error}") from None
        status = done.exit_status if done.exit_status is not None else -1
        return Completed(status, _text(done.stdout), _text(done.stderr))

    async def _put(self, host: Host, files: list[tuple[Path, str]], mode: int | None) -> None:
        connection = await self._connection(host)
        try:
            async with connection.start_sftp_client() as sftp:
                for local, remote in files:
                    folder = remote.rsplit("/", 1)[0]
                    if folder:
                        await sftp.makedirs(folder, exist_ok=True)
                    await sftp.put(str(local), remote)
                    if mode is not None:
                        await sftp.chmod(remote, mode)
        except (OSError, asyncssh.Error) as error:
            raise HostError(f"{host.name}: SFTP upload failed: {error}") from None

    async def _get(self, host: Host, remote: str, local: Path) -> bool:
        connection = await self._connection(host)
        try:
            async with connection.start_sftp_client() as sftp:
                if not await sftp.exists(remote):
                    return False
                local.parent.mkdir(parents=True, exist_ok=True)
                await sftp.get(remote, str(local))
        except (OSError, asyncssh.Error) as error:
            raise HostError(f"{host.name}: SFTP download of {remote} failed: {error}") from None
        return True

    async def _clock(self, host: Host, python: str, samples: int) -> ClockSample:
        connection = await self._connection(host)
        snippet = "import sys, time\nfor line in sys.stdin:\n    print(time.time(), flush=True)\n"
        command = f"{shlex.quote(python)} -u -c {shlex.quote(snippet)}"
        found: list[ClockSample] = []
        process = await connection.create_process(command)
        try:
            for _ in range(samples + 1):  # the first round trip also starts Python: dropped
                t0 = time.time()
                process.stdin.write("\n")
                line = await asyncio.wait_for(process.stdout.readline(), COMMAND_TIMEOUT)
                t1 = time.time()
                remote = float(_text(line))
                found.append(ClockSample(remote - (t0 + t1) / 2, (t1 - t0) / 2, t1 - t0))
        except (OSError, ValueError, TimeoutError, asyncssh.Error) as error:
            raise HostError(f"{host.name}: clock probe failed: {error}") from None
        finally:
            process.stdin.write_eof()
            process.close()
        return min(found[1:] or found, key=lambda sample: sample.residual)

    async def _start_stream(
        self, host: Host, command: str, on_line: Callable[[str], None]
    ) -> asyncssh.SSHClientProcess[Any]:
        connection = await self._connection(host)
        process = await connection.create_process(command)

        async def pump() -> None:
            with contextlib.suppress(Exception):
                async for line in process.stdout:
                    on_line(_text(line))

        self._pumps.append(asyncio.ensure_future(pump()))
        return process

    async def _stop_stream(self, process: asyncssh.SSHClientProcess[Any]) -> None:
        with contextlib.suppress(Exception):
            process.stdin.write_eof()
        process.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(process.wait_closed(), 5.0)

    async def _close_all(self) -> None:
        for connection in self._connections.values():
            connection.close()
        for connection in self._connections.values():
            with contextlib.suppress(Exception):
                await connection.wait_closed()
        self._connections.clear()


class Stream:
    """A long-lived remote command started by `HostPool.start_stream`."""

    def __init__(self, pool: HostPool, process: asyncssh.SSHClientProcess[Any]) -> None:
        self._pool = pool
        self._process = process

    def write(self, line: str) -> None:
        """Send one line to its stdin; HostError when the channel is gone."""

        async def send() -> None:
            self._process.stdin.write(line + "\n")

        try:
            self._pool._portal.call(send)
        except (OSError, asyncssh.Error, RuntimeError) as error:
            raise HostError(f"stream closed: {error}") from None

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._pool._portal.call(self._pool._stop_stream, self._process)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


__all__ = ["ClockSample", "Completed", "HostError", "HostPool", "Stream", "known_hosts_name"]
