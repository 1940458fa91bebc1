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


class _Deadline(threading.local):
    """This thread's deadline for store calls (a class default, not ``getattr(local,
    name, None)``: in a thread that never set one, that raises and formats an
    ``AttributeError`` on every read)."""

    deadline: float | None = None


_current = _Deadline()


@contextmanager
def store_calls_until(deadline: float) -> Iterator[None]:
    """This thread's store calls end by ``deadline`` (``time.monotonic()``) meanwhile."""
    outer = enter_store_deadline(deadline)
    try:
        yield
    finally:
        leave_store_deadline(outer)


def enter_store_deadline(deadline: float) -> float | None:
    """``store_calls_until`` without the context manager (the writer's every group sets
    one): this thread's store calls end by ``deadline`` (or the sooner deadline already
    set) until ``leave_store_deadline`` is given what this returns."""
    outer = _current.deadline
    _current.deadline = deadline if outer is None or deadline < outer else outer
    return outer


def leave_store_deadline(outer: float | None) -> None:
    """Back to the deadline ``enter_store_deadline`` found (None: none)."""
    _current.deadline = outer


def seconds_left() -> float | None:
    """Seconds until this thread's store calls must end, or None when they have no deadline."""
    deadline = _current.deadline
    return None if deadline is None else deadline - time.monotonic()
