"""A projections process spaces out the cyclic collector's passes, and the collector
still collects cycles by itself."""

import gc
import weakref
from collections.abc import Iterator

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
    assert gc.get_threshold() != PROJECTIONS_COLLECTOR_THRESHOLDS
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
