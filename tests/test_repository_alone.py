"""A clone of the repository runs its tests alone: no test, script or default reads outside it.

The Jepsen histories once came from a folder beside the repository, so a fresh clone failed
nine tests; these checks keep any such path from coming back.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import linearizability_data
import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve()  # names paths that leave on purpose, as examples for the scan

# Where code that reads files lives; tests/data holds data, not code.
SOURCE_DIRS = ("tests", "scripts", ".ci", "workloads", "raftbench", "cluster", "protocols")
SOURCE_SUFFIXES = {".py", ".sh", ".toml", ""}

# Text that names a place outside the repository: a parent-directory step inside a path
# string, the machine's shared folder, or the environment variable that used to point there.
LEAVING = re.compile(
    r"\.\.[/\\]"  # a path through a parent folder
    r"|[/\\]\s*[\"']\.\.[\"']"  # pathlib: base / ".."
    r"|[\"']/work/"  # this machine's layout
    r"|shared[/\\]data"
    r"|RAFTBENCH_SHARED_DATA"
)
# Path(__file__) climbed with .parent and .parents[N]: checked by where it lands.
FILE_ANCESTOR = re.compile(
    r"Path\(__file__\)(?:\.resolve\(\))?(?P<chain>(?:\.parent\b|\.parents\[\d+\])+)"
)
STEP = re.compile(r"\.parent\b|\.parents\[(\d+)\]")


def is_inside(path: Path, root: Path = ROOT) -> bool:
    """Whether `path`, made absolute and with links followed, is `root` or under it."""
    return path.resolve().is_relative_to(root)


def module_paths(module: object) -> Iterator[tuple[str, Path]]:
    """Every Path a module holds at its top level, alone or in a list or tuple."""
    for name, value in vars(module).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            if isinstance(item, Path):
                yield name, item


def references_leaving(source: Path, text: str, root: Path = ROOT) -> list[str]:
    """The lines of `text` (the file `source`) that point outside `root`, as `file:line: text`."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        leaves = LEAVING.search(line) is not None
        for match in FILE_ANCESTOR.finditer(line):
            steps = sum(int(n) + 1 if n else 1 for n in STEP.findall(match["chain"]))
            ancestors = source.resolve().parents
            leaves |= steps > len(ancestors) or not is_inside(ancestors[steps - 1], root)
        if leaves:
            found.append(f"{source.relative_to(root)}:{number}: {line.strip()}")
    return found


def source_files() -> Iterator[Path]:
    """The repository's code and scripts (not data, not caches, not the venv)."""
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            parts = path.relative_to(ROOT).parts
            if (
                path.is_file()
                and path.suffix in SOURCE_SUFFIXES
                and "__pycache__" not in parts
                and parts[:2] != ("tests", "data")
                and path != SELF
            ):
                yield path


def test_the_test_data_paths_are_inside_the_repository() -> None:
    paths = list(module_paths(linearizability_data))
    assert {name for name, _ in paths} >= {"DATA", "ETCD_LOGS", "KV_FILES"}
    outside = [f"{name}: {path}" for name, path in paths if not is_inside(path)]
    assert outside == []
    assert all(path.exists() for _, path in paths)


def test_no_source_refers_to_a_path_outside_the_repository() -> None:
    files = list(source_files())
    assert ROOT / "tests" / "linearizability_data.py" in files
    assert ROOT / "scripts" / "check" in files
    found = [line for path in files for line in references_leaving(path, path.read_text())]
    assert found == []


@pytest.mark.parametrize(
    "line",
    [
        'DATA = Path(__file__).parents[1].parent / "shared" / "data"',
        'DATA = Path(__file__).resolve().parent.parent.parent / "data"',
        "DATA = Path(__file__).parents[2]",
        'DATA = Path("../elsewhere/histories")',
        'DATA = Path(__file__).parent / ".." / ".." / "elsewhere"',
        'DATA = Path("/work/elsewhere/data/linearizability")',
        'DATA = os.environ.get("RAFTBENCH_SHARED_DATA", "data")',
        "ls ../other-repo/data/*.log",
    ],
)
def test_the_scan_catches_a_path_that_leaves(line: str) -> None:
    # Written as if in tests/: one .parent is the repository, a second one leaves it.
    assert references_leaving(ROOT / "tests" / "example.py", line) != []


@pytest.mark.parametrize(
    "line",
    [
        'DATA = Path(__file__).parent / "data" / "linearizability"',
        "ROOT = Path(__file__).resolve().parents[1]",
        "root = str(Path(__file__).resolve().parent.parent)",
        'cd "$(dirname "$0")/.."',
    ],
)
def test_the_scan_lets_paths_inside_through(line: str) -> None:
    assert references_leaving(ROOT / "tests" / "example.py", line) == []


def test_a_data_path_outside_is_caught() -> None:
    assert not is_inside(ROOT.parent / "shared" / "data")
    assert not is_inside(ROOT / ".." / "shared")
    assert is_inside(ROOT / "tests" / "data")
