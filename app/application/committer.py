"""The committer: one writer thread per ledger, fed by a bounded queue.

Callers never write. Each write command is queued with its caller's deadline; the
writer takes everything waiting (up to a group size), hands it to the ledger as one
group — one store write for all of them — and each caller is answered as soon as its
own command is settled. Nothing here knows what a command does: the ledger's group
writer decides, per command, whether it is answered now or must run again later
(``Pending.retry``), and the committer puts those first in the next group.

Under overload callers are told at once (``OverloadedError``) instead of queueing
without bound; a caller whose deadline passes while its command still waits gets
``WriteTimeoutError`` (the command is dropped, nothing written); one whose command was
already taken gets ``OutcomeUnknownError`` (it may or may not commit; resending the
same id is safe because every write is idempotent on its id).
"""

import asyncio
import contextlib
import itertools
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from app.domain.errors import OutcomeUnknownError, OverloadedError, WriteTimeoutError

R = TypeVar("R")

# How many transfers one group write holds at most (an atomic batch counts as its size,
# and is never split: a single command larger than this is written alone).
GROUP_UNITS_MAX: Final = 2_000
# How long the idle writer sleeps between checks of its stop flag.
IDLE_WAKE_SECONDS: Final = 0.5
STOP_JOIN_SECONDS: Final = 5.0
WRITE_TIMES_KEPT: Final = 4096
RETRY_BACKOFF_BASE_SECONDS: Final = 0.001
RETRY_BACKOFF_CAP_SECONDS: Final = 0.05


@dataclass(eq=False)
class Pending(Generic[R]):
    """One queued command: what to run, for whom, until when."""

    command: Any  # the ledger's command object; opaque to the committer
    units: int
    deadline: float
    future: "Future[R]" = field(default_factory=Future)
    # Conflicts this command met so far (its own retry budget, kept by the ledger).
    conflicts: int = 0
    # A command that meets conflicts waits a little (jittered, growing) before it runs
    # again, so that writers of several processes on one stream do not collide forever.
    not_before: float = 0.0

    def answer(self, result: R) -> None:
        if not self.future.done():
            self.future.set_result(result)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)

    @property
    def settled(self) -> bool:
        return self.future.done()

    def expired(self, now: float) -> bool:
        return now >= self.deadline


GroupWriter = Callable[[list[Pending[Any]]], list[Pending[Any]]]


def never_gather() -> float:
    return 0.0


class Committer:
    """A bounded queue in front of one writer thread (started on first use)."""

    def __init__(
        self,
        write_group: GroupWriter,
        *,
        queue_units_max: int,
        timeout_seconds: float,
        name: str = "ledger-committer",
        gather_seconds: Callable[[], float] = never_gather,
    ) -> None:
        self._write_group = write_group
        # How long the writer may wait, before it takes its next group, for the callers
        # its last group answered to come back (0: it takes what is queued at once).
        self._gather_seconds = gather_seconds
        self.queue_units_max = queue_units_max
        self.timeout_seconds = timeout_seconds
        self._name = name
        self._queue: deque[Pending[Any]] = deque()
        self._queued_units = 0
        # Commands that must run again go first in the next group, whatever the queue holds.
        self._retry: deque[Pending[Any]] = deque()
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._stopping = False
        self._thread: threading.Thread | None = None
        # Event loops that queued commands and will wake the writer once, after what
        # they are running now (``submit_async``).
        self._waking: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
        self.groups_written = 0
        # Commands queued so far, and how many of them were queued when the last group
        # was answered and how many that group answered (``_gathered``).
        self._arrived = 0
        self._arrived_at_answer = 0
        self._answered_last = 0
        # How long each recent group write took (seconds), for tests and metrics.
        self.write_seconds: deque[float] = deque(maxlen=WRITE_TIMES_KEPT)

    # Callers -----------------------------------------------------------------------------

    def submit(self, command: Any, units: int = 1) -> Any:
        """Queue one command and wait for its answer (raised when it is an error)."""
        result = self.submit_all([(command, units)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def submit_all(self, commands: Sequence[tuple[Any, int]]) -> list[Any]:
        """Queue these commands together (all or none) and wait for each answer. Every
        answer is a result or an exception instance, in order; only queueing itself
        (overload) raises."""
        deadline = time.monotonic() + self.timeout_seconds
        entries: list[Pending[Any]] = [
            Pending(command, units, deadline) for command, units in commands
        ]
        self._enqueue(entries)
        return [self._await(entry) for entry in entries]

    def _enqueue(self, entries: list[Pending[Any]], *, wake: bool = True) -> None:
        units = sum(entry.units for entry in entries)
        with self._lock:
            if self._stopping:
                raise OverloadedError("the ledger is shutting down")
            # An empty queue always takes a command, however large (it would never fit).
            if self._queued_units and self._queued_units + units > self.queue_units_max:
                raise OverloadedError(
                    f"the write queue is full ({self._queued_units} transfers waiting); "
                    "retry shortly"
                )
            self._queue.extend(entries)
            self._queued_units += units
            self._arrived += len(entries)
            self._start_writer()
            if wake:
                self._ready.notify()

    def _wake_writer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._waking.discard(loop)
        with self._lock:
            self._ready.notify()

    async def submit_async(self, command: Any, units: int = 1) -> Any:
        """``submit`` for a caller on an event loop: the loop is woken once, when the
        answer is there (no worker thread blocks for the wait)."""
        result = (await self.submit_all_async([(command, units)]))[0]
        if isinstance(result, BaseException):
            raise result
        return result

    async def submit_all_async(self, commands: Sequence[tuple[Any, int]]) -> list[Any]:
        """``submit_all`` for a caller on an event loop: queued together, answered
        together (each answer a result or an exception instance, in order); the loop
        is woken once, when the last of them is settled or at the deadline.

        The writer is woken once per turn of the loop, not per command: after the loop
        has run what is ready now (other requests read from their sockets meanwhile
        queue their commands too), so they share one write, and the loop is not
        interrupted by a writer that wakes for each of them and then waits for the
        interpreter lock the loop holds."""
        if not commands:
            return []
        deadline = time.monotonic() + self.timeout_seconds
        entries: list[Pending[Any]] = [
            Pending(command, units, deadline) for command, units in commands
        ]
        loop = asyncio.get_running_loop()
        self._enqueue(entries, wake=False)
        if loop not in self._waking:
            self._waking.add(loop)
            loop.call_soon(self._wake_writer, loop)
        settled = loop.create_future()
        # Settled from the writer thread, one entry at a time: ``next`` on a count is
        # atomic, so exactly the last one wakes the loop.
        settled_count = itertools.count(1)

        def one_settled(_: "Future[Any]") -> None:
            if next(settled_count) == len(entries):
                _wake_soon(loop, settled)

        for entry in entries:
            entry.future.add_done_callback(one_settled)
        timer = loop.call_later(max(0.0, deadline - time.monotonic()), _wake, settled)
        try:
            await settled
        finally:
            timer.cancel()
        return [self._answer_of(entry) for entry in entries]

    def _await(self, entry: Pending[Any]) -> Any:
        """The command's answer (a result or an error instance) within its deadline."""
        try:
            return _outcome(entry.future, max(0.0, entry.deadline - time.monotonic()))
        except FutureTimeoutError:
            pass
        return self._answer_of(entry)

    def _answer_of(self, entry: Pending[Any]) -> Any:
        """The answer of a command whose caller waits no longer: its own if it has one,
        else withdrawn (``WriteTimeoutError``) or, when already taken, unknown."""
        try:
            return _outcome(entry.future, 0)
        except FutureTimeoutError:
            pass
        if entry.future.cancel():  # still queued: withdrawn, it will never be written
            return _write_timeout(self.timeout_seconds)
        try:  # the writer took it just now: it may have finished meanwhile
            return _outcome(entry.future, 0)
        except FutureTimeoutError:
            return OutcomeUnknownError(
                f"the write did not finish within {self.timeout_seconds}s; it may or may not "
                "have been recorded: sending the same request again is safe"
            )

    @property
    def queued_units(self) -> int:
        """Transfers waiting to be taken (not counting the group being written)."""
        with self._lock:
            return self._queued_units

    # The writer ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread now rather than with the first command: a process that
        lowers its own threads' priority afterwards keeps its writer (which may hold the
        store's write lock that other processes' writes wait for) at the priority it had."""
        with self._lock:
            if not self._stopping:
                self._start_writer()

    def _start_writer(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            started = time.monotonic()
            try:
                again = self._write_group(group)
            except BaseException as error:  # noqa: BLE001  # a store fault: every waiter hears it
                for entry in group:
                    entry.fail(error)
                again = []
            self.groups_written += 1
            self.write_seconds.append(time.monotonic() - started)
            now = time.monotonic()
            for entry in again:
                entry.not_before = now + _backoff_seconds(entry.conflicts)
            with self._lock:
                self._retry.extend(entry for entry in again if not entry.settled)
                self._arrived_at_answer = self._arrived
                self._answered_last = len(group) - len(again)

    def _next_group(self) -> list[Pending[Any]] | None:
        with self._lock:
            while not self._queue and not self._due_retries():
                if self._stopping and not self._retry:
                    return None
                self._ready.wait(self._idle_wait())
            group: list[Pending[Any]] = []
            units = 0
            now = time.monotonic()
            for entry in self._due_retries():
                if group and units + entry.units > GROUP_UNITS_MAX:
                    break
                self._retry.remove(entry)
                group.append(entry)
                units += entry.units
            self._take_queued(group, units, now)
            if self._gathered(group):
                self._take_queued(group, sum(entry.units for entry in group), time.monotonic())
            return group

    def _gathered(self, group: list[Pending[Any]]) -> bool:
        """Wait (lock held, released while waiting) until as many commands as the last
        group answered were queued since, or the gather window passed: whether it waited.

        Several processes writing one PostgreSQL store commit one after another (the
        events table's lock is held to each commit's flush). A group taken at once
        holds only the callers that queued while the last write was in flight; those
        it just answered come back a moment later and wait out a whole write of this
        process and one of the other's. Their callers split into two halves that
        alternate, and each process writes half-size groups at the same commit rate.
        Waiting for them costs nothing the lock wait would not have cost anyway."""
        seconds = self._gather_seconds()
        if seconds <= 0 or self._stopping or not group:
            return False
        until = time.monotonic() + seconds
        waited = False
        while self._arrived - self._arrived_at_answer < self._answered_last:
            left = until - time.monotonic()
            if left <= 0:
                break
            self._ready.wait(left)
            waited = True
        return waited

    def top_up(self, group: list[Pending[Any]]) -> None:
        """Add to ``group`` (in place, up to the group size) what was queued since it
        was taken: the writer calls this after waiting for the store's write lock, so
        that what arrived during the wait shares the write instead of waiting for the
        next one."""
        with self._lock:
            self._take_queued(group, sum(entry.units for entry in group), time.monotonic())

    def _take_queued(self, group: list[Pending[Any]], units: int, now: float) -> None:
        while self._queue and (not group or units + self._queue[0].units <= GROUP_UNITS_MAX):
            entry = self._queue.popleft()
            self._queued_units -= entry.units
            # Taken: from here on its caller can no longer withdraw it.
            if not entry.future.set_running_or_notify_cancel():
                continue  # its caller gave up while it waited: dropped, nothing written
            if entry.expired(now):
                entry.fail(_write_timeout(self.timeout_seconds))
                continue
            group.append(entry)
            units += entry.units

    def _due_retries(self) -> list[Pending[Any]]:
        now = time.monotonic()
        return [entry for entry in self._retry if entry.not_before <= now]

    def _idle_wait(self) -> float:
        if not self._retry:
            return IDLE_WAKE_SECONDS
        earliest = min(entry.not_before for entry in self._retry)
        return max(0.0, min(IDLE_WAKE_SECONDS, earliest - time.monotonic()))

    def close(self) -> None:
        """Finish what is queued, then stop the writer."""
        with self._lock:
            self._stopping = True
            self._ready.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_JOIN_SECONDS)


def _backoff_seconds(conflicts: int) -> float:
    ceiling = min(RETRY_BACKOFF_CAP_SECONDS, RETRY_BACKOFF_BASE_SECONDS * 2 ** min(conflicts, 16))
    return random.uniform(0, ceiling)  # jitter, not security


def _wake_soon(loop: asyncio.AbstractEventLoop, settled: "asyncio.Future[None]") -> None:
    """From the writer thread: wake the loop that waits for this answer."""
    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_wake, settled)


def _wake(settled: "asyncio.Future[None]") -> None:
    if not settled.done():
        settled.set_result(None)


def _outcome(future: "Future[Any]", timeout: float) -> Any:
    """The future's result, or its exception as a value (raises only on timeout)."""
    try:
        return future.result(timeout=timeout)
    except CancelledError:  # withdrawn by the writer itself: taken after its deadline
        raise FutureTimeoutError from None
    except FutureTimeoutError:
        raise
    except BaseException as error:  # noqa: BLE001  # the command's own answer, handed back
        return error


def _write_timeout(timeout_seconds: float) -> WriteTimeoutError:
    return WriteTimeoutError(
        f"the write waited {timeout_seconds}s in the queue without being taken; nothing was written"
    )
