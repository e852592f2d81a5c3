"""SSH hosts on this machine for the tests: network namespaces, each running Debian's sshd.

Each namespace (cluster.netns) gets its own OpenSSH server on its own address, with its own
config, host key and pid file in a folder the test owns; one client key pair logs in to all of
them as root. The hosts share this machine's filesystem and Python, so each gets its own work
folder. `namespace_hosts` stops every sshd it started (by pid) and deletes the namespaces; it
also checks that nothing else is left running in them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cluster import netns

SSHD = Path("/usr/sbin/sshd")
INSTALL = "apt-get install -y openssh-server"
HOST_PYTHON = str(Path(sys.base_prefix) / "bin" / "python3")


@dataclass
class NamespaceHosts:
    layout: netns.NetnsLayout
    folder: Path
    client_key: Path
    known_hosts: Path  # every host's real key
    host_keys: dict[str, str]  # host name -> "ssh-ed25519 AAAA..."
    sshd: dict[str, subprocess.Popen[bytes]]

    @property
    def names(self) -> list[str]:
        return [h.node_id for h in self.layout.hosts]

    def address(self, name: str) -> str:
        return self.layout.host(name).address

    def leftovers(self) -> dict[str, list[int]]:
        """Processes in each namespace other than its sshd (what a test must leave none of)."""
        out: dict[str, list[int]] = {}
        for host in self.layout.hosts:
            done = subprocess.run(
                ["ip", "netns", "pids", host.namespace], capture_output=True, text=True, check=False
            )
            pids = [int(p) for p in done.stdout.split()]
            ours = self.sshd[host.node_id].pid
            out[host.node_id] = [p for p in pids if p != ours and _parent(p) != ours]
        return {k: v for k, v in out.items() if v}

    def inventory(
        self,
        path: Path,
        *,
        python: dict[str, str] | None = None,
        known_hosts: Path | None = None,
        extra: str = "",
        work: Path | None = None,
    ) -> Path:
        """Write a hosts.toml for these hosts (every one a node; the first also a loadgen)."""
        lines = [
            f'known_hosts = "{known_hosts or self.known_hosts}"',
            "[defaults]",
            'user = "root"',
            f'key = "{self.client_key}"',
            extra,
        ]
        for i, name in enumerate(self.names):
            roles = '["node", "loadgen"]' if i == 0 else '["node"]'
            lines += [
                "[[host]]",
                f'name = "{name}"',
                f'address = "{self.address(name)}"',
                f'region = "r{i % 2}"',
                f"roles = {roles}",
                f'python = "{(python or {}).get(name, HOST_PYTHON)}"',
                f'work_dir = "{(work or self.folder / "work") / name}"',
            ]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


def check_prerequisites() -> None:
    """Fail (not skip) with what to install."""
    netns.check_prerequisites()
    if not SSHD.exists() or shutil.which("ssh-keygen") is None:
        raise AssertionError(f"these tests need Debian's OpenSSH server: {INSTALL}")


@contextlib.contextmanager
def namespace_hosts(folder: Path, count: int) -> Iterator[NamespaceHosts]:
    check_prerequisites()
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation dir
    client_key = folder / "client_key"
    _keygen(client_key)
    (folder / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    names = [f"h{i + 1}" for i in range(count)]
    layout = netns.plan_layout(names, netns.host_addresses())
    netns.build(layout)
    hosts = NamespaceHosts(layout, folder, client_key, folder / "known_hosts", {}, {})
    try:
        for host in layout.hosts:
            own = folder / host.node_id
            own.mkdir()
            _keygen(own / "host_key")
            public = Path(f"{own / 'host_key'}.pub").read_text().split()
            hosts.host_keys[host.node_id] = f"{public[0]} {public[1]}"
            config = own / "sshd_config"
            config.write_text(
                "\n".join(
                    [
                        f"ListenAddress {host.address}",
                        "Port 22",
                        f"HostKey {own / 'host_key'}",
                        f"PidFile {own / 'sshd.pid'}",
                        f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                        "PermitRootLogin prohibit-password",
                        "PasswordAuthentication no",
                        "KbdInteractiveAuthentication no",
                        "UsePAM no",
                        "StrictModes no",
                        "Subsystem sftp internal-sftp",
                        "MaxSessions 64",
                        "MaxStartups 64",
                        "LogLevel ERROR",
                    ]
                )
                + "\n"
            )
            with open(own / "sshd.log", "wb") as log:
                hosts.sshd[host.node_id] = subprocess.Popen(
                    [*layout.exec_prefix(host.node_id), str(SSHD), "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
        with hosts.known_hosts.open("w") as file:
            for name in names:
                file.write(f"{hosts.address(name)} {hosts.host_keys[name]}\n")
        for name in names:
            _wait_listening(hosts.address(name), hosts.sshd[name], folder / name / "sshd.log")
        yield hosts
    finally:
        for process in hosts.sshd.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        netns.destroy(layout)


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _wait_listening(address: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sshd on {address} exited: {log.read_text()}")
        with contextlib.suppress(OSError), socket.create_connection((address, 22), 0.5):
            return
        time.sleep(0.05)
    raise AssertionError(f"sshd on {address} is not listening after 20 s")


def _parent(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[1])
