"""Layers point one way: raftbench/ -> workloads/ -> cluster/ -> protocols/.

Imports are read with `ast` (every `import` and `from ... import`, including ones inside
functions), so a lazy import cannot slip past.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "protocols": ("cluster", "workloads", "raftbench"),
    "cluster": ("workloads", "raftbench"),
    "workloads": ("raftbench",),
}


def imported_packages(source: str) -> set[str]:
    """The top-level package of every absolute import in `source`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def violations(layer: str) -> list[str]:
    out: list[str] = []
    for path in sorted((ROOT / layer).rglob("*.py")):
        wrong = imported_packages(path.read_text()) & set(FORBIDDEN[layer])
        out.extend(f"{path.relative_to(ROOT)} imports {name}" for name in sorted(wrong))
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_layer_imports_a_layer_above_it(layer: str) -> None:
    assert (ROOT / layer).is_dir()
    assert violations(layer) == []


def test_the_import_reader_sees_every_form_of_import() -> None:
    source = (
        "import workloads.results\n"
        "from raftbench.cli import main\n"
        "def f():\n    from cluster.sim import simulator\n"
        "from . import sibling\n"
    )
    assert imported_packages(source) == {"workloads", "raftbench", "cluster"}
