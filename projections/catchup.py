"""The catch-up runner: the log's events into the views, in batches, exactly once.

Built on the library's public parts only. The writer thread first reads the log itself,
from the checkpoint, with the recorder's ``select_notifications`` (every backend's,
KurrentDB's included), in batches (``catch_up_batch_size``), decoding each batch
and applying it in one transaction with its tracking record, until a read comes back
short: the head. A long catch-up is then one thread, bound by the decoding and the SQL:
no hand-off per event, and no second thread taking the GIL from the writer between
its SQLite calls (with one, the process spent more CPU than the work itself took).

On SQLite and PostgreSQL it then goes on reading the log itself (``_poll``). SQLite
has no notifications, so its subscription would only poll the log from a thread of
its own and hand each notification over; PostgreSQL's subscription reads the log once
per notification (about once per write under load) and hands over batches of a few
events, each then a transaction of the views. The writer polls instead, every
``LIVE_POLL_SECONDS``, and while the log is busy (the last read found at least
``BUSY_EVENTS``) every ``BUSY_POLL_SECONDS``, so that a live batch under steady load
holds a few hundred events and its fixed costs (a transaction, the rows' loading, the
tracking record, a commit) are shared by them (decision 0013, addendum). On
PostgreSQL the writer listens to the store's notifications of its writes
(``WriteNotices``: LISTEN/NOTIFY), and an idle writer reads when one is heard (at most
``LIVE_POLL_SECONDS`` after its previous read), or after ``MISSED_CHECK_SECONDS``
without one, instead of on the clock (decision 0021, addendum).

Elsewhere (KurrentDB) it subscribes, from where it stopped: the recorder's subscription (a
thread of the library's) read by a reader thread into a bounded queue of stored
notifications, from which the writer takes whatever has queued up (up to
``PROJECTION_BATCH_MAX``). The reader only moves notifications: decoding them there
would not run in parallel (the GIL) and would hand the writer one event at a time. A
live worker applies each new event within ``BATCH_LINGER_SECONDS`` of its arrival. The
interface is the library runner's: ``view``, ``app``, ``run_forever``, ``wait``, and a
context manager.
"""

import contextlib
import gc
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, Final, Self

import psycopg
from eventsourcing.persistence import (
    InfrastructureFactory,
    Notification,
    Subscription,
    Tracking,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier

from app.application.ledger import Ledger, collector_paused
from app.persistence.decoding import DecodedBatches, domain_event_reader
from app.persistence.sqlite_subscription import SubscribableSQLiteApplicationRecorder
from projections.projection import PROJECTION_BATCH_MAX, LedgerProjection, RowWriter

# Events pulled ahead of the writer: enough to fill the next batch while one is written.
QUEUE_EVENTS_MAX: Final = 2 * PROJECTION_BATCH_MAX
STOP_CHECK_SECONDS: Final = 0.1
# How long the writer waits for one more event before it writes what it has: a few
# milliseconds of latency for a live event, full batches during a catch-up.
BATCH_LINGER_SECONDS: Final = 0.005
# A live runner that received nothing for this long reads the log after its checkpoint
# itself (``CatchUpRunner._missed``): a notification the subscription missed costs at
# most this delay, never a stuck view.
MISSED_CHECK_SECONDS: Final = 1.0
# Events per transaction while the writer reads the log itself (a catch-up): up to five
# times a live batch, because each commit rewrites the index pages its rows touched and
# each batch loads the rows of the accounts it changes (fewer of both per event), yet
# at most a tenth of what the catch-up has to do: it still commits its progress at
# least ten times (what a kill loses, what a rebuild reports).
CATCH_UP_BATCH_MAX: Final = 5 * PROJECTION_BATCH_MAX
CATCH_UP_COMMITS_MIN: Final = 10
# A live runner that reads the log itself reads it this often (SQLite; on PostgreSQL at
# most this often, when a write is heard); a write reaches the views within this (plus
# the batch's own writing) while writes are sparse.
LIVE_POLL_SECONDS: Final = 0.02
# While the log is busy (a read found at least BUSY_EVENTS events: some 200 transfers a
# second and more), it waits this long before its next read instead: a live batch then
# holds what some 200 ms brought (hundreds of transfers) rather than what 20 ms brought.
# Its fixed costs are shared by more events: above all the commit, which writes every
# page the batch dirtied, and the entries' and transfers' indexes (keyed by account and
# transfer ids) dirty a page per row of a small batch. A read waiting for a position
# does not wait this out: it asks (``WantedPosition``) and the writer reads at once
# (``_pause``). The price, under load only: the feed, which follows the writer's
# batches, may get a public event this much later (decision 0013, sixth addendum).
BUSY_EVENTS: Final = 12
BUSY_POLL_SECONDS: Final = 0.2
# A reader waiting for a position (``min_position``, ``Ledger-Position``) says so
# (``WantedPosition``, ``WantedNotices``); a pausing writer looks this often and then
# reads at once: such a read waits at most this (plus the batch's writing) for the
# pause, not the pause.
WANTED_CHECK_SECONDS: Final = 0.01


class CatchUpRunner:
    def __init__(
        self,
        view_class: type[RowWriter],
        env: dict[str, str],
        shared: DecodedBatches | None = None,
    ) -> None:
        environment = Environment(LedgerProjection.name, {**os.environ, **env})
        factory = InfrastructureFactory[Any].construct(environment)
        self.view: Any = factory.tracking_recorder(view_class)
        self.app = Ledger(env)
        # Where the batches it reads from the log itself are offered to other readers.
        self.shared = shared
        self._checkpoint: int | None = self.view.max_tracking_id(self.app.name)
        # Subscribed once the writer has read the log up to its head itself.
        self._subscription: Subscription[Any] | None = None
        self._subscribing = threading.Lock()
        self._handoff = Handoff(QUEUE_EVENTS_MAX)
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._reader: threading.Thread | None = None  # started with the subscription
        self._writer = threading.Thread(target=self._write, name="projection-writer", daemon=True)
        self._entered = False
        # The position a reader asked for that woke the writer last, and one whose read
        # found nothing (``_pause``): it does not wake the writer again.
        self._woken_for = 0
        self._asked_in_vain = 0

    def __enter__(self) -> Self:
        freeze_long_lived_objects()
        self._entered = True
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
            self._writer.join()
            if self._subscription is not None:  # the writer has ended: no longer changes
                self._subscription.__exit__(exc_type, exc_val, exc_tb)
            if self._reader is not None:
                self._reader.join()
        self.app.close()
        wanted = getattr(self.view, "wanted", None)
        if wanted is not None:
            wanted.close()
        self._raise_error()

    def stop(self) -> None:
        with self._subscribing:
            self._stopping.set()
            if self._subscription is not None:
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

    def _read(self, subscription: Subscription[Any]) -> None:
        try:
            for notification in subscription:
                if not self._handoff.put(notification, self._stopping):
                    return
        except BaseException as error:  # noqa: BLE001  # a thread's end: handed to the owner
            self._fail(error)
        finally:
            self._handoff.put(None, self._stopping)

    def _write(self) -> None:
        try:
            name, to_domain_event = self.app.name, domain_event_reader(self.app.mapper)

            def apply(batch: Sequence[Notification], *, whole: bool = True) -> None:
                """Apply ``batch``; ``whole``: it is everything the log holds after the
                checkpoint up to its end (a read of the log), so it may be shared."""
                with collector_paused():  # the batch's events and rows: no cycles
                    events = [to_domain_event(n) for n in batch]
                    self.view.apply_at_positions(
                        events, [n.id for n in batch], Tracking(name, batch[-1].id)
                    )
                after, self._checkpoint = self._checkpoint or 0, batch[-1].id
                if whole and self.shared is not None:
                    self.shared.offer(after, batch, events)

            if not self._read_to_head(apply):
                return
            if reads_the_log_itself(self.app.recorder):
                self._poll(apply)
                return
            if not self._subscribe():
                return
            while (batch := self._next_batch()) is not None:
                # A batch read directly (``_missed``) is delivered again by the
                # subscription later: what is already applied is skipped (positions
                # ascend within a batch, so only a batch starting at or before the
                # checkpoint is filtered; a live batch is applied as it came).
                checkpoint = self._checkpoint or 0
                if batch[0].id <= checkpoint:
                    batch = [n for n in batch if n.id > checkpoint]
                if batch:
                    apply(batch, whole=False)
        except BaseException as error:  # noqa: BLE001  # a thread's end: handed to the owner
            self._fail(error)

    def _read_to_head(self, apply: Callable[[Sequence[Notification]], None]) -> bool:
        """Read and apply the log from the checkpoint, batch after batch, until a read
        comes back short (the head as it was then); False once stopped."""
        recorder = self.app.recorder
        size = catch_up_batch_size((recorder.max_notification_id() or 0) - (self._checkpoint or 0))
        while not self._stopping.is_set():
            with collector_paused():
                batch = recorder.select_notifications(
                    start=self._checkpoint or 0, limit=size, inclusive_of_start=False
                )
            if batch:
                apply(batch)
            if len(batch) < size:
                return True
        return False

    def _poll(self, apply: Callable[[Sequence[Notification]], None]) -> None:
        """Read and apply the log after the checkpoint until stopped: after a full
        batch at once and up to twice as many (to ``CATCH_UP_BATCH_MAX``: a backlog,
        such as an atomic batch of transfers, is taken in catch-up sized batches),
        else after ``poll_wait`` of what the read found."""
        recorder = self.app.recorder
        with WriteNotices.of(recorder) as writes:
            # Listening before the first read: a write or an ask after it is heard.
            wanted = getattr(self.view, "wanted", None)
            if wanted is not None:
                wanted.read()
            wait = 0.0 if writes.listening else LIVE_POLL_SECONDS
            self._poll_from(apply, wait, writes)

    def _poll_from(
        self,
        apply: Callable[[Sequence[Notification]], None],
        wait: float,
        writes: "WriteNotices",
    ) -> None:
        recorder, limit = self.app.recorder, PROJECTION_BATCH_MAX
        while self._pause(wait, writes):
            with collector_paused():
                batch = recorder.select_notifications(
                    start=self._checkpoint or 0, limit=limit, inclusive_of_start=False
                )
            if batch:
                apply(batch)
            else:
                # Woken for a position the log does not hold (yet): not again for it.
                self._asked_in_vain = self._woken_for
            if len(batch) == limit:
                wait, limit = 0, min(2 * limit, CATCH_UP_BATCH_MAX)
            else:
                wait, limit = poll_wait(len(batch)), PROJECTION_BATCH_MAX

    def _pause(self, seconds: float, writes: "WriteNotices | None" = None) -> bool:
        """Wait ``seconds`` before the next read of the log, or less: until a reader
        asks for a position past the checkpoint (``WantedPosition``, ``WantedNotices``,
        looked at every ``WANTED_CHECK_SECONDS``). Idle (``LIVE_POLL_SECONDS``) on a
        store that notifies its writes (``writes``), wait on until one is heard, or
        ``MISSED_CHECK_SECONDS`` at most. False once stopped."""
        wanted = getattr(self.view, "wanted", None)
        until_written = writes is not None and writes.listening and seconds == LIVE_POLL_SECONDS
        if (wanted is None and not until_written) or seconds <= WANTED_CHECK_SECONDS:
            return not self._stopping.wait(seconds)
        started = time.monotonic()
        soonest = started + seconds
        latest = started + (MISSED_CHECK_SECONDS if until_written else seconds)
        heard = False
        while (now := time.monotonic()) < latest:
            asked = wanted.read() if wanted is not None else 0
            if asked > (self._checkpoint or 0) and asked != self._asked_in_vain:
                self._woken_for = asked
                break
            if writes is not None and until_written:
                heard = writes.heard() or heard
                if heard and now >= soonest:
                    break
            if self._stopping.wait(min(WANTED_CHECK_SECONDS, latest - now)):
                return False
        return not self._stopping.is_set()

    def _subscribe(self) -> bool:
        """Subscribe after the checkpoint and start the reader; False once stopped."""
        with self._subscribing:
            if self._stopping.is_set():
                return False
            subscription = self._subscription = self.app.recorder.subscribe(gt=self._checkpoint)
            subscription.__enter__()
            self._reader = threading.Thread(
                target=self._read, args=(subscription,), name="projection-reader", daemon=True
            )
            self._reader.start()
        return True

    def _next_batch(self) -> list[Notification] | None:
        """The notifications handed over by now (waiting for the first), or None once
        stopped or at the end of the subscription."""
        batch: list[Notification] = []
        idle_since = time.monotonic()
        while not batch:
            if self._stopping.is_set():
                return None
            batch, ended = self._handoff.take(PROJECTION_BATCH_MAX, STOP_CHECK_SECONDS)
            if ended and not batch:
                return None
            if not batch and time.monotonic() - idle_since >= MISSED_CHECK_SECONDS:
                batch, idle_since = self._missed(), time.monotonic()
                if batch:
                    return batch
        if len(batch) < PROJECTION_BATCH_MAX and not ended:
            # Linger a moment for more, once per batch: a live event waits at most this
            # long, and a catch-up whose reader fell behind still fills its batch.
            time.sleep(BATCH_LINGER_SECONDS)
            more, _ = self._handoff.take(PROJECTION_BATCH_MAX - len(batch), 0)
            batch += more
        return batch

    def _missed(self) -> list[Notification]:
        """What the log holds after the checkpoint, read directly: normally nothing.

        The library's PostgreSQL subscription pulls what is recorded, then starts
        listening (``PostgresSubscription``: the pull thread starts before the listen
        thread has sent LISTEN): an event committed in between is not pulled until the
        next write's notification, and a caller waiting on the view for that event
        would wait for a write that never comes. Read here after each
        ``MISSED_CHECK_SECONDS`` without a notification, such an event is applied
        within that bound whatever the subscription does."""
        return list(
            self.app.recorder.select_notifications(
                start=self._checkpoint or 0, limit=PROJECTION_BATCH_MAX, inclusive_of_start=False
            )
        )

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self.stop()


def poll_wait(found: int) -> float:
    """How long a live runner reading the log itself waits after a read that found
    ``found`` events: longer while the log is busy, to gather larger batches."""
    return BUSY_POLL_SECONDS if found >= BUSY_EVENTS else LIVE_POLL_SECONDS


class WriteNotices:
    """The store's own notifications of its writes, for a live runner that reads the
    log itself: PostgreSQL's (every write's function ends with ``NOTIFY`` on the
    recorder's channel), listened to on a connection of the store's datastore, so an
    idle writer reads the log when a write is heard rather than on a clock. Elsewhere
    (SQLite) nothing is heard (``listening`` False) and the writer polls."""

    def __init__(self, datastore: Any = None, channel: str = "") -> None:
        self._datastore, self._channel = datastore, channel
        self._listening = contextlib.ExitStack()
        self._connection: Any = None

    @classmethod
    def of(cls, recorder: object) -> "WriteNotices":
        if isinstance(recorder, PostgresApplicationRecorder):
            return cls(recorder.datastore, recorder.channel_name)
        return cls()

    @property
    def listening(self) -> bool:
        return self._connection is not None

    def __enter__(self) -> Self:
        if self._datastore is not None:
            connection = self._listening.enter_context(self._datastore.get_connection())
            connection.execute(SQL("LISTEN {0}").format(Identifier(self._channel)))
            self._connection = connection
        return self

    def heard(self) -> bool:
        """Whether a write was notified since the last look (all of them taken)."""
        return sum(1 for _ in self._connection.notifies(timeout=0)) > 0

    def __exit__(self, *exc_info: object) -> None:
        if self._connection is not None:
            # Back into the pool without the subscription, where it may be reused.
            with contextlib.suppress(psycopg.Error):
                if not self._connection.closed:
                    self._connection.execute("UNLISTEN *")
            self._connection = None
        self._listening.close()


def reads_the_log_itself(recorder: object) -> bool:
    """Whether a live runner polls this recorder's log itself rather than subscribing:
    SQLite's, whose subscription would only poll it from a thread of its own, and
    PostgreSQL's, whose subscription reads the log once per notification, in small
    batches, from two threads of its own (decision 0021, addendum)."""
    return isinstance(recorder, SubscribableSQLiteApplicationRecorder | PostgresApplicationRecorder)


def catch_up_batch_size(behind: int) -> int:
    """Events per batch of a catch-up ``behind`` positions from the head: a tenth of it
    (``CATCH_UP_COMMITS_MIN``), within a live batch and ``CATCH_UP_BATCH_MAX``. (On
    KurrentDB positions are commit positions, further apart than one per event: there
    a catch-up takes the largest batches.)"""
    return max(PROJECTION_BATCH_MAX, min(CATCH_UP_BATCH_MAX, behind // CATCH_UP_COMMITS_MIN))


# The cyclic collector's thresholds in a process that runs only projections (``ledger
# project``, serve's child): a young pass every 20,000 net allocations instead of 700,
# a middle one every 50 of those, a full one every 10 middle ones (Python's own count,
# and its rule of a full pass only once the old objects grew by a quarter). A
# projections process keeps many young objects alive for a while (the decoded batches
# shared with the feed and the digest, 30,000 events at most, the rows and states kept
# between batches) and the default thresholds passed each of them on from generation
# to generation, and walked the whole old generation about every 4 s: 0.27 s of the
# child's some 3 s of CPU under 8 HTTP clients, 0.06 s with these. A cycle that reached
# the old generation is freed at the next full pass, some 10⁷ net allocations on (with
# 1,000 middle passes to a full one, as first set, some 10⁹: hours of a busy process).
PROJECTIONS_COLLECTOR_THRESHOLDS: Final = (20_000, 50, 10)

_frozen = threading.Event()


def collect_less_often() -> None:
    """Space out the cyclic collector's passes (``PROJECTIONS_COLLECTOR_THRESHOLDS``):
    for a process that runs only projections, process-wide."""
    gc.set_threshold(*PROJECTIONS_COLLECTOR_THRESHOLDS)


def freeze_long_lived_objects() -> None:
    """Move every object alive now (the modules, classes and application objects the
    process has built) out of the garbage collector's sight, once per process.

    A catch-up allocates and keeps enough objects (a batch's events and rows, the
    pulled notifications) to set off full collections every few thousand events, and
    each one walks every object of the process: in a process that has imported the
    whole application, that was a fifth of the catch-up's CPU. Frozen objects are
    still freed when their last reference goes; only a reference cycle among them
    would stay, and once per process bounds that."""
    if not _frozen.is_set():
        _frozen.set()
        gc.freeze()


class Handoff:
    """From one reader thread to one writer thread: notifications put one at a time,
    taken in bulk. A deque (its append and popleft are atomic) and two events instead
    of a ``queue.Queue``, whose lock and condition per item cost more than the fold
    of a small event. Bounded: the reader waits while ``capacity`` items are queued.
    ``None`` ends the stream: it stays queued for every later ``take`` to see."""

    def __init__(self, capacity: int) -> None:
        self._items: deque[Notification | None] = deque()
        self._capacity = capacity
        self._filled = threading.Event()
        self._drained = threading.Event()

    def put(self, item: Notification | None, stopping: threading.Event) -> bool:
        """Queue ``item``; False when ``stopping`` was set while waiting for room."""
        while len(self._items) >= self._capacity:
            self._drained.clear()
            if len(self._items) < self._capacity:
                break  # the writer took some between the check and the clear
            if not self._drained.wait(STOP_CHECK_SECONDS) and stopping.is_set():
                return False
        self._items.append(item)
        if not self._filled.is_set():
            self._filled.set()
        return True

    def take(self, limit: int, timeout: float) -> tuple[list[Notification], bool]:
        """Up to ``limit`` queued notifications (waiting up to ``timeout`` for the
        first), and whether the stream has ended (nothing more will come)."""
        if not self._items and timeout > 0:
            self._filled.clear()
            if not self._items:  # nothing arrived between the check and the clear
                self._filled.wait(timeout)
        taken: list[Notification] = []
        items = self._items
        while items and len(taken) < limit:
            item = items[0]
            if item is None:
                self._drained.set()
                return taken, True
            taken.append(items.popleft())  # type: ignore[arg-type]  # not None: checked
        self._drained.set()
        return taken, False
