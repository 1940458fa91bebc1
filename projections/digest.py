"""The log digest worker: carries the ledger-wide running digest (``app/audit/anchors``)
along the log as it grows and records a checkpoint (position, digest, event count)
after every batch it reads.

The checkpoints make ``ledger anchor`` cheap (it continues from the newest one) and are
evidence in their own right: the worker never reads an event twice, so a checkpoint
records the log as it was when the worker passed, and ``ledger audit --anchors`` uses
them to narrow down where a changed log first disagrees. They live beside the view
generation pointer, outside any view generation, so that ``ledger rebuild`` keeps them.
"""

import sqlite3
import threading
import time
from contextlib import AbstractContextManager
from typing import Any, Final

from eventsourcing.persistence import ApplicationRecorder, Notification

from app.audit.anchors import GENESIS, Anchor, extend, notifications_after
from app.persistence.decoding import DecodedBatches
from app.persistence.kept_connection import StoreConnection
from app.persistence.schema_lock import creating_schema
from app.persistence.stores import STORE_TIMEOUT_SECONDS, sqlite_path

DIGEST_INTERVAL_SECONDS: Final = 1.0
# The most events carried per checkpoint: each checkpoint is a write (on SQLite a commit
# with its fsync, some milliseconds of CPU), so under atomic batches of 1,000 transfers
# (3,000 events) one per 1,000 events was most of the worker's cost.
BATCH_EVENTS_MAX: Final = 5000
# A digest ahead of the views' runner waits for its batches instead of reading the log
# itself, as long as the runner shared one this recently (else it is down or the log
# idle, and the digest reads on by itself).
RUNNER_QUIET_SECONDS: Final = 3.0
CHECKPOINTS_LISTED_MAX: Final = 100_000
LIST_SQLITE: Final = (
    "SELECT position, digest, events FROM ledger_log_digest ORDER BY position LIMIT ?"
)
LIST_POSTGRES: Final = LIST_SQLITE.replace("?", "%s")
RECORD_SQLITE: Final = (
    "INSERT INTO ledger_log_digest (position, digest, events) VALUES (?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)
RECORD_POSTGRES: Final = RECORD_SQLITE.replace("?", "%s")


class DigestCheckpoints:
    """The table ``ledger_log_digest`` in the read model's database."""

    def __init__(self, read_model_url: str) -> None:
        self.url = read_model_url
        self._kept: sqlite3.Connection | None = None
        # PostgreSQL: one connection for every use (a checkpoint is recorded each second).
        self._connection = StoreConnection(read_model_url)
        self.is_postgres = self._connection.is_postgres
        with self._connect() as connection, creating_schema(connection):
            connection.execute(
                "CREATE TABLE IF NOT EXISTS ledger_log_digest ("
                "position BIGINT PRIMARY KEY, digest TEXT NOT NULL, events BIGINT NOT NULL)"
            )

    def _connect(self) -> AbstractContextManager[Any]:
        return self._connection.using()

    def newest(self) -> Anchor | None:
        with self._connect() as connection:
            row = connection.execute(
                "SELECT position, digest, events FROM ledger_log_digest "
                "ORDER BY position DESC LIMIT 1"
            ).fetchone()
        return None if row is None else Anchor(int(row[0]), str(row[1]), int(row[2]))

    def all(self) -> list[Anchor]:
        statement = LIST_POSTGRES if self.is_postgres else LIST_SQLITE
        with self._connect() as connection:
            rows = connection.execute(statement, (CHECKPOINTS_LISTED_MAX,)).fetchall()
        return [Anchor(int(row[0]), str(row[1]), int(row[2])) for row in rows]

    def record(self, anchor: Anchor) -> None:
        """On SQLite through a connection kept for the next record (``close`` ends it;
        a failed record drops it): the worker records one checkpoint per batch."""
        values = (anchor.position, anchor.digest, anchor.events)
        if self.is_postgres:
            with self._connect() as connection:
                connection.execute(RECORD_POSTGRES, values)
            return
        if self._kept is None:
            self._kept = sqlite3.connect(
                sqlite_path(self.url),
                timeout=STORE_TIMEOUT_SECONDS,
                isolation_level=None,
                check_same_thread=False,
            )
        try:
            self._kept.execute(RECORD_SQLITE, values)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection ``record`` keeps (if any)."""
        kept, self._kept = self._kept, None
        if kept is not None:
            kept.close()
        self._connection.close()


def carry_digest(
    recorder: ApplicationRecorder, checkpoints: DigestCheckpoints, start: Anchor
) -> Anchor:
    """Read what the log has after ``start`` (a bounded batch), extend the digest over
    it and record the new checkpoint."""
    batch = []
    for notification in notifications_after(recorder, start.position):
        batch.append(notification)
        if len(batch) >= BATCH_EVENTS_MAX:
            break
    if not batch:
        return start
    head = extend(start, batch)
    checkpoints.record(head)
    return head


def carry_shared(shared: DecodedBatches, checkpoints: DigestCheckpoints, start: Anchor) -> Anchor:
    """``carry_digest`` over what the process's views runner has read of the log after
    ``start`` and shares (``DecodedBatches``), without reading it again; ``start``
    itself when nothing shared joins on to it."""
    batch: list[Notification] = []
    position = start.position
    while len(batch) < BATCH_EVENTS_MAX:
        shared_batch = shared.after(position, 0)
        if shared_batch is None:
            break
        batch += shared_batch.notifications
        position = shared_batch.last
    if not batch:
        return start
    head = extend(start, batch)
    checkpoints.record(head)
    return head


def keep_digest(
    recorder: ApplicationRecorder,
    checkpoints: DigestCheckpoints,
    stopping: threading.Event,
    shared: DecodedBatches | None = None,
) -> None:
    """The worker: carry the digest until stopped (failures go to the supervisor). It
    catches up in full batches, then checks the log once a second: a checkpoint a
    second at most, whatever the write rate. Given ``shared``, it first takes what the
    views' runner has read (read again only when that does not join on)."""
    head = checkpoints.newest() or Anchor(0, GENESIS, 0)
    took_before = False  # whether the last round took something shared
    while not stopping.is_set():
        start = head
        if shared is not None:
            head = carry_shared(shared, checkpoints, head)
        took_shared = head is not start
        # The log read itself only after a round without anything shared following one
        # without: a runner a moment behind the log is waited for, one round at most;
        # and not while the runner, sharing lately, is behind the digest (reading on
        # alone, a digest ahead of a busy runner would stay ahead, reading every event
        # a second time, as it did under atomic batches while the child lagged).
        if not took_shared and not took_before and not _behind_it(shared, head.position):
            head = carry_digest(recorder, checkpoints, head)
        took_before = took_shared
        if head.events - start.events < BATCH_EVENTS_MAX:
            stopping.wait(DIGEST_INTERVAL_SECONDS)


def _behind_it(shared: DecodedBatches | None, position: int) -> bool:
    """Whether the views' runner is behind the digest's ``position`` and still sharing:
    what follows ``position`` will come from it."""
    newest = None if shared is None else shared.newest()
    if newest is None:
        return False
    last, offered_at = newest
    return last <= position and time.monotonic() - offered_at < RUNNER_QUIET_SECONDS
