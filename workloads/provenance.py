"""Commands a report prints so that a reader can run them again, as printed, from the
repository root.

A recorded command is what the user typed, relative to wherever they stood. Before it is
stored (`repo_command`) its path options are resolved against the current directory and
written relative to the repository root; before it is printed (`rerunnable`) absolute paths
inside the repository become relative, `--reports-dir` pointing into a temporary folder (a
throwaway report, e.g. scripts/reference's per-scenario ones) is left out, and the program is
spelled `.venv/bin/raftbench`, which the README's first command installs.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Iterable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROGRAM = ".venv/bin/raftbench"
PATH_OPTIONS = frozenset({"--results-dir", "--reports-dir", "--output", "--scenario"})
TEMP_ROOTS = tuple(
    dict.fromkeys(Path(p).resolve() for p in (tempfile.gettempdir(), "/tmp", "/var/tmp"))
)


def is_temporary(path: str) -> bool:
    """A path under a temporary folder, unless it is inside the repository (a checkout may
    itself live under /tmp, as CI's and a newcomer's clone can)."""
    resolved = Path(path).resolve()
    if resolved.is_relative_to(REPO_ROOT.resolve()):
        return False
    return any(resolved.is_relative_to(root) for root in TEMP_ROOTS)


def from_root(path: str, root: Path = REPO_ROOT) -> str:
    """`path` relative to the repository root when it lies inside it, else unchanged."""
    candidate = Path(path)
    if candidate.is_absolute() and candidate.resolve().is_relative_to(root.resolve()):
        return candidate.resolve().relative_to(root.resolve()).as_posix() or "."
    return path


def repo_command(words: list[str], cwd: Path | None = None, root: Path = REPO_ROOT) -> str:
    """argv as a command to record: path options are resolved against `cwd` and written
    relative to `root` (`--scenario` only when it names an existing file, not a catalogue
    name)."""
    here = cwd or Path.cwd()
    out = list(words)
    for i, word in enumerate(out[:-1]):
        if word in PATH_OPTIONS and not out[i + 1].startswith("-"):
            value = Path(out[i + 1])
            full = value if value.is_absolute() else here / value
            if word != "--scenario" or full.exists():
                out[i + 1] = from_root(os.path.normpath(full), root)
    return shlex.join(out)


def rerunnable(command: str, root: Path = REPO_ROOT) -> str:
    """A stored command as it should be printed (see the module docstring)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    if not words:
        return command
    out: list[str] = [PROGRAM if Path(words[0]).name == "raftbench" else words[0]]
    rest = iter(words[1:])
    for word in rest:
        if word == "--reports-dir":
            value = next(rest, "")
            if value and not is_temporary(value):
                out += [word, from_root(value, root)]
        elif word.startswith("--reports-dir="):
            value = word.split("=", 1)[1]
            if not is_temporary(value):
                out.append(f"--reports-dir={from_root(value, root)}")
        else:
            out.append(from_root(word, root) if word.startswith("/") else word)
    return shlex.join(out)


def regenerate(run_commands: Iterable[str], report_command: str) -> list[str]:
    """The commands that remake the runs, then (unless it is one of them, as with `compare`)
    the command that remakes the report; each once, in order."""
    lines = list(dict.fromkeys(rerunnable(c) for c in run_commands if c and c != "?"))
    last = rerunnable(report_command)
    if last not in lines:
        lines.append(last)
    return lines
