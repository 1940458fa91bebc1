"""The catch-up runner: the log's events into the views, in batches, exactly once.

Built on the library's public parts only: ``ApplicationSubscription`` (the catch-up
subscription of every backend, KurrentDB's included) read by one thread into a bounded
queue, and a writer thread that takes whatever has queued up (up to
``PROJECTION_BATCH_MAX`` events) and applies it in one transaction with its tracking
record. A long catch-up is then bound by the SQL, not by commits; a live worker applies
each new event within ``BATCH_LINGER_SECONDS`` of its arrival. The interface is the
library runner's: ``view``, ``app``, ``run_forever``, ``wait``, and a context manager.
"""

import os
import queue
import threading
from types import TracebackType
from typing import Any, Final, Self

from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.projection import ApplicationSubscription
from eventsourcing.utils import Environment

from app.application.ledger import Ledger
from projections.projection import PROJECTION_BATCH_MAX, LedgerProjection, RowWriter

# Events pulled ahead of the writer: enough to fill the next batch while one is written.
QUEUE_EVENTS_MAX: Final = 2 * PROJECTION_BATCH_MAX
STOP_CHECK_SECONDS: Final = 0.1
# How long the writer waits for one more event before it writes what it has: a few
# milliseconds of latency for a live event, full batches during a catch-up.
BATCH_LINGER_SECONDS: Final = 0.005


class CatchUpRunner:
    def __init__(self, view_class: type[RowWriter], env: dict[str, str]) -> None:
        environment = Environment(LedgerProjection.name, {**os.environ, **env})
        factory = InfrastructureFactory[Any].construct(environment)
        self.view: Any = factory.tracking_recorder(view_class)
        self.app = Ledger(env)
        self._subscription = ApplicationSubscription(
            app=self.app, gt=self.view.max_tracking_id(self.app.name)
        )
        self._queue: queue.Queue[tuple[Any, Tracking] | None] = queue.Queue(QUEUE_EVENTS_MAX)
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._reader = threading.Thread(target=self._read, name="projection-reader", daemon=True)
        self._writer = threading.Thread(target=self._write, name="projection-writer", daemon=True)
        self._entered = False

    def __enter__(self) -> Self:
        self._subscription.__enter__()
        self._entered = True
        self._reader.start()
        self._writer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._entered:
            self._subscription.__exit__(exc_type, exc_val, exc_tb)
            self._reader.join()
            self._writer.join()
        self.app.close()
        self._raise_error()

    def stop(self) -> None:
        self._stopping.set()
        self._subscription.stop()

    def run_forever(self, timeout: float | None = None) -> None:
        """Block until stopped, failed (re-raised here) or ``timeout`` passes."""
        self._stopping.wait(timeout=timeout)
        self._raise_error()

    def wait(self, position: int, timeout: float = 1.0) -> None:
        """Block until the views have applied ``position``; TimeoutError otherwise."""
        if not self.view.wait_for(position, timeout):
            self._raise_error()
            raise TimeoutError(f"views not at {position} within {timeout}s")

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _read(self) -> None:
        try:
            for item in self._subscription:
                while not self._put(item):
                    if self._stopping.is_set():
                        return
        except BaseException as error:  # noqa: BLE001  # a thread's end: handed to the owner
            self._fail(error)
        finally:
            self._put(None)

    def _put(self, item: tuple[Any, Tracking] | None) -> bool:
        try:
            self._queue.put(item, timeout=STOP_CHECK_SECONDS)
        except queue.Full:
            return False
        return True

    def _write(self) -> None:
        try:
            while (batch := self._next_batch()) is not None:
                self.view.apply_events(batch)
        except BaseException as error:  # noqa: BLE001  # a thread's end: handed to the owner
            self._fail(error)

    def _next_batch(self) -> list[tuple[Any, Tracking]] | None:
        """The events queued up now (waiting for the first), or None once stopped."""
        while True:
            try:
                first = self._queue.get(timeout=STOP_CHECK_SECONDS)
                break
            except queue.Empty:
                if self._stopping.is_set():
                    return None
        if first is None:
            return None
        batch = [first]
        while len(batch) < PROJECTION_BATCH_MAX:
            try:
                # Linger a moment for the next event: during a catch-up the reader
                # decodes them one by one, and without the wait the writer would take
                # each as a batch of its own.
                item = self._queue.get(timeout=BATCH_LINGER_SECONDS)
            except queue.Empty:
                break
            if item is None:
                self._queue.put(None)  # seen again by the next call, after this batch
                break
            batch.append(item)
        return batch

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._stopping.set()
        self._subscription.stop()
