"""A node stops cleanly on SIGTERM from the moment it prints its ready line.

A supervisor (the launcher, systemd, a test) may signal as soon as it reads that line. The node
under test signals itself from inside the announce callback, the last thing before it would
otherwise get to install its handlers, so the case is hit every time, not by timing luck.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cluster.node import EXIT_OK

SCRIPT = """
import os, signal, sys
from pathlib import Path
from cluster.config import local_cluster_config
from cluster.node import NodeOptions, main

def announce(line: str) -> None:
    print(line, flush=True)
    os.kill(os.getpid(), signal.{signal})

config = local_cluster_config(1)
options = NodeOptions(config, "n1", "{protocol}", Path(sys.argv[1]), announce=announce)
sys.exit(main(options))
"""


@pytest.mark.parametrize("protocol", ["push", "pull"])
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_right_after_the_ready_line_stops_the_node_cleanly(
    tmp_path: Path, protocol: str, signal_name: str
) -> None:
    script = SCRIPT.format(signal=signal_name, protocol=protocol)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "data")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,  # guards against hangs only
    )
    assert done.stdout.startswith("ready n1 "), (done.stdout, done.stderr)
    assert done.returncode == EXIT_OK, done.stderr
