"""A store that hangs on demand: the ledger's event writes wait until released.

Wraps the real recorder's ``insert_events`` of one ledger (a fault injector, not a
mock: once released, the write goes to the real store exactly as it would have)."""

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from app.application.ledger import Ledger

HANG_LIMIT_SECONDS: Final = 60.0


class HungStore:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.released = threading.Event()
        self.released.set()
        self.entered = threading.Event()
        self._insert = ledger.recorder.insert_events
        self._after: list[Callable[[], object]] = []

    def _insert_events(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        if not self.released.wait(HANG_LIMIT_SECONDS):
            raise TimeoutError("the test never released the hung store")
        written = self._insert(*args, **kwargs)
        while self._after:
            self._after.pop()()
        return written

    def after_next_write(self, action: Callable[[], object]) -> None:
        """Run ``action`` once, in the writer's thread, right after its next write has
        committed (before the writer takes its next group): e.g. another process's
        write that this one's round trip cannot have brought back (decision 0027)."""
        self._after.append(action)

    @contextmanager
    def hanging(self) -> Iterator["HungStore"]:
        """Event writes hang from now until the block ends (or ``release``)."""
        self.released.clear()
        self.entered.clear()
        self.ledger.recorder.insert_events = self._insert_events  # type: ignore[method-assign]
        try:
            yield self
        finally:
            self.released.set()

    def release(self) -> None:
        self.released.set()

    def wait_until_entered(self) -> None:
        assert self.entered.wait(HANG_LIMIT_SECONDS), "no write reached the store"


def queued_units(ledger: Ledger) -> int:
    return ledger.committer.queued_units
