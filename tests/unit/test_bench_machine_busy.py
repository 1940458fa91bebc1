"""The benchmarks print how many of the machine's cores a phase kept busy (from
/proc/stat): every tick but the idle and iowait ones, a process's own CPU among them."""

import os
import time
from typing import Final

from benchlib import machine_busy_seconds

SPIN_SECONDS: Final = 0.3
# /proc/stat counts in clock ticks (10 ms): a little below the spin may be counted.
TICKS_SLACK_SECONDS: Final = 0.05
# user nice system idle iowait irq softirq steal guest guest_nice, in ticks; then a core.
STAT: Final = "cpu  100 20 50 1000 300 7 3 5 40 0\ncpu0 50 10 25 500 150 3 2 2 20 0\n"


def test_busy_is_every_tick_but_idle_and_iowait() -> None:
    busy_ticks = 100 + 20 + 50 + 7 + 3 + 5  # guest time is already in user time
    assert machine_busy_seconds(STAT) == busy_ticks / os.sysconf("SC_CLK_TCK")


def test_a_spinning_process_counts_as_busy_machine_time() -> None:
    machine_before, own_before = machine_busy_seconds(), time.process_time()
    while time.process_time() - own_before < SPIN_SECONDS:
        pass
    spun = time.process_time() - own_before
    assert machine_busy_seconds() - machine_before >= spun - TICKS_SLACK_SECONDS
