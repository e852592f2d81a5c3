"""cluster.procfs's exact per-thread CPU: what `raftbench bench` reads idle CPU from."""

from __future__ import annotations

import os
import threading

from cluster.procfs import cpu_seconds, run_seconds_between, thread_run_ns


def spin(rounds: int) -> int:
    total = 0
    for i in range(rounds):
        total += i * i
    return total


def test_every_live_thread_is_read_and_work_shows_up_exactly() -> None:
    before = thread_run_ns(os.getpid())
    assert before is not None and threading.get_native_id() in before
    spin(200_000)
    after = thread_run_ns(os.getpid())
    assert after is not None
    ran = run_seconds_between(before, after)
    assert ran is not None and ran > 0
    # This thread's own counter moved; nanoseconds, not 10 ms ticks.
    mine = threading.get_native_id()
    assert after[mine] > before[mine]


def test_a_thread_that_ended_makes_the_window_unreadable_from_threads() -> None:
    """Its time left with it: the caller must fall back to utime+stime for that window."""
    started = threading.Event()
    finish = threading.Event()

    def worker() -> None:
        started.set()
        finish.wait()

    thread = threading.Thread(target=worker)
    thread.start()
    started.wait()
    before = thread_run_ns(os.getpid())
    finish.set()
    thread.join()
    after = thread_run_ns(os.getpid())
    assert before is not None and after is not None
    assert thread.native_id in before and thread.native_id not in after
    assert run_seconds_between(before, after) is None
    assert cpu_seconds(os.getpid()) is not None  # the fallback is still there


def test_a_new_thread_counts_from_zero_and_a_reused_id_is_refused() -> None:
    assert run_seconds_between({1: 100}, {1: 150, 2: 30}) == (50 + 30) / 1e9
    assert run_seconds_between({1: 100}, {1: 40}) is None  # id 1 is someone newer now


def test_a_process_that_does_not_exist_has_no_threads() -> None:
    assert thread_run_ns(2**22 + 12345) is None
