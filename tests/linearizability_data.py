"""Where the shared Jepsen histories live and what verdict each one should get.

The data sits beside the repository (../shared/data); RAFTBENCH_SHARED_DATA points elsewhere.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

SHARED_DATA = Path(
    os.environ.get("RAFTBENCH_SHARED_DATA", Path(__file__).parents[1].parent / "shared" / "data")
)
DATA = SHARED_DATA / "linearizability"
ETCD_LOGS = sorted((DATA / "etcd").glob("etcd_*.log"))
KV_FILES = sorted((DATA / "kv").glob("*.txt"))


def expected_etcd() -> dict[str, str]:
    """File name -> verdict, from EXPECTED.tsv."""
    with (DATA / "etcd" / "EXPECTED.tsv").open(newline="") as table:
        return {row["file"]: row["expected"] for row in csv.DictReader(table, delimiter="\t")}


def expected_kv(path: Path) -> str:
    """kv files say their verdict in their name: cNN-ok.txt or cNN-bad.txt."""
    return {"ok": "linearizable", "bad": "not-linearizable"}[path.stem.rsplit("-", 1)[1]]
