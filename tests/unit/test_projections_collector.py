"""A projections process spaces out the cyclic collector's passes, and the collector
still collects cycles by itself."""

import gc
import subprocess
import sys
import weakref
from collections.abc import Iterator
from typing import Final

import pytest

from projections.catchup import PROJECTIONS_COLLECTOR_THRESHOLDS, collect_less_often


class _Node:
    """One half of a reference cycle."""

    other: "_Node | None" = None


@pytest.fixture
def thresholds_restored() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.set_threshold(*before)


@pytest.mark.usefixtures("thresholds_restored")
def test_a_projections_process_collects_young_objects_less_often_and_still_collects() -> None:
    gc.set_threshold(700, 10, 10)  # Python's own (a test before may have set others)
    collect_less_often()
    assert gc.get_threshold() == PROJECTIONS_COLLECTOR_THRESHOLDS
    assert gc.isenabled()
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    assert gone() is not None  # a cycle: reference counting alone does not free it
    # Net allocations past the young threshold: the collector's own pass frees it.
    kept: list[list[int]] = [[] for _ in range(2 * PROJECTIONS_COLLECTOR_THRESHOLDS[0])]
    assert gone() is None
    assert len(kept) == 2 * PROJECTIONS_COLLECTOR_THRESHOLDS[0]


# A fresh interpreter set up as ``ledger project`` sets itself up (the thresholds, the
# start-up objects frozen), holding a cycle that reached the old generation before it
# was dropped, then allocating young garbage as a catch-up does: the collector's own
# full pass must free the cycle. With an old-generation threshold of 1,000 the first
# full pass comes after some 10⁹ net allocations (hours of a busy projections process):
# it was still alive after 5·10⁷.
OLD_CYCLE_FREED: Final = """
import gc, weakref
from projections.catchup import collect_less_often, freeze_long_lived_objects

class Node:
    other = None

collect_less_often()
freeze_long_lived_objects()
first, second = Node(), Node()
first.other, second.other = second, first
gone = weakref.ref(first)
gc.collect(1)  # the cycle is moved on into the old generation
assert gc.get_count() == (0, 0, 1), gc.get_count()
del first, second
allocated = 0
while gone() is not None and allocated < LIMIT:
    garbage = []
    garbage.append(garbage)  # a young cycle: freed at the next young pass
    allocated += 1
print("freed" if gone() is None else "alive", allocated)
"""


def test_a_projections_process_frees_a_cycle_of_the_old_generation() -> None:
    young, middle, old = PROJECTIONS_COLLECTOR_THRESHOLDS
    # Past the allocations that take the old generation's count over its threshold.
    limit = 2 * young * (middle + 1) * (old + 1)
    assert limit <= 30_000_000, "the old generation's passes come too seldom to test"
    script = OLD_CYCLE_FREED.replace("LIMIT", str(limit))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    outcome, allocated = done.stdout.split()
    assert outcome == "freed", f"an old cycle still alive after {allocated} allocations"
