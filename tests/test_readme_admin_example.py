"""The README's example of a signed admin request, run as written against a node process.

The code block is read from README.md at test time, so the documentation cannot drift from
what a node accepts: only its two settings (the node's address and the secret file) are
pointed at the node this test starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
import urllib.error
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from cluster.config import CLUSTER_FILE, local_cluster_config, write_cluster_config

pytestmark = pytest.mark.anyio

README = Path(__file__).resolve().parents[1] / "README.md"
DEADLINE = 60.0  # guards against hangs only
SECRET = "0123456789abcdef" * 4
CODE_BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def readme_admin_example() -> str:
    """The README's Python block that signs an admin request (the one naming the header)."""
    blocks = [
        textwrap.dedent(match[2])
        for match in CODE_BLOCK.finditer(README.read_text(encoding="utf-8"))
        if "X-Raftbench-Auth" in match[2]
    ]
    assert len(blocks) == 1, "README.md: expected one python block signing an admin request"
    return blocks[0]


def pointed_at(code: str, node: str, secret_file: Path) -> str:
    """The example with its NODE and SECRET_FILE settings replaced, each exactly once."""
    for name, value in (("NODE", node), ("SECRET_FILE", str(secret_file))):
        code, count = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", code, flags=re.MULTILINE)
        assert count == 1, f"README example: no single `{name} = ...` line"
    return code


def run_example(code: str) -> dict[str, Any]:
    """Run the example as a script would; returns its variables."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(code, f"{README}:admin example", "exec"), namespace)
    return namespace


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[str]:
    """One push node process whose secret comes from a file padded with whitespace."""
    secret_file = tmp_path / "secret.key"
    secret_file.write_text(f"\n  {SECRET}  \n\n", encoding="utf-8")
    config = dataclasses.replace(
        local_cluster_config(1, secret=SECRET), secret_file=secret_file.resolve()
    )
    write_cluster_config(config, tmp_path / CLUSTER_FILE)
    command = [sys.executable, "-m", "raftbench", "node", "--config", str(tmp_path / CLUSTER_FILE)]
    command += ["--id", "n1", "--protocol", "push", "--fsync", "never"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = await anyio.open_process(command, stderr=subprocess.PIPE, env=env)
    try:
        with anyio.fail_after(DEADLINE):
            line = await _read_line(process)
        assert line.startswith("ready n1 "), line
        yield config.members[0].client.url
    finally:
        if process.returncode is None:
            process.kill()
        await process.aclose()


async def test_the_readme_example_signs_an_admin_request_the_node_accepts(
    node: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("no_proxy", "*")  # urllib must reach the local node directly
    code = pointed_at(readme_admin_example(), node, tmp_path / "secret.key")
    with anyio.fail_after(DEADLINE):
        namespace = await anyio.to_thread.run_sync(run_example, code)
    assert namespace["answer"].status == 200
    status, _, body = capsys.readouterr().out.strip().partition(" ")
    assert status == "200" and json.loads(body) == {"fsync_delay_seconds": 0.01}


async def test_the_readme_example_with_a_wrong_secret_is_refused(
    node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("no_proxy", "*")
    wrong = tmp_path / "wrong.key"
    wrong.write_text("f" + SECRET[1:] + "\n", encoding="utf-8")
    code = pointed_at(readme_admin_example(), node, wrong)
    with pytest.raises(urllib.error.HTTPError) as refused, anyio.fail_after(DEADLINE):
        await anyio.to_thread.run_sync(run_example, code)
    assert refused.value.code == 403
    assert json.loads(refused.value.read())["error"] == "forbidden"
    refused.value.close()


async def _read_line(process: anyio.abc.Process) -> str:
    assert process.stdout is not None
    data = b""
    while not data.endswith(b"\n"):
        data += await process.stdout.receive(1)
    return data.decode().strip()
