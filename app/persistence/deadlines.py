"""The deadline of the store calls a thread makes now, for stores whose own retries would
outlast it.

The committer's writer answers each caller at its deadline (``LEDGER_WRITE_TIMEOUT_SECONDS``)
whatever the store is doing; this bounds the store work itself, so that the writer is
free again by then too. The writer sets it around each group write (the latest deadline
of the group's commands: after it, no caller waits for the answer); a store's retrying
call reads it and stops trying in time (``LedgerPostgresApplicationRecorder``).
"""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_current = threading.local()


@contextmanager
def store_calls_until(deadline: float) -> Iterator[None]:
    """This thread's store calls end by ``deadline`` (``time.monotonic()``) meanwhile."""
    outer: float | None = getattr(_current, "deadline", None)
    _current.deadline = deadline if outer is None else min(outer, deadline)
    try:
        yield
    finally:
        _current.deadline = outer


def seconds_left() -> float | None:
    """Seconds until this thread's store calls must end, or None when they have no deadline."""
    deadline: float | None = getattr(_current, "deadline", None)
    return None if deadline is None else deadline - time.monotonic()
