"""`raftbench hosts deploy`: this checkout and its dependencies, installed on every host.

Why wheels: the hosts then need no package registry and no compiler. `pip wheel` builds this
checkout's wheel and collects its dependencies' wheels into a local cache; each host gets the
ones it lacks over SFTP and installs them, offline, into a venv in its work folder.

Idempotent: the bundle's digest (every wheel's contents, not its zip bytes, so a rebuild of
unchanged sources gives the same digest) is written on the host after a good install; a host
that already has it is skipped.

On a host::

    WORK/wheels/*.whl    WORK/venv/    WORK/deployed.json  {"digest": ..., "wheels": [...]}
"""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cluster.inventory import Host
from cluster.ssh import HostError, HostPool

PROJECT = "raftbench"
INSTALL_TIMEOUT = 900.0
BUILD_TIMEOUT = 1800.0


class DeployError(HostError):
    """The bundle could not be built or installed; the message says where and why."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """The wheels one deploy installs."""

    wheels: tuple[Path, ...]
    project_wheel: Path
    digest: str


def venv_python(host: Host) -> str:
    return f"{host.work_dir}/venv/bin/python"


def build_bundle(checkout: Path, cache: Path) -> Bundle:
    """`pip wheel` of `checkout` and its dependencies into `cache` (kept between deploys)."""
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="raftbench-wheels-") as scratch:
        command = [sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", scratch]
        command += ["--find-links", str(cache), str(checkout)]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise DeployError(f"`pip wheel` did not finish in {BUILD_TIMEOUT} s") from None
        if done.returncode != 0:
            raise DeployError(f"`pip wheel {checkout}` failed: {done.stderr.strip()[-2000:]}")
        built = sorted(Path(scratch).glob("*.whl"))
        wheels = []
        for wheel in built:
            target = cache / wheel.name
            if not target.exists() or _content_digest(target) != _content_digest(wheel):
                wheel.replace(target)
            wheels.append(target)
    project = [w for w in wheels if w.name.split("-")[0] == PROJECT]
    if len(project) != 1:
        raise DeployError(f"`pip wheel` gave no single {PROJECT} wheel: {[w.name for w in wheels]}")
    digest = hashlib.sha256()
    for wheel in wheels:
        digest.update(f"{wheel.name}\0{_content_digest(wheel)}\n".encode())
    return Bundle(tuple(wheels), project[0], digest.hexdigest())


def deploy(pool: HostPool, hosts: tuple[Host, ...], bundle: Bundle) -> dict[str, str]:
    """Install `bundle` on every host (in parallel): host name -> "installed" | "unchanged"."""
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as workers:
        futures = {h.name: workers.submit(deploy_host, pool, h, bundle) for h in hosts}
        out: dict[str, str] = {}
        problems: list[str] = []
        for name, future in futures.items():
            try:
                out[name] = future.result()
            except HostError as error:
                problems.append(str(error))
    if problems:
        raise DeployError("; ".join(problems))
    return out


def deployed_digest(pool: HostPool, host: Host) -> str | None:
    """The digest of the bundle installed on `host` (None: nothing installed)."""
    work = shlex.quote(host.work_dir)
    done = pool.run(host, f"cat {work}/deployed.json && test -x {work}/venv/bin/raftbench")
    if done.exit_status != 0:
        return None
    try:
        digest = json.loads(done.stdout).get("digest")
    except (ValueError, AttributeError):
        return None
    return digest if isinstance(digest, str) else None


def deploy_host(pool: HostPool, host: Host, bundle: Bundle) -> str:
    if deployed_digest(pool, host) == bundle.digest:
        return "unchanged"
    work = host.work_dir
    listing = pool.run(host, f"ls -l {shlex.quote(work)}/wheels 2>/dev/null")
    present = {}
    for line in listing.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 9 and parts[-1].endswith(".whl"):
            present[parts[-1]] = int(parts[4])
    uploads = [
        (wheel, f"{work}/wheels/{wheel.name}")
        for wheel in bundle.wheels
        if wheel == bundle.project_wheel or present.get(wheel.name) != wheel.stat().st_size
    ]
    pool.put(host, uploads)
    q = shlex.quote
    wheels = f"{work}/wheels"
    python = venv_python(host)
    steps = [
        f"test -x {q(python)} || {q(host.python)} -m venv {q(work + '/venv')}",
        f"{q(python)} -m pip install -q --disable-pip-version-check --no-index "
        f"--find-links {q(wheels)} {q(wheels + '/' + bundle.project_wheel.name)}",
        f"{q(python)} -m pip install -q --disable-pip-version-check --no-index --no-deps "
        f"--force-reinstall {q(wheels + '/' + bundle.project_wheel.name)}",
    ]
    for step in steps:
        done = pool.run(host, step, timeout=INSTALL_TIMEOUT)
        if done.exit_status != 0:
            raise DeployError(
                f"{host.name}: `{step}` exited {done.exit_status}: {done.stderr.strip()[-1500:]}"
            )
    record = json.dumps({"digest": bundle.digest, "wheels": [w.name for w in bundle.wheels]})
    done = pool.run(host, f"cat > {q(work + '/deployed.json')}", stdin=record + "\n")
    if done.exit_status != 0:
        raise DeployError(f"{host.name}: cannot write deployed.json: {done.stderr.strip()}")
    return "installed"


def _content_digest(wheel: Path) -> str:
    """sha256 of a wheel's member names and contents (zip timestamps left out)."""
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive:
            for name in sorted(archive.namelist()):
                digest.update(name.encode() + b"\0")
                digest.update(hashlib.sha256(archive.read(name)).digest())
    except (OSError, zipfile.BadZipFile) as error:
        raise DeployError(f"{wheel}: not a readable wheel: {error}") from None
    return digest.hexdigest()


__all__ = ["Bundle", "DeployError", "build_bundle", "deploy", "deploy_host", "venv_python"]
