"""`python -m workloads.results_compact DIR...`: convert run folders to the compact form.

Each DIR is a run folder or a folder holding run folders: plain folders and compact ones of an
older format (2) are rewritten in the current one; a folder already in it is left as it is,
so running it twice changes nothing. The old files are removed only once the
compact form reads back the same data (`workloads.results.compact_run`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from workloads.report import find_run_folders
from workloads.results import compact_run


def main(argv: Sequence[str] | None = None) -> int:
    paths = [Path(arg) for arg in (sys.argv[1:] if argv is None else argv)]
    if not paths:
        print("usage: python -m workloads.results_compact DIR...", file=sys.stderr)
        return 2
    folders = find_run_folders(paths)
    if not folders:
        print("no run folder found", file=sys.stderr)
        return 2
    for folder in folders:
        converted = compact_run(folder)
        print(f"{'compacted' if converted else 'already in the current form'}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
