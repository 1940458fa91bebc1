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
same id is safe because every write is idempotent on its id). A command sent back to run
again whose deadline has passed is not run again (``unwritten_at_deadline``).
"""

import _thread
import asyncio
import contextlib
import functools
import itertools
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar

import structlog

from app.domain.errors import OutcomeUnknownError, OverloadedError, WriteTimeoutError

log = structlog.get_logger(__name__)

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
# After a gather wait that ran out (the answered callers did not all come back in time),
# the writer takes that many of its next groups that would have waited at once: 1, 3, 7,
# then 15 after each further wait in a row that ran out (``Committer._gathered``).
GATHER_SKIPS_MAX: Final = 15


# A queued command's life: waiting in the queue (its caller may still withdraw it), taken
# by the writer (it may be written: its caller can no longer withdraw it), and at the end
# withdrawn (never written), answered or failed.
_WAITING: Final = 0
_TAKEN: Final = 1
_WITHDRAWN: Final = 2
_ANSWERED: Final = 3
_FAILED: Final = 4
# Guards every command's move from one state to the next (the writer's and its caller's
# moves race); held for a few instructions at a time.
_SETTLING: Final = threading.Lock()


class _NoAnswer:
    """What ``Pending.outcome`` gives while a command has no answer."""


NO_ANSWER: Final = _NoAnswer()


class Pending(Generic[R]):
    """One queued command: what to run, for whom, until when, and its answer once given.

    Its own small future rather than ``concurrent.futures.Future`` (which builds a
    condition variable and a reentrant lock for each command): a caller on an event
    loop is told through one callback, a thread caller waits on a lock made only for it
    (held until the answer releases it: a ``threading.Event`` would build a condition
    variable, whose constructor raises and formats three ``AttributeError``s on a plain
    lock, and wait and set through some ten Python calls)."""

    __slots__ = (
        "_event",
        "_listener",
        "_state",
        "_value",
        "command",
        "conflicts",
        "deadline",
        "not_before",
        "queued_after",
        "units",
    )

    def __init__(self, command: Any, units: int, deadline: float) -> None:
        self.command = command  # the ledger's command object; opaque to the committer
        self.units = units
        self.deadline = deadline
        # Conflicts this command met so far (its own retry budget, kept by the ledger).
        self.conflicts = 0
        # A command that meets conflicts waits a little (jittered, growing) before it
        # runs again, so that writers of several processes on one stream do not collide
        # forever.
        self.not_before = 0.0
        # How many groups the writer had taken when this command was queued.
        self.queued_after = 0
        self._state = _WAITING
        self._value: Any = None
        self._listener: Callable[[], None] | None = None
        self._event: _thread.LockType | None = None

    def answer(self, result: R) -> None:
        self._settle(result, _ANSWERED)

    def fail(self, error: BaseException) -> None:
        self._settle(error, _FAILED)

    def _settle(self, value: Any, state: int) -> None:
        with _SETTLING:
            if self._state >= _WITHDRAWN:  # withdrawn or answered already: the first stays
                return
            self._value = value
            self._state = state
            listener, event = self._listener, self._event
        if listener is not None:
            listener()
        if event is not None:
            event.release()  # its waiter's lock (taken when made): released once, here

    @property
    def settled(self) -> bool:
        """Answered, failed or withdrawn: nothing more will happen to it."""
        return self._state >= _WITHDRAWN

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def fail_if_expired(self, now: float, timeout_seconds: float) -> bool:
        """A command taken and not yet run again (after a conflict) whose deadline has
        passed is not run again: it fails ``unwritten_at_deadline`` (True), so that no
        write is made for a caller who stopped waiting."""
        if not self.expired(now):
            return False
        self.fail(unwritten_at_deadline(timeout_seconds))
        return True

    def take(self) -> bool:
        """The writer takes it (from here on its caller can no longer withdraw it):
        False when its caller withdrew it first."""
        with _SETTLING:
            if self._state == _WITHDRAWN:
                return False
            self._state = _TAKEN
            return True

    def withdraw(self) -> bool:
        """Its caller gives up: True when it is not written (it was still waiting, or
        withdrawn already), False when the writer has it or has answered it."""
        with _SETTLING:
            if self._state not in (_WAITING, _WITHDRAWN):
                return False
            self._state = _WITHDRAWN
            listener, self._listener = self._listener, None
        if listener is not None:
            listener()
        return True

    def outcome(self) -> Any:
        """Its answer (a result, or the error as a value), or ``NO_ANSWER``."""
        if self._state >= _ANSWERED:
            return self._value
        return NO_ANSWER

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` once it is settled (at once if it is; else from the thread
        that settles it)."""
        with _SETTLING:
            if self._state < _WITHDRAWN:
                self._listener = listener
                return
        listener()

    def wait(self, timeout: float) -> None:
        """Block until it is settled or ``timeout`` seconds passed."""
        with _SETTLING:
            if self._state >= _WITHDRAWN:
                return
            if self._event is None:
                self._event = threading.Lock()
                self._event.acquire()
            event = self._event
        if event.acquire(timeout=timeout):
            event.release()  # settled: a later wait returns at once too


GroupWriter = Callable[[list[Pending[Any]]], list[Pending[Any]]]


def never_gather() -> float:
    return 0.0


def raised_or_given(answers: Sequence[Any]) -> Any:
    """The one answer of a single command's ``submit_all``: raised when it is an error."""
    (result,) = answers
    if isinstance(result, BaseException):
        raise result
    return result


class CommandQueue(Protocol):
    """Where the ledger hands its write commands and waits for their answers: its own
    ``Committer``, or the writer process's (``app.writer.client.WriterClient``)."""

    def submit(self, command: Any, units: int = 1) -> Any: ...

    def submit_all(self, commands: Sequence[tuple[Any, int]]) -> list[Any]: ...

    async def submit_async(self, command: Any, units: int = 1) -> Any: ...

    async def submit_all_async(self, commands: Sequence[tuple[Any, int]]) -> list[Any]: ...

    def close(self) -> None: ...


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
        # The idle writer sleeps on this lock (held by it while awake, ``_sleep``);
        # whoever queues for a sleeping writer releases it, once (``_wake_up``). Not a
        # ``threading.Condition``, whose wait and notify are some fifteen Python calls
        # (a new lock per wait) on every group, the notify on the caller's thread.
        self._wake = threading.Lock()
        self._wake.acquire()
        self._asleep = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        # The hand-off to the callers of the event loop that queued last (``submit_async``).
        self._handoff: _LoopHandOff | None = None
        self.groups_written = 0
        # Groups taken so far, and the most groups any command saw taken, from its
        # queueing to (and with) the one that took it: 1 for a command taken by the
        # next group, whatever the machine's speed (a fairness measure in writes, not
        # seconds; a retried command counts the groups it waited through in all).
        self.groups_taken = 0
        self.most_groups_waited = 0
        # Commands queued so far, and how many of them were queued when the last group
        # was answered and how many that group answered (``_gathered``); whether the
        # group being written has marked its answers yet (``answering``).
        self._arrived = 0
        self._arrived_at_answer = 0
        self._answered_last = 0
        self._answers_marked = False
        # How many groups that would wait are taken at once after the last gather wait
        # that ran out, and how many of them are left (``_gathered``); waits that ran
        # out and groups taken at once so far.
        self._gather_skips = 0
        self._gather_skips_left = 0
        self.gathers_run_out = 0
        self.gathers_skipped = 0
        # How long each recent group write took (seconds), for tests and metrics.
        self.write_seconds: deque[float] = deque(maxlen=WRITE_TIMES_KEPT)

    # Callers -----------------------------------------------------------------------------

    def submit(self, command: Any, units: int = 1) -> Any:
        """Queue one command and wait for its answer (raised when it is an error)."""
        return raised_or_given(self.submit_all([(command, units)]))

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

    def _enqueue(self, entries: Sequence[Pending[Any]], *, wake: bool = True) -> None:
        units = entries[0].units if len(entries) == 1 else sum(entry.units for entry in entries)
        with self._lock:
            if self._stopping:
                raise OverloadedError("the ledger is shutting down")
            # An empty queue always takes a command, however large (it would never fit).
            if self._queued_units and self._queued_units + units > self.queue_units_max:
                raise OverloadedError(
                    f"the write queue is full ({self._queued_units} transfers waiting); "
                    "retry shortly"
                )
            for entry in entries:
                entry.queued_after = self.groups_taken
            self._queue.extend(entries)
            self._queued_units += units
            self._arrived += len(entries)
            self._start_writer()
            if wake:
                self._wake_up()

    def _handoff_on(self, loop: asyncio.AbstractEventLoop) -> "_LoopHandOff":
        """The hand-off of the caller's loop, with the writer's wake-up due at the end
        of this turn of the loop (once per turn, for every command queued in it)."""
        handoff = self._handoff
        if handoff is None or handoff.loop is not loop:
            handoff = self._handoff = _LoopHandOff(loop)
        if not handoff.writer_wake_due:
            handoff.writer_wake_due = True
            loop.call_soon(self._wake_writer, handoff)
        return handoff

    def _wake_writer(self, handoff: "_LoopHandOff") -> None:
        handoff.writer_wake_due = False
        with self._lock:
            self._wake_up()

    async def submit_async(self, command: Any, units: int = 1) -> Any:
        """``submit`` for a caller on an event loop: the loop is woken once, when the
        answer is there (no worker thread blocks for the wait). The single command's
        own path (every HTTP write but a batch): ``submit_all_async`` without its lists."""
        deadline = time.monotonic() + self.timeout_seconds
        entry: Pending[Any] = Pending(command, units, deadline)
        loop = asyncio.get_running_loop()
        self._enqueue((entry,), wake=False)
        handoff = self._handoff_on(loop)
        settled = loop.create_future()
        handoff.watch(settled, deadline)
        entry.listen(functools.partial(handoff.post, settled))
        await settled
        result = self._answer_of(entry)
        if isinstance(result, BaseException):
            raise result
        return result

    async def submit_all_async(
        self, commands: Sequence[tuple[Any, int]], *, deadline: float | None = None
    ) -> list[Any]:
        """``submit_all`` for a caller on an event loop: queued together, answered
        together (each answer a result or an exception instance, in order); the loop
        is woken once, when the last of them is settled or at the deadline (``deadline``,
        a ``time.monotonic`` time, when the caller brings its own: the writer process
        keeps each API worker's caller's).

        The writer is woken once per turn of the loop, not per command: after the loop
        has run what is ready now (other requests read from their sockets meanwhile
        queue their commands too), so they share one write, and the loop is not
        interrupted by a writer that wakes for each of them and then waits for the
        interpreter lock the loop holds."""
        if not commands:
            return []
        if deadline is None:
            deadline = time.monotonic() + self.timeout_seconds
        entries: list[Pending[Any]] = [
            Pending(command, units, deadline) for command, units in commands
        ]
        await self._settled_on_loop(entries, deadline)
        return [self._answer_of(entry) for entry in entries]

    def submit_all_then(
        self,
        commands: Sequence[tuple[Any, int]],
        deadline: float,
        then: Callable[[list[Any]], object],
    ) -> None:
        """``submit_all_async`` without a task of its own: ``then`` is called on the
        caller's loop with each command's answer, once the last is settled or at
        ``deadline`` (a ``time.monotonic`` time). For the writer process, which would
        otherwise make a task for each call it takes. Only queueing itself (overload)
        raises, here."""
        if not commands:
            asyncio.get_running_loop().call_soon(then, [])
            return
        entries: list[Pending[Any]] = [
            Pending(command, units, deadline) for command, units in commands
        ]
        settled = self._settled_on_loop(entries, deadline)
        settled.add_done_callback(lambda _: then([self._answer_of(entry) for entry in entries]))

    def _settled_on_loop(
        self, entries: Sequence[Pending[Any]], deadline: float
    ) -> "asyncio.Future[None]":
        """Queue ``entries`` together from the running loop: a future of that loop, done
        when the last of them is settled or at ``deadline``."""
        loop = asyncio.get_running_loop()
        self._enqueue(entries, wake=False)
        handoff = self._handoff_on(loop)
        settled = loop.create_future()
        handoff.watch(settled, deadline)
        if len(entries) == 1:
            entries[0].listen(functools.partial(handoff.post, settled))
        else:
            # Settled from the writer thread, one entry at a time: ``next`` on a count
            # is atomic, so exactly the last one wakes the loop.
            settled_count = itertools.count(1)

            def one_settled() -> None:
                if next(settled_count) == len(entries):
                    handoff.post(settled)

            for entry in entries:
                entry.listen(one_settled)
        return settled

    def _await(self, entry: Pending[Any]) -> Any:
        """The command's answer (a result or an error instance) within its deadline."""
        entry.wait(max(0.0, entry.deadline - time.monotonic()))
        return self._answer_of(entry)

    def _answer_of(self, entry: Pending[Any]) -> Any:
        """The answer of a command whose caller waits no longer: its own if it has one,
        else withdrawn (``WriteTimeoutError``) or, when already taken, unknown."""
        outcome = entry.outcome()
        if outcome is not NO_ANSWER:
            return outcome
        if entry.withdraw():  # still queued: withdrawn, it will never be written
            return _write_timeout(self.timeout_seconds)
        outcome = entry.outcome()  # the writer took it just now: it may have finished
        if outcome is not NO_ANSWER:
            return outcome
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
            if not group:  # every command it took was withdrawn or expired: nothing to write
                continue
            started = time.monotonic()
            self._answers_marked = False
            try:
                again = self._write_group(group)
            except BaseException as error:  # noqa: BLE001  # a store fault: every waiter hears it
                self.answering()
                # Said in the log too: a run of failed groups (an outage) leaves a trace
                # beyond the callers' 503s.
                log.warning(
                    "committer.group_failed",
                    commands=len(group),
                    error=repr(error),
                    seconds=round(time.monotonic() - started, 3),
                )
                for entry in group:
                    entry.fail(error)
                again = []
            self.groups_written += 1
            now = time.monotonic()
            self.write_seconds.append(now - started)
            for entry in again:
                entry.not_before = now + _backoff_seconds(entry.conflicts)
            self.answering()  # a group writer that did not say when it answered
            with self._lock:
                if again:
                    self._retry.extend(entry for entry in again if not entry.settled)
                self._answered_last = len(group) - len(again)

    def answering(self) -> None:
        """On the writer thread, as its group's callers are about to be answered (the
        group writer calls it once its write is final; else the writer, after it): the
        commands queued from now on are those callers coming back (``_gathered``). Said
        before the answers, not after the group writer returns, because what it does
        after them (snapshots, a store write of their own) can take as long as the
        callers take to send their next command, which would then count as queued
        before and be waited for in vain. The first call per group counts."""
        if self._answers_marked:
            return
        self._answers_marked = True
        with self._lock:
            self._arrived_at_answer = self._arrived

    def _next_group(self) -> list[Pending[Any]] | None:
        with self._lock:
            while not self._queue and not (self._retry and self._due_retries()):
                if self._stopping and not self._retry:
                    return None
                self._sleep(self._idle_wait())
            self.groups_taken += 1
            group: list[Pending[Any]] = []
            units = 0
            now = time.monotonic()
            for entry in self._due_retries() if self._retry else ():
                if group and units + entry.units > GROUP_UNITS_MAX:
                    break
                self._retry.remove(entry)
                if entry.fail_if_expired(now, self.timeout_seconds):
                    continue
                group.append(entry)
                units += entry.units
            self._take_queued(group, units, now)
            if self._gathered(group):
                self._take_queued(group, sum(entry.units for entry in group), time.monotonic())
            self._count_waits(group, 0)
            return group

    def _count_waits(self, group: list[Pending[Any]], start: int) -> None:
        """``most_groups_waited`` with the commands of ``group`` from ``start`` on."""
        most = self.most_groups_waited
        for index in range(start, len(group)):
            waited = self.groups_taken - group[index].queued_after
            most = max(most, waited)
        self.most_groups_waited = most

    def _gathered(self, group: list[Pending[Any]]) -> bool:
        """Wait (lock held, released while waiting) until as many commands as the last
        group answered were queued since, or the gather window passed: whether it waited.

        Several processes writing one PostgreSQL store commit one after another (the
        writers' lock is held to each commit's flush). A group taken at once
        holds only the callers that queued while the last write was in flight; those
        it just answered come back a moment later and wait out a whole write of this
        process and one of the other's. Their callers split into two halves that
        alternate, and each process writes half-size groups at the same commit rate.
        Waiting for them costs nothing the lock wait would not have cost anyway.

        Callers that do not come straight back (they pause between commands) are
        waited for in vain, and every caller of the group waits with them. So a wait
        that ran out makes the writer take its next group that would wait at once, and
        after more in a row the next 3, 7, then 15 (``GATHER_SKIPS_MAX``); a wait that
        ends with its callers back starts over."""
        seconds = self._gather_seconds()
        if seconds <= 0 or self._stopping or not group or self._back():
            return False
        if self._gather_skips_left:
            self._gather_skips_left -= 1
            self.gathers_skipped += 1
            return False
        until = time.monotonic() + seconds
        waited = False
        while not self._back():
            left = until - time.monotonic()
            if left <= 0:
                self.gathers_run_out += 1
                self._gather_skips = min(GATHER_SKIPS_MAX, 2 * self._gather_skips + 1)
                self._gather_skips_left = self._gather_skips
                return waited
            self._sleep(left)
            waited = True
        self._gather_skips = 0
        return waited

    def _back(self) -> bool:
        """Whether as many commands as the last group answered were queued since."""
        return self._arrived - self._arrived_at_answer >= self._answered_last

    def top_up(self, group: list[Pending[Any]]) -> None:
        """Add to ``group`` (in place, up to the group size) what was queued since it
        was taken: the writer calls this after waiting for the store's write lock, so
        that what arrived during the wait shares the write instead of waiting for the
        next one."""
        with self._lock:
            start = len(group)
            self._take_queued(group, sum(entry.units for entry in group), time.monotonic())
            self._count_waits(group, start)

    def _take_queued(self, group: list[Pending[Any]], units: int, now: float) -> None:
        while self._queue and (not group or units + self._queue[0].units <= GROUP_UNITS_MAX):
            entry = self._queue.popleft()
            self._queued_units -= entry.units
            # Taken: from here on its caller can no longer withdraw it.
            if not entry.take():
                continue  # its caller gave up while it waited: dropped, nothing written
            if entry.expired(now):
                entry.fail(_write_timeout(self.timeout_seconds))
                continue
            group.append(entry)
            units += entry.units

    def _sleep(self, timeout: float) -> None:
        """The writer waits (``_lock`` held: released while it sleeps, held again after,
        as ``Condition.wait``) until woken or ``timeout`` seconds passed."""
        self._asleep = True
        self._lock.release()
        try:
            woken = self._wake.acquire(timeout=timeout)
        finally:
            self._lock.acquire()
        if woken:
            return  # the waker cleared ``_asleep``; the wake lock is the writer's again
        if self._asleep:
            self._asleep = False  # nobody woke it: the wake lock is still held
        else:
            # Woken just after its timeout: take back the lock the waker released.
            self._wake.acquire(blocking=False)

    def _wake_up(self) -> None:
        """Wake the writer if it sleeps (``_lock`` held): once, however many callers."""
        if self._asleep:
            self._asleep = False
            self._wake.release()

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
            self._wake_up()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(STOP_JOIN_SECONDS)


def _backoff_seconds(conflicts: int) -> float:
    ceiling = min(RETRY_BACKOFF_CAP_SECONDS, RETRY_BACKOFF_BASE_SECONDS * 2 ** min(conflicts, 16))
    return random.uniform(0, ceiling)  # jitter, not security


class _LoopHandOff:
    """The committer's side of one event loop: the writer woken once per turn of the
    loop; one timer for all its callers' deadlines (they come in order: every caller
    gets the same timeout), not one per caller; and the callers the writer settled woken
    by one callback on the loop for however many it settled meanwhile, not one each."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.writer_wake_due = False
        self._lock = threading.Lock()
        self._posted: list[asyncio.Future[None]] = []
        # (deadline, waiter), in the order the callers came.
        self._deadlines: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def watch(self, waiter: "asyncio.Future[None]", deadline: float) -> None:
        """On the loop: wake ``waiter`` at ``deadline`` if nothing woke it before."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()
        deadlines.append((deadline, waiter))
        if deadline < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        self._timer_at = deadline
        self._timer = self.loop.call_later(max(0.0, deadline - time.monotonic()), self._expire)

    def _expire(self) -> None:
        """On the loop, at the earliest deadline: wake those whose deadline passed."""
        self._timer, self._timer_at = None, math.inf
        now = time.monotonic()
        left: deque[tuple[float, asyncio.Future[None]]] = deque()
        for deadline, waiter in self._deadlines:
            if waiter.done():
                continue
            if deadline <= now:
                waiter.set_result(None)
            else:
                left.append((deadline, waiter))
        self._deadlines = left
        if left:
            self._arm(min(deadline for deadline, _ in left))

    def post(self, waiter: "asyncio.Future[None]") -> None:
        """From any thread (the writer's): wake ``waiter`` on its loop."""
        with self._lock:
            self._posted.append(waiter)
            if len(self._posted) > 1:
                return  # a delivery is already on its way and will take this one too
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            posted, self._posted = self._posted, []
        for waiter in posted:
            if not waiter.done():
                waiter.set_result(None)


def _write_timeout(timeout_seconds: float) -> WriteTimeoutError:
    return WriteTimeoutError(
        f"the write waited {timeout_seconds}s in the queue without being taken; nothing was written"
    )


def unwritten_at_deadline(timeout_seconds: float) -> WriteTimeoutError:
    """The answer of a command the writer took but then ran no more, its deadline passed
    while it waited to run again (after a conflict with another process's write)."""
    return WriteTimeoutError(
        f"the write's deadline ({timeout_seconds}s) passed while it waited to run again after "
        "another process's write; nothing was written: sending the same request again is safe"
    )
