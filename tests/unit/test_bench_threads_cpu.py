"""`bench_http_goals.py --parts workers` splits each phase's CPU of serve's API workers
between their main threads (the event loops) and their other threads (the committers
and their helpers), read per thread from /proc."""

import os
import threading
import time
from typing import Final

from benchlib import main_and_other_threads_cpu_seconds

SPIN_SECONDS: Final = 0.3
# /proc counts in clock ticks (10 ms): a little below the spin may be counted.
TICKS_SLACK_SECONDS: Final = 0.05


def spin() -> float:
    """Spin this thread for SPIN_SECONDS of its own CPU; the CPU it spent."""
    started = time.thread_time()
    while time.thread_time() - started < SPIN_SECONDS:
        pass
    return time.thread_time() - started


def test_a_spinning_other_thread_counts_as_other_threads_not_the_main_one() -> None:
    """Read while the other thread still lives (an ended thread leaves /proc, and its
    CPU with it: the benchmark reads threads that live through the phase)."""
    spun: list[float] = []
    spun_done, may_end = threading.Event(), threading.Event()

    def spinner() -> None:
        spun.append(spin())
        spun_done.set()
        may_end.wait()

    main_before, other_before = main_and_other_threads_cpu_seconds([os.getpid()])
    thread = threading.Thread(target=spinner)
    thread.start()
    try:
        spun_done.wait()
        main_after, other_after = main_and_other_threads_cpu_seconds([os.getpid()])
    finally:
        may_end.set()
        thread.join()
    assert other_after - other_before >= spun[0] - TICKS_SLACK_SECONDS
    assert main_after - main_before < spun[0] - TICKS_SLACK_SECONDS


def test_the_main_threads_spin_counts_as_main() -> None:
    main_before, _ = main_and_other_threads_cpu_seconds([os.getpid()])
    spun = spin()
    main_after, _ = main_and_other_threads_cpu_seconds([os.getpid()])
    assert main_after - main_before >= spun - TICKS_SLACK_SECONDS


def test_a_process_that_is_gone_counts_for_nothing() -> None:
    gone = 2**22 + 1  # above Linux's highest pid (pid_max is at most 2**22)
    assert main_and_other_threads_cpu_seconds([gone]) == (0.0, 0.0)
