"""Catch-up subscriptions for SQLite, which the library lacks.

The library's ``ListenNotifySubscription`` already pulls notifications in batches
whenever it is woken; on PostgreSQL LISTEN/NOTIFY wakes it. SQLite has no
notifications, so a timer thread wakes it every poll interval. Polling is safe here:
the notification id is the rowid, assigned inside SQLite's single writer transaction,
so ids commit in order and ``id > last`` never skips a late-committing row.
"""

from collections.abc import Sequence
from threading import Event, Thread
from typing import Any, Final

from eventsourcing.persistence import ApplicationRecorder, ListenNotifySubscription, Subscription
from eventsourcing.sqlite import SQLiteApplicationRecorder

from app.compat import ExecutemanySQLiteRecorder, set_pull_batch_size, wake_subscription

POLL_INTERVAL_SECONDS: Final = 0.02
PULL_BATCH_SIZE: Final = 1000


class SQLitePollingSubscription(ListenNotifySubscription[SQLiteApplicationRecorder]):
    def __init__(
        self,
        recorder: SQLiteApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
        poll_interval_seconds: float = POLL_INTERVAL_SECONDS,
    ) -> None:
        self._stopping = Event()
        self._poll_interval_seconds = poll_interval_seconds
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        set_pull_batch_size(self, PULL_BATCH_SIZE)
        self._poll_thread = Thread(target=self._wake_periodically, daemon=True)
        self._poll_thread.start()

    def stop(self) -> None:
        super().stop()
        self._stopping.set()

    def _wake_periodically(self) -> None:
        while not self._stopping.wait(self._poll_interval_seconds):
            wake_subscription(self)

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._poll_thread.join()


class SubscribableSQLiteApplicationRecorder(ExecutemanySQLiteRecorder):
    """Selected with ``APPLICATION_RECORDER_TOPIC`` for every SQLite event store (and
    inserting each write's rows in one ``executemany``, see ``app.compat``)."""

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return SQLitePollingSubscription(recorder=self, gt=gt, topics=topics)
