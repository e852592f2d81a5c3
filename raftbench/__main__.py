"""`python -m raftbench` is the same as the `raftbench` console script."""

import sys

from raftbench.cli import main

sys.exit(main())
