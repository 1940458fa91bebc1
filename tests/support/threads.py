"""Threads a test starts and waits for, whose failures fail the test: an exception
raised in a plain ``threading.Thread`` ends that thread and nothing else (pytest only
warns of it), and ``thread.join(timeout)`` returns as quietly when the thread is still
running as when it has finished."""

import threading
import time
from collections.abc import Callable, Iterable


def run_in_threads(targets: Iterable[Callable[[], object]], timeout: float) -> None:
    """Run each target in a thread of its own, all started at once, and wait for them:
    fails when one of them raised (re-raising the first exception) or is still running
    after ``timeout`` seconds (daemon threads: a stuck one cannot hold the process)."""
    errors: list[BaseException] = []

    def catching(target: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as error:  # noqa: BLE001  # a thread's boundary: the test's
                errors.append(error)

        return run

    threads = [
        threading.Thread(target=catching(target), name=f"test-thread-{number}", daemon=True)
        for number, target in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    running = join_all(threads, timeout)
    if errors:
        raise errors[0]
    assert not running, f"threads still running after {timeout} s: {running}"


def join_all(threads: Iterable[threading.Thread], timeout: float) -> list[str]:
    """Wait up to ``timeout`` seconds in all for the threads to end; the names of those
    still running."""
    deadline = time.monotonic() + timeout
    threads = list(threads)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread.name for thread in threads if thread.is_alive()]


def assert_all_end(threads: Iterable[threading.Thread], timeout: float) -> None:
    """The threads end within ``timeout`` seconds in all."""
    running = join_all(threads, timeout)
    assert not running, f"threads still running after {timeout} s: {running}"
