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


# ---- stages of a write -----------------------------------------------------------------------

# A sample is charged to the innermost frame of our own code or of the HTTP server: the event
# loop, tasks, threads and the libraries our code calls (msgpack, hmac, json) say nothing about
# which stage they serve. A stack with none of those frames is the event loop's own work.
STAGES = (
    "HTTP (parse, route, answer)",
    "engine loop (queues, waiters, persist hand-off)",
    "engine step (protocol)",
    "apply (state machine)",
    "codec encode",
    "codec decode",
    "transport send (batch, MAC, write)",
    "transport receive (read, MAC, unpack)",
    "log store (records, write)",
    "fsync",
    "metrics",
    "event loop, tasks, threads",
)
_SENDING = ("_write_loop", "PeerTransport.send", "_queue_ping", "_WriteBatch")
_RECEIVING = (
    "_read_authentic",
    "_deliver",
    "_FrameReader",
    "on_frame",
    "_pong_received",
    "receive_batch",
    "_forward_peers",
)


_HTTP_LIBRARIES = ("starlette", "uvicorn", "h11", "httptools")
_TRANSPORT_FILES = ("transport.py", "framing.py", "shaper.py", "link_stats.py")


def _file_of(where: str) -> tuple[str, str]:
    """(top-level package, path inside it) of a frame's file. py-spy names files relative to
    their sys.path entry (``protocols/push.py``, ``uvicorn/protocols/http/h11_impl.py``)."""
    path = where.rsplit(":", 1)[0].rstrip(")")
    if "site-packages/" in path:
        path = path.rsplit("site-packages/", 1)[1]
    package, _, rest = path.partition("/")
    return package, rest


def stage_of(frames: list[str]) -> str:
    """The stage a sampled stack (root first, as py-spy writes it) belongs to."""
    names = [frame.partition(" (")[0] for frame in frames]
    for frame in reversed(frames):
        name, _, where = frame.partition(" (")
        if name == "_datasync":
            return "fsync"
        package, rest = _file_of(where)
        if package in _HTTP_LIBRARIES or (package, rest) == ("cluster", "api.py"):
            return "HTTP (parse, route, answer)"
        if package == "protocols":
            if rest == "codec.py":
                decoding = any("decode" in n for n in names) and not any(
                    n == "encode" or "encoder" in n for n in names
                )
                return "codec decode" if decoding else "codec encode"
            return "apply (state machine)" if rest == "kv.py" else "engine step (protocol)"
        if package != "cluster":
            continue  # the event loop, tasks, threads, other libraries: look further out
        if rest.startswith("storage/"):
            return "log store (records, write)"
        if rest in _TRANSPORT_FILES:
            if any(any(mark in n for mark in _SENDING) for n in names):
                return "transport send (batch, MAC, write)"
            if any(any(mark in n for mark in _RECEIVING) for n in names):
                return "transport receive (read, MAC, unpack)"
            continue  # a connection task's own frame: which direction shows further up
        if rest == "engine_loop.py":
            return "engine loop (queues, waiters, persist hand-off)"
        if rest == "metrics.py":
            return "metrics"
    return "event loop, tasks, threads"


def stage_shares(collapsed: Path) -> dict[str, float]:
    """Each stage's share of the samples (every stage in `STAGES`, zero when unseen)."""
    counts: Counter[str] = Counter()
    for line in collapsed.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if stack and count_text.isdigit():
            counts[stage_of(stack.split(";"))] += int(count_text)
    total = sum(counts.values())
    return {stage: (counts[stage] / total if total else 0.0) for stage in STAGES}


def format_stages(shares: dict[str, float], cpu_per_write_ms: float | None = None) -> str:
    """Shares of the samples per stage; with the leader's CPU per write, milliseconds too."""
    lines = [f"{'share':>6} {'ms/write':>9}  stage"]
    for stage, share in shares.items():
        ms = "" if cpu_per_write_ms is None else f"{share * cpu_per_write_ms:.3f}"
        lines.append(f"{share:>6.1%} {ms:>9}  {stage}")
    return "\n".join(lines)


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
