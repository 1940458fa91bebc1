"""What a server keeps after start-up leaves the cyclic collector's passes at the end of
each full collection (``app.heap.SettledHeap``), and a whole pass now and then frees
reference cycles among what was frozen."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from app.heap import SettledHeap


class Holder:
    """An object the collector tracks, in a reference cycle with itself."""

    def __init__(self) -> None:
        self.itself = self


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tracked(thing: object) -> bool:
    return any(found is thing for found in gc.get_objects())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keeper(clock: Clock) -> Iterator[SettledHeap]:
    installed = SettledHeap(whole_pass_seconds=60.0, clock=clock).install()
    try:
        yield installed
    finally:
        installed.remove()
        gc.unfreeze()


def test_a_full_collection_freezes_what_survived_it(keeper: SettledHeap) -> None:
    kept = Holder()
    assert tracked(kept)
    gc.collect()
    assert keeper.frozen == 1
    assert not tracked(kept)
    made_after = Holder()
    assert tracked(made_after)


def test_a_younger_collection_leaves_the_heap_as_it_is(keeper: SettledHeap) -> None:
    kept = Holder()
    gc.collect(0)
    gc.collect(1)
    assert keeper.frozen == 0
    assert tracked(kept)


def test_a_frozen_cycle_is_freed_by_the_whole_pass_once_it_is_due(
    keeper: SettledHeap, clock: Clock
) -> None:
    cycle = Holder()
    gone = weakref.ref(cycle)
    gc.collect()  # survived: frozen
    del cycle
    gc.collect()
    assert gone() is not None  # a frozen cycle is left alone
    clock.now = 60.0
    gc.collect()  # the pass that finds the whole pass due unfreezes at its end
    assert keeper.unfrozen == 1
    assert gc.get_freeze_count() == 0
    gc.collect()  # the whole pass: the cycle is freed, the rest frozen again
    assert gone() is None
    assert gc.get_freeze_count() > 0
    assert keeper.frozen == 3


def test_installing_twice_keeps_one_callback(keeper: SettledHeap) -> None:
    again = SettledHeap().install()
    assert again is keeper
    assert sum(isinstance(callback, SettledHeap) for callback in gc.callbacks) == 1
