"""Waiting in tests for something another thread or process does."""

import time
from collections.abc import Callable
from typing import Final

POLL_SECONDS: Final = 0.01


def eventually(predicate: Callable[[], bool], timeout: float) -> bool:
    """Whether ``predicate()`` holds within ``timeout`` seconds (polled)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True
