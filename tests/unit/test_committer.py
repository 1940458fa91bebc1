"""The committer on its own: a bounded queue, one writer thread, per-caller deadlines.

The group writer here is a fake that records what it was given and can be held up at
will (a store that hangs), so each answer can be pinned to the moment it was given.
"""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import pytest
from structlog.testing import capture_logs

import app.application.committer as committer_module
from app.application.committer import Committer, Pending
from app.domain.errors import OutcomeUnknownError, OverloadedError, WriteTimeoutError
from tests.support.waiting import eventually

WAIT_SECONDS: Final = 10.0
SHORT_TIMEOUT_SECONDS: Final = 0.5
# The held store never answers: a caller answered at all was answered by its deadline;
# the slack only absorbs a loaded machine's scheduling delays.
DEADLINE_SLACK_SECONDS: Final = 5.0
TINY_IDLE_SECONDS: Final = 0.0005
STRESS_THREADS: Final = 8
STRESS_COMMANDS: Final = 150
# Callers keeping the queue busy around the one a test watches.
BUSY_CALLERS: Final = 3


class FakeStore:
    """Answers each command with its own value; ``hold`` makes the next writes hang."""

    def __init__(self) -> None:
        self.groups: list[list[Any]] = []
        self.writer_threads: set[str] = set()
        self.released = threading.Event()
        self.released.set()
        self.entered = threading.Event()
        self.write_seconds = 0.0

    def hold(self) -> None:
        self.released.clear()
        self.entered.clear()

    def write_group(self, group: list[Pending[Any]]) -> list[Pending[Any]]:
        self.writer_threads.add(threading.current_thread().name)
        self.entered.set()
        assert self.released.wait(WAIT_SECONDS)
        time.sleep(self.write_seconds)
        self.groups.append([entry.command for entry in group])
        for entry in group:
            entry.answer(("done", entry.command))
        return []


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


def committer_for(
    store: FakeStore, *, queue_max: int = 100, timeout: float = WAIT_SECONDS
) -> Committer:
    return Committer(store.write_group, queue_units_max=queue_max, timeout_seconds=timeout)


def test_the_writer_thread_writes_and_never_a_caller(store: FakeStore) -> None:
    committer = committer_for(store)
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(committer.submit, range(20)))
    assert answers == [("done", number) for number in range(20)]
    assert store.writer_threads == {"ledger-committer"}
    committer.close()


def queued_behind_a_write(store: FakeStore, committer: Committer, rest: int) -> list[Any]:
    """ "first" written alone while ``rest`` more commands queue behind it: the answers."""
    store.hold()
    with ThreadPoolExecutor(max_workers=rest + 1) as pool:
        first = pool.submit(committer.submit, "first")
        assert store.entered.wait(WAIT_SECONDS)
        queued = [pool.submit(committer.submit, number) for number in range(rest)]
        while committer.queued_units < rest:
            time.sleep(0.001)
        store.released.set()
        return [future.result(WAIT_SECONDS) for future in [first, *queued]]


def test_commands_waiting_together_share_one_write(store: FakeStore) -> None:
    committer = committer_for(store)
    answers = queued_behind_a_write(store, committer, 5)
    assert answers == [("done", "first"), *(("done", number) for number in range(5))]
    assert store.groups == [["first"], [0, 1, 2, 3, 4]]
    committer.close()


def test_a_caller_returns_when_its_own_write_is_done_not_when_the_queue_is_empty(
    store: FakeStore,
) -> None:
    """Regression (defect 1): the old leader kept writing others' transfers until the
    queue was empty. Here other callers keep the queue busy, the caller's command is
    taken by the first write after the one in progress when it queued, and every write
    after its own hangs with commands still waiting: the caller is answered all the
    same. No clock is read: a loaded machine cannot make it fail, and the old leader
    would never have returned."""
    taken: list[list[Any]] = []

    def write_then_hang_after_mine(group: list[Pending[Any]]) -> list[Pending[Any]]:
        taken.append([entry.command for entry in group])
        again = store.write_group(group)
        if "mine" in taken[-1]:
            store.hold()  # the next write hangs ...
            # ... with a caller this write answered already queued again behind it.
            assert eventually(lambda: committer.queued_units > 0, WAIT_SECONDS)
        return again

    committer = Committer(
        write_then_hang_after_mine, queue_units_max=100, timeout_seconds=WAIT_SECONDS
    )
    stop = threading.Event()

    def keep_queue_busy() -> None:
        while not stop.is_set():
            committer.submit("background")

    with ThreadPoolExecutor(max_workers=BUSY_CALLERS + 1) as pool:
        busy = [pool.submit(keep_queue_busy) for _ in range(BUSY_CALLERS)]
        assert eventually(lambda: len(taken) >= BUSY_CALLERS, WAIT_SECONDS), "no steady load"
        store.hold()
        assert store.entered.wait(WAIT_SECONDS)  # a write in progress (held there)
        in_progress = len(taken) - 1
        mine = pool.submit(committer.submit, "mine")
        # Every caller not in the write in progress has queued its command, "mine" too.
        waiting = BUSY_CALLERS + 1 - len(taken[in_progress])
        assert eventually(lambda: committer.queued_units == waiting, WAIT_SECONDS)
        store.released.set()
        assert mine.result(WAIT_SECONDS) == ("done", "mine")
        # The write after the caller's own started: it hangs until released below.
        assert eventually(lambda: len(taken) > in_progress + 2, WAIT_SECONDS)
        stop.set()
        store.released.set()
        for caller in busy:
            caller.result(WAIT_SECONDS)
    # Taken by the first write after the one in progress: two writes, not a queue's worth
    # (counted in groups, not seconds: a loaded machine stalls every thread alike).
    assert "mine" in taken[in_progress + 1]
    assert committer.most_groups_waited == 1
    committer.close()


def test_a_full_queue_answers_overloaded_at_once_and_loses_nothing_it_accepted(
    store: FakeStore,
) -> None:
    committer = committer_for(store, queue_max=3)
    store.hold()
    with ThreadPoolExecutor(max_workers=5) as pool:
        in_flight = pool.submit(committer.submit, "in-flight")
        assert store.entered.wait(WAIT_SECONDS)
        accepted = [pool.submit(committer.submit, number) for number in range(3)]
        while committer.queued_units < 3:
            time.sleep(0.001)
        started = time.monotonic()
        with pytest.raises(OverloadedError) as refused:
            committer.submit("one too many")
        # At once: a caller waiting for room would have waited while the store hangs,
        # to its deadline (the clock only tells the two apart, with a loaded machine's
        # slack to spare).
        assert time.monotonic() - started < WAIT_SECONDS - DEADLINE_SLACK_SECONDS
        assert refused.value.code == "overloaded"
        store.released.set()
        assert in_flight.result(WAIT_SECONDS) == ("done", "in-flight")
        assert [future.result(WAIT_SECONDS)[1] for future in accepted] == [0, 1, 2]
    written = [command for group in store.groups for command in group]
    assert sorted(map(str, written)) == sorted(["in-flight", "0", "1", "2"])
    assert "one too many" not in written
    committer.close()


def test_a_command_still_queued_at_its_deadline_answers_write_timeout_and_is_never_written(
    store: FakeStore,
) -> None:
    committer = committer_for(store, timeout=SHORT_TIMEOUT_SECONDS)
    store.hold()
    with ThreadPoolExecutor(max_workers=2) as pool:
        taken = pool.submit(committer.submit, "taken")
        assert store.entered.wait(WAIT_SECONDS)
        started = time.monotonic()
        with pytest.raises(WriteTimeoutError):
            committer.submit("queued")
        assert time.monotonic() - started < SHORT_TIMEOUT_SECONDS + DEADLINE_SLACK_SECONDS
        with pytest.raises(OutcomeUnknownError) as unknown:
            taken.result(WAIT_SECONDS)
        assert "same request again is safe" in unknown.value.detail
        store.released.set()
    # The writer recovers: the next command is written, the withdrawn one never was, and
    # the group it would have been in is not handed to the writer empty (the ledger's
    # group writer reads its callers' deadlines: an empty group has none).
    while committer.queued_units:  # the writer has taken (and dropped) the withdrawn one
        time.sleep(0.001)
    assert committer.submit("after") == ("done", "after")
    assert store.groups == [["taken"], ["after"]]
    committer.close()


def test_a_hung_write_answers_outcome_unknown_within_the_deadline(store: FakeStore) -> None:
    committer = committer_for(store, timeout=SHORT_TIMEOUT_SECONDS)
    store.hold()
    started = time.monotonic()
    with pytest.raises(OutcomeUnknownError) as unknown:
        committer.submit("stuck")
    assert (
        SHORT_TIMEOUT_SECONDS
        <= time.monotonic() - started
        < SHORT_TIMEOUT_SECONDS + DEADLINE_SLACK_SECONDS
    )
    assert unknown.value.code == "outcome_unknown"
    store.released.set()
    assert committer.submit("next") == ("done", "next")
    committer.close()


def test_a_write_that_fails_hands_its_error_to_every_caller_of_the_group(
    store: FakeStore,
) -> None:
    class StoreDownError(Exception):
        pass

    def failing(group: list[Pending[Any]]) -> list[Pending[Any]]:
        raise StoreDownError("disk on fire")

    committer = Committer(failing, queue_units_max=10, timeout_seconds=WAIT_SECONDS)
    with capture_logs() as logged:
        with pytest.raises(StoreDownError):
            committer.submit("doomed")
        answers = committer.submit_all([("a", 1), ("b", 1)])
    assert all(isinstance(answer, StoreDownError) for answer in answers)
    committer.close()
    # Each failed group is in the log, with its size and error.
    failed = [line for line in logged if line["event"] == "committer.group_failed"]
    assert [(line["commands"], line["log_level"]) for line in failed] == [
        (1, "warning"),
        (2, "warning"),
    ]
    assert all("disk on fire" in line["error"] for line in failed)


class SendsBack:
    """A group writer that sends "contended" back to run again (as the ledger does with a
    command whose write met a conflict) up to ``times`` times (None: every time), when
    ``late`` only once its caller's deadline has passed; it answers every other command
    with itself. ``seen``: each group's commands."""

    def __init__(self, times: int | None, *, late: bool = False) -> None:
        self.times = times
        self.late = late
        self.seen: list[list[Any]] = []

    def write_group(self, group: list[Pending[Any]]) -> list[Pending[Any]]:
        self.seen.append([entry.command for entry in group])
        again = []
        for entry in group:
            if entry.command == "contended" and (
                self.times is None or entry.conflicts < self.times
            ):
                if self.late:
                    time.sleep(max(0.0, entry.deadline - time.monotonic()) + TINY_IDLE_SECONDS)
                entry.conflicts += 1
                again.append(entry)
            else:
                entry.answer(entry.command)
        return again


def test_commands_sent_back_for_a_retry_run_again_in_a_later_group() -> None:
    store = SendsBack(times=1)
    committer = Committer(store.write_group, queue_units_max=10, timeout_seconds=WAIT_SECONDS)
    assert committer.submit_all([("contended", 1), ("calm", 1)]) == ["contended", "calm"]
    assert store.seen[0] == ["contended", "calm"]
    assert ["contended"] in store.seen[1:]
    committer.close()


def test_a_command_sent_back_after_its_deadline_is_not_run_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its write met a conflict and came back after the caller's deadline: the writer
    # does not run it again (no work for a caller who stopped waiting; nothing of it is
    # written). The caller hears outcome_unknown when it woke at its deadline before the
    # writer took the sent-back command, write_timeout (nothing written) when the writer
    # dropped it first: which comes first is the scheduler's choice on a loaded machine.
    monkeypatch.setattr(committer_module, "_backoff_seconds", lambda conflicts: 0.0)
    store = SendsBack(times=None, late=True)
    committer = Committer(
        store.write_group, queue_units_max=10, timeout_seconds=SHORT_TIMEOUT_SECONDS
    )
    with pytest.raises((OutcomeUnknownError, WriteTimeoutError)):
        committer.submit("contended")
    assert eventually(lambda: committer.groups_written >= 1, WAIT_SECONDS)
    # The next group is taken once the sent-back command was (or was not) queued again.
    answer = committer.submit("next")
    committer.close()
    assert answer == "next"
    seen = store.seen
    assert [commands.count("contended") for commands in seen] == [1] + [0] * (len(seen) - 1)


class LockWaitingStore:
    """A group writer that first waits (as for the store's write lock) until ``waiting``
    commands have queued behind it, then tops its group up and writes (or fails)."""

    def __init__(self, waiting: int, error: Exception | None = None) -> None:
        self.committer: Committer | None = None
        self.waiting = waiting
        self.error = error
        self.groups: list[list[Any]] = []
        self.entered = threading.Event()

    def write_group(self, group: list[Pending[Any]]) -> list[Pending[Any]]:
        assert self.committer is not None
        self.entered.set()
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.groups and self.committer.queued_units < self.waiting:
            assert time.monotonic() < deadline, "the others never queued"
            time.sleep(0.001)
        self.committer.top_up(group)
        self.groups.append([entry.command for entry in group])
        if self.error is not None:
            raise self.error
        for entry in group:
            entry.answer(entry.command)
        return []


def test_what_queues_while_the_writer_waits_for_the_lock_shares_its_write() -> None:
    store = LockWaitingStore(waiting=4)
    committer = Committer(store.write_group, queue_units_max=100, timeout_seconds=WAIT_SECONDS)
    store.committer = committer
    with ThreadPoolExecutor(max_workers=5) as pool:
        first = pool.submit(committer.submit, "first")
        assert store.entered.wait(WAIT_SECONDS)
        rest = [pool.submit(committer.submit, number) for number in range(4)]
        assert first.result(WAIT_SECONDS) == "first"
        assert [future.result(WAIT_SECONDS) for future in rest] == list(range(4))
    assert store.groups[0][0] == "first"
    assert sorted(store.groups[0][1:]) == [0, 1, 2, 3], "all four joined the first write"
    assert len(store.groups) == 1
    assert committer.queued_units == 0
    committer.close()


def test_a_topped_up_write_that_fails_answers_every_caller_it_took() -> None:
    class StoreDownError(Exception):
        pass

    store = LockWaitingStore(waiting=2, error=StoreDownError("disk on fire"))
    committer = Committer(store.write_group, queue_units_max=100, timeout_seconds=WAIT_SECONDS)
    store.committer = committer
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(committer.submit, "first")]
        assert store.entered.wait(WAIT_SECONDS)
        futures += [pool.submit(committer.submit, number) for number in range(2)]
        for future in futures:
            with pytest.raises(StoreDownError):
                future.result(WAIT_SECONDS)
    assert len(store.groups[0]) == 3
    committer.close()


# Callers on an event loop (the HTTP API) -------------------------------------------------


def test_callers_on_an_event_loop_share_one_write_and_the_loop_keeps_running(
    store: FakeStore,
) -> None:
    committer = committer_for(store)
    store.hold()
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    async def scenario() -> list[Any]:
        ticker = asyncio.create_task(ticking())
        first = asyncio.create_task(committer.submit_async("first"))
        while not store.entered.is_set():
            await asyncio.sleep(0.001)
        rest = [asyncio.create_task(committer.submit_async(number)) for number in range(5)]
        while committer.queued_units < 5:
            await asyncio.sleep(0.001)
        ticks_while_held = ticks
        await asyncio.sleep(0.05)
        # Waiting callers do not block the loop: it kept running while the write hung.
        assert ticks > ticks_while_held
        store.released.set()
        answers = await asyncio.gather(first, *rest)
        ticker.cancel()
        return answers

    answers = asyncio.run(scenario())
    assert answers == [("done", "first"), *(("done", number) for number in range(5))]
    assert store.groups == [["first"], [0, 1, 2, 3, 4]]
    assert store.writer_threads == {"ledger-committer"}
    committer.close()


def test_what_one_turn_of_the_event_loop_queues_shares_one_write(store: FakeStore) -> None:
    """The writer is woken after the loop has run what was ready (here five requests),
    not by the first of them: they share one write, with no store held to make them,
    although handling each request lets other threads run (a log line written, here
    a short blocking pause) before the next one queues its command."""
    committer = committer_for(store)

    async def request(number: int) -> Any:
        time.sleep(0.01)  # releases the interpreter lock, as a write to a file does
        return await committer.submit_async(number)

    async def scenario() -> list[Any]:
        return await asyncio.gather(*(request(number) for number in range(5)))

    assert committer.submit("first") == ("done", "first")  # the writer now waits for work
    assert asyncio.run(scenario()) == [("done", number) for number in range(5)]
    assert store.groups == [["first"], [0, 1, 2, 3, 4]]
    assert asyncio.run(committer.submit_async("alone")) == ("done", "alone")
    assert store.groups[-1] == ["alone"]
    committer.close()


def test_commands_queued_together_from_a_loop_are_answered_together_in_order() -> None:
    """An independent batch on the event loop: one answer per command, a rejection as a
    value in its place, the others written."""

    class RejectedError(Exception):
        pass

    def writing(group: list[Pending[Any]]) -> list[Pending[Any]]:
        for entry in group:
            if entry.command == "bad":
                entry.fail(RejectedError(entry.command))
            else:
                entry.answer(("done", entry.command))
        return []

    committer = Committer(writing, queue_units_max=10, timeout_seconds=WAIT_SECONDS)
    answers = asyncio.run(committer.submit_all_async([("a", 1), ("bad", 1), ("c", 1)]))
    assert answers[0] == ("done", "a")
    assert isinstance(answers[1], RejectedError)
    assert answers[2] == ("done", "c")
    assert asyncio.run(committer.submit_all_async([])) == []
    committer.close()


def test_no_commands_handed_over_with_a_callback_are_answered_at_once() -> None:
    """``submit_all_then`` with nothing to write calls back with no answers on the loop's
    next turn, as ``submit_all_async`` returns ``[]``, not at the (here distant) deadline."""

    def writing(group: list[Pending[Any]]) -> list[Pending[Any]]:
        raise AssertionError(f"nothing should be written: {group}")

    committer = Committer(writing, queue_units_max=10, timeout_seconds=WAIT_SECONDS)

    async def scenario() -> list[Any]:
        answered: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        committer.submit_all_then([], time.monotonic() + 3600, answered.set_result)
        return await asyncio.wait_for(answered, WAIT_SECONDS)

    assert asyncio.run(scenario()) == []
    committer.close()


def test_commands_queued_together_from_a_loop_answer_at_their_deadline(
    store: FakeStore,
) -> None:
    committer = committer_for(store, timeout=SHORT_TIMEOUT_SECONDS)
    store.hold()

    async def scenario() -> list[Any]:
        taken = asyncio.create_task(committer.submit_async("taken"))
        while not store.entered.is_set():
            await asyncio.sleep(0.001)
        started = time.monotonic()
        answers = await committer.submit_all_async([("queued-1", 1), ("queued-2", 1)])
        assert time.monotonic() - started < SHORT_TIMEOUT_SECONDS + DEADLINE_SLACK_SECONDS
        with pytest.raises(OutcomeUnknownError):
            await taken
        return answers

    answers = asyncio.run(scenario())
    assert [type(answer) for answer in answers] == [WriteTimeoutError, WriteTimeoutError]
    store.released.set()
    committer.close()
    assert [command for group in store.groups for command in group] == ["taken"]


def test_an_event_loop_caller_gets_write_timeout_or_outcome_unknown_at_its_deadline(
    store: FakeStore,
) -> None:
    committer = committer_for(store, timeout=SHORT_TIMEOUT_SECONDS)
    store.hold()

    async def scenario() -> None:
        taken = asyncio.create_task(committer.submit_async("taken"))
        while not store.entered.is_set():
            await asyncio.sleep(0.001)
        started = time.monotonic()
        with pytest.raises(WriteTimeoutError):
            await committer.submit_async("queued")
        assert time.monotonic() - started < SHORT_TIMEOUT_SECONDS + DEADLINE_SLACK_SECONDS
        with pytest.raises(OutcomeUnknownError) as unknown:
            await taken
        assert "same request again is safe" in unknown.value.detail

    asyncio.run(scenario())
    store.released.set()
    assert asyncio.run(committer.submit_async("after")) == ("done", "after")
    written = [command for group in store.groups for command in group]
    assert written == ["taken", "after"]
    committer.close()


def test_an_event_loop_caller_hears_its_own_rejection_and_a_full_queue_at_once(
    store: FakeStore,
) -> None:
    class RejectedError(Exception):
        pass

    def rejecting(group: list[Pending[Any]]) -> list[Pending[Any]]:
        for entry in group:
            entry.fail(RejectedError(entry.command))
        return []

    committer = Committer(rejecting, queue_units_max=10, timeout_seconds=WAIT_SECONDS)
    with pytest.raises(RejectedError):
        asyncio.run(committer.submit_async("refused"))
    committer.close()
    with pytest.raises(OverloadedError):  # a closed committer takes nothing more
        asyncio.run(committer.submit_async("late"))


STAGGER_SECONDS: Final = 0.3
CALLERS_PER_WAVE: Final = 10


def test_callers_on_one_loop_share_one_deadline_timer_and_each_hears_at_its_own_deadline(
    store: FakeStore,
) -> None:
    """Two waves of callers queue behind a hung write, the second a moment after the
    first: the loop keeps one timer for all of them (re-armed for the second wave when
    the first times out), not one per caller, and no caller is answered before its own
    deadline."""
    committer = committer_for(store, timeout=SHORT_TIMEOUT_SECONDS)
    store.hold()
    armed: list[float] = []

    async def caller(command: str) -> tuple[float, float, Any]:
        started = time.monotonic()
        try:
            answer = await committer.submit_async(command)
        except (WriteTimeoutError, OutcomeUnknownError) as error:
            answer = error
        return started, time.monotonic(), answer

    async def scenario() -> list[tuple[float, float, Any]]:
        loop = asyncio.get_running_loop()
        call_later = loop.call_later

        def counted(delay: float, *args: Any, **options: Any) -> asyncio.TimerHandle:
            armed.append(delay)
            return call_later(delay, *args, **options)

        loop.call_later = counted  # type: ignore[method-assign,assignment]
        taken = asyncio.create_task(caller("taken"))
        await loop.run_in_executor(None, store.entered.wait, WAIT_SECONDS)
        first = [asyncio.create_task(caller(f"a{n}")) for n in range(CALLERS_PER_WAVE)]
        await loop.run_in_executor(None, time.sleep, STAGGER_SECONDS)
        second = [asyncio.create_task(caller(f"b{n}")) for n in range(CALLERS_PER_WAVE)]
        answers = await asyncio.gather(*first, *second)
        assert isinstance((await taken)[2], OutcomeUnknownError)
        return answers

    try:
        answers = asyncio.run(scenario())
    finally:
        store.released.set()
        committer.close()
    for started, answered, answer in answers:
        assert isinstance(answer, WriteTimeoutError)
        assert started + SHORT_TIMEOUT_SECONDS <= answered
        assert answered < started + SHORT_TIMEOUT_SECONDS + DEADLINE_SLACK_SECONDS
    # One timer for the first deadline, one for the second wave's (a timer that fires a
    # hair before its deadline is armed again): far fewer than the 21 callers.
    assert 1 <= len(armed) <= 4, armed


def test_the_callers_one_write_answers_are_woken_by_one_callback_on_their_loop(
    store: FakeStore,
) -> None:
    """The writer answers five callers of one loop in one write: it hands the loop one
    callback for all of them, not one each (each a wake-up of the loop)."""
    committer = committer_for(store)
    store.hold()
    handed: list[Any] = []

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        call_soon_threadsafe = loop.call_soon_threadsafe

        def counted(callback: Any, *args: Any, **options: Any) -> asyncio.Handle:
            if threading.current_thread().name == "ledger-committer":
                handed.append(callback)
            return call_soon_threadsafe(callback, *args, **options)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
        first = asyncio.create_task(committer.submit_async("first"))
        await loop.run_in_executor(None, store.entered.wait, WAIT_SECONDS)
        rest = [asyncio.create_task(committer.submit_async(n)) for n in range(5)]
        while committer.queued_units < 5:
            await asyncio.sleep(0.001)
        handed.clear()  # what answered the first write
        written = committer.groups_written
        store.released.set()
        # The loop is held (a blocking wait) until both writes are answered, as a loop
        # busy with other requests is: otherwise, on a loaded machine, it may run each
        # callback as soon as it is handed, before the writer gives the next answer.
        assert eventually(lambda: committer.groups_written == written + 2, WAIT_SECONDS)
        return await asyncio.gather(*rest, first)

    try:
        answers = asyncio.run(scenario())
    finally:
        store.released.set()
        committer.close()
    assert answers == [*(("done", n) for n in range(5)), ("done", "first")]
    assert store.groups[-1] == [0, 1, 2, 3, 4]
    # One callback for the loop's six answers (two: the first write's, then the five's).
    assert 1 <= len(handed) <= 2, handed


GATHER_CLIENTS: Final = 4
GATHER_DEADLINE_SECONDS: Final = 2.0
GATHER_ROUNDS: Final = 6
CLIENT_PAUSE_SECONDS: Final = 0.02


def closed_loop_groups(gather_seconds: float) -> list[int]:
    """Group sizes when 4 callers each send a command, wait for its answer, pause a
    moment and send the next (as HTTP clients do), the writes slower than the pause."""
    store = FakeStore()
    store.write_seconds = 0.05
    committer = Committer(
        store.write_group,
        queue_units_max=100,
        timeout_seconds=WAIT_SECONDS,
        gather_seconds=lambda: gather_seconds,
    )

    def client(number: int) -> None:
        time.sleep(0.01 * number)  # the first caller is written alone
        for round_number in range(GATHER_ROUNDS):
            committer.submit((number, round_number))
            time.sleep(CLIENT_PAUSE_SECONDS)

    with ThreadPoolExecutor(max_workers=GATHER_CLIENTS) as pool:
        list(pool.map(client, range(GATHER_CLIENTS)))
    committer.close()
    return [len(group) for group in store.groups]


def test_while_gathering_the_callers_a_write_answered_share_the_next_one_with_the_rest() -> None:
    """Without gathering, the callers answered by one write come back while the next
    (taken at once) is written: they split into halves that alternate, each write holding
    part of them. Gathering waits for them: once the callers have all started, the
    writes hold all of them (the first write, and the last when the one that started
    first has finished, hold fewer)."""
    gathered = closed_loop_groups(gather_seconds=1.0)
    assert gathered.count(GATHER_CLIENTS) >= GATHER_ROUNDS - 2, gathered
    at_once = closed_loop_groups(gather_seconds=0.0)
    assert at_once.count(GATHER_CLIENTS) < GATHER_ROUNDS - 2, f"never split: {at_once}"


def test_a_gathering_writer_waits_no_longer_than_its_window_for_callers_who_do_not_come(
    store: FakeStore,
) -> None:
    window = 0.2
    committer = Committer(
        store.write_group,
        queue_units_max=100,
        timeout_seconds=WAIT_SECONDS,
        gather_seconds=lambda: window,
    )
    committer.submit("first")
    committer.submit_all([(number, 1) for number in range(3)])  # back: no wait
    # The last write answered 3 commands, whose caller is gone: one lone caller waits
    # the window.
    _, waited = timed_submit(committer, "lone")
    assert committer.gathers_run_out == 1, "the lone caller's group did not wait"
    assert waited < window + DEADLINE_SLACK_SECONDS  # the window bounds the wait
    assert store.groups[-1] == ["lone"]
    committer.close()


def test_a_caller_back_before_its_writer_is_done_after_the_answers_is_not_waited_for() -> None:
    """The gather wait counts the commands queued since the group writer said it was
    answering (``Committer.answering``), not since it returned: what it does after its
    answers (snapshots, a store write of their own) can last until the callers it
    answered have sent their next command, which must not be waited for again. The
    window is far longer than the callers' deadline: waited for, the second command
    would be answered outcome_unknown."""
    back = threading.Event()

    def write_group(group: list[Pending[Any]]) -> list[Pending[Any]]:
        committer.answering()
        for entry in group:
            entry.answer(("done", entry.command))
        if group[0].command == "first":  # busy after its answers until the caller is back
            assert back.wait(WAIT_SECONDS)
        return []

    committer = Committer(
        write_group,
        queue_units_max=100,
        timeout_seconds=GATHER_DEADLINE_SECONDS,
        gather_seconds=lambda: 10 * WAIT_SECONDS,
    )
    try:
        assert committer.submit("first") == ("done", "first")
        with ThreadPoolExecutor(max_workers=1) as pool:
            second = pool.submit(committer.submit, "second")
            assert eventually(lambda: committer.queued_units == 1, WAIT_SECONDS)
            back.set()
            assert second.result(WAIT_SECONDS) == ("done", "second")
    finally:
        back.set()
        committer.close()


def test_after_a_gather_wait_that_ran_out_the_next_group_is_taken_at_once(
    store: FakeStore,
) -> None:
    """Callers that pause between commands do not come straight back: a gather wait for
    them runs out, and every caller of the group waited in vain. The writer then takes
    its next group that would wait at once, and gathers again after it. The window
    grows far past the callers' deadline after the first wait: a group that waited
    again would be answered outcome_unknown (and the test would run that long)."""
    windows = [SHORT_TIMEOUT_SECONDS / 10]
    committer = Committer(
        store.write_group,
        queue_units_max=100,
        timeout_seconds=GATHER_DEADLINE_SECONDS,
        gather_seconds=lambda: windows[-1],
    )
    try:
        # 3 answered; 2 come: the wait for the third runs out.
        assert committer.submit_all([("gone", 1)] * 3) == [("done", "gone")] * 3
        assert committer.submit_all([("back", 1)] * 2) == [("done", "back")] * 2
        assert (committer.gathers_run_out, committer.gathers_skipped) == (1, 0)
        windows.append(10 * WAIT_SECONDS)
        # 2 answered, 1 comes: taken at once.
        assert committer.submit("pausing") == ("done", "pausing")
        assert (committer.gathers_run_out, committer.gathers_skipped) == (1, 1)
        # 1 answered, 1 comes: no wait was due, none was skipped.
        assert committer.submit_all([("closed-loop", 1)] * 3) == [("done", "closed-loop")] * 3
        assert (committer.gathers_run_out, committer.gathers_skipped) == (1, 1)
        # 3 answered, 1 comes: the writer waits again, and runs out.
        windows.append(SHORT_TIMEOUT_SECONDS / 10)
        assert committer.submit("after") == ("done", "after")
        assert (committer.gathers_run_out, committer.gathers_skipped) == (2, 1)
        assert store.groups[-1] == ["after"]
    finally:
        committer.close()


def test_gather_waits_that_run_out_in_a_row_skip_more_groups_until_callers_come_back(
    store: FakeStore,
) -> None:
    """Waits that run out in a row skip 1, 3, 7, then at most ``GATHER_SKIPS_MAX``
    groups that would wait; a wait whose callers came back starts over at 1."""
    windows = [0.001]
    asked = threading.Event()

    def window() -> float:
        asked.set()
        return windows[-1]

    committer = Committer(
        store.write_group, queue_units_max=100, timeout_seconds=WAIT_SECONDS, gather_seconds=window
    )

    def alternate(times: int) -> None:
        """Groups of two commands then one: every group of one would wait for one more."""
        for _ in range(times):
            committer.submit_all([("pair", 1)] * 2)
            committer.submit("one")

    try:
        committer.submit("first")  # answered nobody before it: no wait
        # Run out, skip 1, run out, skip 3, 7, 15, then 15 again.
        alternate(5 + 1 + 3 + 7 + 15 + 15 + 1)
        assert committer_module.GATHER_SKIPS_MAX == 15
        assert (committer.gathers_run_out, committer.gathers_skipped) == (6, 41)
        alternate(15)
        assert (committer.gathers_run_out, committer.gathers_skipped) == (6, 56)
        # The next group of one waits (far past any deadline, were nobody to come) and
        # its caller comes: the group holds both, and the wait did not run out.
        windows.append(10 * WAIT_SECONDS)
        committer.submit_all([("pair", 1)] * 2)
        asked.clear()
        with ThreadPoolExecutor(max_workers=1) as pool:
            one = pool.submit(committer.submit, "one")
            assert asked.wait(WAIT_SECONDS)
            assert committer.submit("back") == ("done", "back")
            assert one.result(WAIT_SECONDS) == ("done", "one")
        assert store.groups[-1] == ["one", "back"]
        assert (committer.gathers_run_out, committer.gathers_skipped) == (6, 56)
        # Started over: run out, skip 1, run out (after 15 skips it would be skipped).
        windows.append(0.001)
        alternate(3)
        assert (committer.gathers_run_out, committer.gathers_skipped) == (8, 57)
    finally:
        committer.close()


def timed_submit(committer: Committer, command: Any) -> tuple[Any, float]:
    started = time.monotonic()
    answer = committer.submit(command)
    return answer, time.monotonic() - started


def test_a_writer_woken_from_many_threads_at_any_moment_answers_every_command(
    store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its idle sleeps end within a fraction of a millisecond, so wakes often land just
    as a sleep times out: none is lost, none wakes it twice."""
    monkeypatch.setattr(committer_module, "IDLE_WAKE_SECONDS", TINY_IDLE_SECONDS)
    committer = committer_for(store, queue_max=STRESS_THREADS * STRESS_COMMANDS)

    def caller(number: int) -> list[Any]:
        answers = []
        for index in range(STRESS_COMMANDS):
            answers.append(committer.submit((number, index)))
            time.sleep(TINY_IDLE_SECONDS * (index % 3))
        return answers

    with ThreadPoolExecutor(STRESS_THREADS) as pool:
        answered = list(pool.map(caller, range(STRESS_THREADS)))
    committer.close()
    assert answered == [
        [("done", (number, index)) for index in range(STRESS_COMMANDS)]
        for number in range(STRESS_THREADS)
    ]
    assert sum(len(group) for group in store.groups) == STRESS_THREADS * STRESS_COMMANDS


class _LateWake:
    """A wake lock whose wait times out just as a caller wakes the writer (the waker
    runs between the timeout and the writer taking the queue's lock back)."""

    def __init__(self, committer: Committer, lock: Any) -> None:
        self._committer = committer
        self._lock = lock

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if blocking and timeout > 0:
            with self._committer._lock:  # a caller queues and wakes the sleeping writer
                self._committer._wake_up()
            return False  # ...but the writer's wait had timed out already
        return bool(self._lock.acquire(blocking, timeout))

    def release(self) -> None:
        self._lock.release()


def test_a_wake_that_lands_just_after_the_writers_sleep_timed_out_is_taken_back() -> None:
    committer = Committer(lambda group: [], queue_units_max=1, timeout_seconds=1)
    real = committer._wake
    committer._wake = _LateWake(committer, real)  # type: ignore[assignment]
    with committer._lock:
        committer._sleep(TINY_IDLE_SECONDS)
    assert real.locked(), "the wake lock is the writer's again, as before it slept"
    assert not committer._asleep
    committer._wake = real
    with committer._lock:  # a later sleep still sleeps until woken or its timeout
        started = time.monotonic()
        committer._sleep(TINY_IDLE_SECONDS * 10)
        assert time.monotonic() - started >= TINY_IDLE_SECONDS * 9
