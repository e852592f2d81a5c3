"""Where the Jepsen histories live and what verdict each one should get.

The histories are porcupine's test data (MIT), copied into tests/data/linearizability so that
a clone of the repository runs its tests alone (see the README there).
"""

from __future__ import annotations

import csv
from pathlib import Path

DATA = Path(__file__).parent / "data" / "linearizability"
ETCD_LOGS = sorted((DATA / "etcd").glob("etcd_*.log"))
KV_FILES = sorted((DATA / "kv").glob("*.txt"))


def expected_etcd() -> dict[str, str]:
    """File name -> verdict, from EXPECTED.tsv."""
    with (DATA / "etcd" / "EXPECTED.tsv").open(newline="") as table:
        return {row["file"]: row["expected"] for row in csv.DictReader(table, delimiter="\t")}


def expected_kv(path: Path) -> str:
    """kv files say their verdict in their name: cNN-ok.txt or cNN-bad.txt."""
    return {"ok": "linearizable", "bad": "not-linearizable"}[path.stem.rsplit("-", 1)[1]]
