"""Sampling profiles of node processes during a benchmark phase, with py-spy.

Why py-spy: it samples a running process from outside (no code in the node's hot path, nothing
to compile out) and sees native frames too, so the same command profiles the node as it runs in
every benchmark. It is an optional tool (`pip install -e '.[profile]'`); a run that asks for
profiles without it fails before it starts anything.

Only samples where a thread holds the GIL are kept (`--gil`): a node waiting in epoll or fsync
is not using the CPU, and without it those waits fill the profile.

Each profile is written in the collapsed-stack format (one ``frame;frame;... count`` line per
distinct stack), which flame-graph tools read, and summarised here as the share of samples per
function (self and inclusive).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

PY_SPY = "py-spy"
RATE = 1000  # samples per second


class ProfilerError(Exception):
    """py-spy is missing or failed; the message says which."""


def find_py_spy() -> str:
    """py-spy beside this Python (a venv's bin/, not always on PATH), else on PATH."""
    beside = Path(sys.executable).parent / PY_SPY
    path = str(beside) if beside.exists() else shutil.which(PY_SPY)
    if path is None:
        raise ProfilerError("py-spy not found: install it with pip install -e '.[profile]'")
    return path


class Recording:
    """One py-spy process sampling `pid` for `seconds` into `output` (collapsed stacks)."""

    def __init__(self, pid: int, seconds: float, output: Path) -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        self.output = output
        self._log = output.with_suffix(".log")
        with open(self._log, "w", encoding="utf-8") as log:
            self._process = subprocess.Popen(
                [
                    find_py_spy(),
                    "record",
                    "--pid",
                    str(pid),
                    "--duration",
                    str(max(1, round(seconds))),
                    "--rate",
                    str(RATE),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--gil",
                    "--output",
                    str(output),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait(self, timeout: float = 30.0) -> Path:
        try:
            code = self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
            raise ProfilerError(f"py-spy did not finish; see {self._log}") from None
        if code != 0 or not self.output.exists():
            raise ProfilerError(f"py-spy failed (exit {code}); see {self._log}")
        return self.output


@dataclass(frozen=True, slots=True)
class FrameShare:
    frame: str
    self_share: float  # of all samples, with this frame on top
    total_share: float  # of all samples, with this frame anywhere in the stack


def summarise(collapsed: Path, top: int = 20) -> list[FrameShare]:
    """The `top` functions by self share of the samples, with their inclusive shares."""
    own: Counter[str] = Counter()
    anywhere: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        samples += count
        own[_short(frames[-1])] += count
        for frame in {_short(f) for f in frames}:
            anywhere[frame] += count
    if not samples:
        return []
    return [
        FrameShare(frame, count / samples, anywhere[frame] / samples)
        for frame, count in own.most_common(top)
    ]


def _short(frame: str) -> str:
    """`function (path/to/module.py:line)` as `function (module.py)`: lines differ per
    sample, the function is what a reader looks for."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({Path(file).name})" if file else name


def format_shares(shares: list[FrameShare]) -> str:
    lines = [f"{'self':>6} {'total':>6}  function"]
    lines += [f"{s.self_share:>6.1%} {s.total_share:>6.1%}  {s.frame}" for s in shares]
    return "\n".join(lines)
