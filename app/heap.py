"""A server's heap kept out of the cyclic collector's way (decision 0026, ninth-session
addendum).

``bootstrap.settle_heap`` freezes what start-up made. What a server keeps long after
start-up (the writer's caches of accounts and transfers: some 100,000 tracked objects
after 20,000 transfers) is still walked by every full collection, and CPython 3.11 runs
one whenever a quarter as many objects as the last full collection left have survived
since: every few seconds under load, each one holding the interpreter lock for 10-60 ms
(35 ms of CPU for 108,000 objects), so that every request in flight waits for it. The
cache's turnover made no cyclic garbage (0 objects collected by the full passes of a
20-second run): refcounting frees what the caches let go.

``SettledHeap`` freezes what survived each full collection as it ends, so the next one
walks only what was promoted since. Frozen objects are still freed when their last
reference goes; only a reference cycle among them would stay. To bound that, once every
``WHOLE_HEAP_PASS_SECONDS`` it unfreezes instead: the next full collection walks the
whole heap once (one long pause), and freezes again at its end."""

import gc
import time
from collections.abc import Callable
from typing import Any, Final

# How often a full collection walks the whole heap (start-up's objects included) to
# free reference cycles among frozen objects: one pause of the whole heap's walk.
WHOLE_HEAP_PASS_SECONDS: Final = 600.0
OLDEST_GENERATION: Final = 2


class SettledHeap:
    """A ``gc.callbacks`` entry: after each full collection, its survivors frozen."""

    def __init__(
        self,
        whole_pass_seconds: float = WHOLE_HEAP_PASS_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._whole_pass_seconds = whole_pass_seconds
        self._clock = clock
        self._whole_pass_due = clock() + whole_pass_seconds
        # Full collections whose survivors were frozen, and those that unfroze the heap
        # for the whole pass that follows (for tests and benchmarks).
        self.frozen = 0
        self.unfrozen = 0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase != "stop" or info["generation"] != OLDEST_GENERATION:
            return
        now = self._clock()
        if now >= self._whole_pass_due:
            self._whole_pass_due = now + self._whole_pass_seconds
            gc.unfreeze()
            self.unfrozen += 1
            return
        gc.freeze()
        self.frozen += 1

    def install(self) -> "SettledHeap":
        """From now on, in this process (once: a second install is the first's)."""
        for callback in gc.callbacks:
            if isinstance(callback, SettledHeap):
                return callback
        gc.callbacks.append(self)
        return self

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
