"""The benchmarks print how many of the machine's cores a phase kept busy (from
/proc/stat): a process's own CPU is part of what the machine counts as busy."""

import time
from typing import Final

from benchlib import machine_busy_seconds

SPIN_SECONDS: Final = 0.3
# /proc/stat counts in clock ticks (10 ms): a little below the spin may be counted.
TICKS_SLACK_SECONDS: Final = 0.05


def test_a_spinning_process_counts_as_busy_machine_time() -> None:
    machine_before, own_before = machine_busy_seconds(), time.process_time()
    while time.process_time() - own_before < SPIN_SECONDS:
        pass
    spun = time.process_time() - own_before
    assert machine_busy_seconds() - machine_before >= spun - TICKS_SLACK_SECONDS
