"""An API worker's writes through the writer process's socket (app/writer/client.py and
server.py, decision 0035), both ends in this process over a real Unix socket: answers
after the writer's commit; ``store_unavailable`` at once with no writer; a connection
lost with commands sent is ``outcome_unknown``; a writer that never answers is answered
``outcome_unknown`` by the deadline and its grace, never a hang; a command whose deadline
passed before the writer took it is ``write_timeout`` with nothing written, however late
the writer read it; a connection attempt cancelled, failed or never completed leaves the
next call free; a call on a connection already lost is ``store_unavailable`` at once; the
writer's refusal to queue (``overloaded``) reaches the caller; and a draining writer
answers what it took."""

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import GATHER_SECONDS_MAX, Ledger, Write
from app.domain.errors import (
    AccountNotFoundError,
    OutcomeUnknownError,
    OverloadedError,
    StoreUnavailableError,
    TransferNotFoundError,
    WriteTimeoutError,
)
from app.persistence.stores import event_store_env
from app.writer.client import WriterClient
from app.writer.server import Writer
from app.writer.wire import WriterFaultError, frame

TIMEOUT_SECONDS: Final = 10.0
WAIT_SECONDS: Final = 60.0  # a bound against hanging, never a measure of speed


class RunningWriter:
    """A writer serving ``ledger`` at ``path`` on a loop in a thread of its own."""

    def __init__(self, ledger: Ledger, path: Path) -> None:
        self.writer = Writer(ledger)
        self.path = path
        self.loop = asyncio.new_event_loop()
        self.stopping = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="test-writer")
        self._thread.start()
        while not self.writer.serving and self._thread.is_alive():
            self._thread.join(0.01)

    def _run(self) -> None:
        self.loop.run_until_complete(self.writer.serve(self.path, self.stopping))

    def stopped_within(self, timeout: float) -> bool:
        """Whether the writer's serve (its drain included) ended within ``timeout``
        seconds, without being stopped again."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.stopping.set)
        self._thread.join()
        self.loop.close()


@contextlib.contextmanager
def running_writer(ledger: Ledger, path: Path) -> Iterator[RunningWriter]:
    running = RunningWriter(ledger, path)
    try:
        yield running
    finally:
        running.stop()


@contextlib.contextmanager
def writing_through(
    writing: Ledger, api: Ledger, path: Path, timeout_seconds: float = TIMEOUT_SECONDS
) -> Iterator[tuple[RunningWriter, WriterClient]]:
    """A writer serving ``writing`` at ``path``, and ``api``'s writes sent to it."""
    client = WriterClient(str(path), timeout_seconds, grace_seconds=0.1)
    with running_writer(writing, path) as running:
        api.use_writer(client)
        yield running, client


@pytest.fixture
def writing_ledger() -> Iterator[Ledger]:
    ledger = Ledger(event_store_env("memory://"))
    yield ledger
    ledger.close()


@pytest.fixture
def api_ledger() -> Iterator[Ledger]:
    """An API worker's ledger: it builds the commands; its own store is never written."""
    ledger = Ledger(event_store_env("memory://"))
    yield ledger
    ledger.close()


def test_writes_through_the_writer_are_its_commits_and_refusals_come_back_as_they_were(
    writing_ledger: Ledger, api_ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "writer.sock"
    with running_writer(writing_ledger, path):
        api_ledger.use_writer(WriterClient(str(path), TIMEOUT_SECONDS))

        async def story() -> None:
            for name in ("bank", "alice"):
                opened = await api_ledger.open_account_async(
                    OpenAccount(name, "EUR", allow_negative=name == "bank")
                )
                assert opened.created
            sent = [
                api_ledger.record_transfer_async(RecordTransfer(f"t{n}", "bank", "alice", 2))
                for n in range(20)
            ]
            outcomes = await asyncio.gather(*sent)
            assert all(outcome.created for outcome in outcomes)
            with pytest.raises(AccountNotFoundError):
                await api_ledger.record_transfer_async(RecordTransfer("x", "nobody", "alice", 1))

        asyncio.run(story())
    # Written by the writer's ledger, not the worker's.
    assert writing_ledger.get_account("alice").balance == 40
    with pytest.raises(AccountNotFoundError):
        api_ledger.get_account("alice")


def test_with_no_writer_listening_a_write_is_store_unavailable_at_once_and_nothing_written(
    api_ledger: Ledger, tmp_path: Path
) -> None:
    api_ledger.use_writer(WriterClient(str(tmp_path / "nobody.sock"), TIMEOUT_SECONDS))
    with pytest.raises(StoreUnavailableError) as raised:
        asyncio.run(api_ledger.open_account_async(OpenAccount("a", "EUR")))
    assert raised.value.code == "store_unavailable"
    assert "writer process cannot be reached" in str(raised.value)


async def silent_writer(path: Path, *, hang_up: bool) -> asyncio.AbstractServer:
    """A socket that reads what it is sent and then hangs up, or never answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        if hang_up:
            writer.close()
            return
        await reader.read()  # until the client goes

    return await asyncio.start_unix_server(handle, str(path))


@pytest.mark.parametrize("hang_up", [True, False], ids=["connection lost", "writer hangs"])
def test_a_sent_command_whose_answer_never_comes_is_outcome_unknown_within_a_bound(
    api_ledger: Ledger, tmp_path: Path, hang_up: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "writer.sock"
    timeout, grace = 0.2, 0.1

    async def story() -> None:
        server = await silent_writer(path, hang_up=hang_up)
        client = WriterClient(str(path), timeout, grace_seconds=grace)
        api_ledger.use_writer(client)
        loop = asyncio.get_running_loop()
        give_ups: list[tuple[float, asyncio.TimerHandle]] = []
        call_at = loop.call_at

        def watched_call_at(when: float, callback: Any, *args: Any) -> asyncio.TimerHandle:
            handle = call_at(when, callback, *args)
            if getattr(callback, "__name__", "") == "give_up":
                give_ups.append((loop.time(), handle))
            return handle

        monkeypatch.setattr(loop, "call_at", watched_call_at)
        before = loop.time()
        try:
            with pytest.raises(OutcomeUnknownError) as raised:
                await api_ledger.record_transfer_async(RecordTransfer("t", "a", "b", 1))
            assert client.calls_waiting == 0  # nothing kept for an answer that never comes
        finally:
            server.close()
        assert "sending the same request again is safe" in str(raised.value)
        # Given up at the caller's deadline (taken between ``before`` and the timer's
        # making) and the grace, on the loop's own clock.
        [(made_at, timer)] = give_ups
        slack = 1e-3  # two clocks read one after the other by ``_loop_time``
        assert before + timeout + grace - slack <= timer.when() <= made_at + timeout + grace + slack

    asyncio.run(story())


def test_a_call_the_writer_reads_after_its_callers_deadline_is_never_written(
    writing_ledger: Ledger, api_ledger: Ledger, tmp_path: Path
) -> None:
    """The caller's deadline crosses as a time on the host's monotonic clock, not as the
    seconds left: a writer whose loop was busy past the deadline (and the grace, so the
    caller was answered ``outcome_unknown``) drops the call when it reads it at last,
    rather than writing it for a caller who stopped waiting."""
    path = tmp_path / "writer.sock"
    writing_ledger.open_account(OpenAccount("bank", "EUR", allow_negative=True))
    writing_ledger.open_account(OpenAccount("alice", "EUR"))
    busy = threading.Event()
    with writing_through(writing_ledger, api_ledger, path, 0.2) as (running, client):

        async def story() -> None:
            running.loop.call_soon_threadsafe(busy.wait)  # the writer's loop stalls
            try:
                with pytest.raises(OutcomeUnknownError):
                    await api_ledger.record_transfer_async(
                        RecordTransfer("late", "bank", "alice", 1)
                    )
            finally:
                busy.set()
            # A call after it on the same connection: answered after its commit, so the
            # late call was read and queued before it.
            client.timeout_seconds = TIMEOUT_SECONDS
            transfer = RecordTransfer("after", "bank", "alice", 1)
            assert (await api_ledger.record_transfer_async(transfer)).created

        asyncio.run(story())
    assert writing_ledger.get_transfer("after").amount == 1
    with pytest.raises(TransferNotFoundError):
        writing_ledger.get_transfer("late")


def test_a_caller_cancelled_while_connecting_leaves_the_connection_to_the_next_call(
    writing_ledger: Ledger, api_ledger: Ledger, tmp_path: Path
) -> None:
    with writing_through(writing_ledger, api_ledger, tmp_path / "writer.sock") as (_, client):

        async def story() -> None:
            first = asyncio.ensure_future(api_ledger.open_account_async(OpenAccount("a", "EUR")))
            while client._connecting is None:
                await asyncio.sleep(0)
            first.cancel()  # its request gone while the connection is being made
            with pytest.raises(asyncio.CancelledError):
                await first
            second = api_ledger.open_account_async(OpenAccount("b", "EUR"))
            assert (await asyncio.wait_for(second, WAIT_SECONDS)).created

        asyncio.run(story())
    assert writing_ledger.get_account("b").unit == "EUR"


async def never_connects(*_: Any, **__: Any) -> Any:
    await asyncio.Event().wait()


async def fails_to_connect(*_: Any, **__: Any) -> Any:
    raise RuntimeError("a connection that failed otherwise than refused")


@pytest.mark.parametrize("connect", [never_connects, fails_to_connect])
def test_a_connection_attempt_that_fails_or_never_completes_leaves_the_next_call_free(
    writing_ledger: Ledger,
    api_ledger: Ledger,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    connect: Any,
) -> None:
    path = tmp_path / "writer.sock"
    with writing_through(writing_ledger, api_ledger, path, 0.2) as (_, client):

        async def story() -> None:
            loop = asyncio.get_running_loop()
            with monkeypatch.context() as patched:
                patched.setattr(loop, "create_unix_connection", connect)
                first = api_ledger.open_account_async(OpenAccount("a", "EUR"))
                # Bounded by its deadline (store_unavailable: nothing was sent), or the
                # error of a bug; never a wait for an attempt that has ended.
                with pytest.raises((StoreUnavailableError, RuntimeError)):
                    await asyncio.wait_for(first, WAIT_SECONDS)
            client.timeout_seconds = TIMEOUT_SECONDS
            second = api_ledger.open_account_async(OpenAccount("b", "EUR"))
            assert (await asyncio.wait_for(second, WAIT_SECONDS)).created

        asyncio.run(story())
    assert writing_ledger.get_account("b").unit == "EUR"
    with pytest.raises(AccountNotFoundError):
        writing_ledger.get_account("a")


def test_a_call_handed_to_a_connection_already_lost_is_store_unavailable_at_once(
    tmp_path: Path,
) -> None:
    """A caller that waited for a connection may resume after it was lost: its call is
    never sent, so it is told ``store_unavailable`` there and then, not ``outcome_unknown``
    at its deadline."""
    path = tmp_path / "writer.sock"

    async def story() -> None:
        server = await asyncio.start_unix_server(lambda _, writer: writer.close(), str(path))
        client = WriterClient(str(path), TIMEOUT_SECONDS)
        try:
            link = await client._connected(time.monotonic() + TIMEOUT_SECONDS)
            assert not isinstance(link, str)
            while link.open:  # until the writer's hang-up is seen
                await asyncio.sleep(0.01)
            waiting = link.send([("close_account", "a")], time.monotonic() + TIMEOUT_SECONDS)
            assert waiting.future.done()
            [answer] = waiting.future.result()
            assert isinstance(answer, StoreUnavailableError)
            assert client.calls_waiting == 0
        finally:
            client.close()
            server.close()

    asyncio.run(asyncio.wait_for(story(), WAIT_SECONDS))


def test_a_command_whose_deadline_passed_before_the_writer_took_it_is_never_written(
    writing_ledger: Ledger, api_ledger: Ledger, tmp_path: Path
) -> None:
    with writing_through(writing_ledger, api_ledger, tmp_path / "writer.sock") as (_, client):

        async def story() -> None:
            assert (await api_ledger.open_account_async(OpenAccount("a", "EUR"))).created
            client.timeout_seconds = 0.0  # sent on the open connection, its deadline now
            with pytest.raises(WriteTimeoutError):
                await api_ledger.open_account_async(OpenAccount("late", "EUR"))

        asyncio.run(story())
    with pytest.raises(AccountNotFoundError):
        writing_ledger.get_account("late")


def held(ledger: Ledger) -> tuple[threading.Event, threading.Event]:
    """Each group write of ``ledger`` waits until the second event is set; the first is
    set once a group is taken."""
    committer = ledger.committer
    write_group = committer._write_group
    taken, release = threading.Event(), threading.Event()

    def held_group(group: list[Any]) -> list[Any]:
        taken.set()
        release.wait()
        return write_group(group)

    committer._write_group = held_group
    return taken, release


def test_the_writers_full_queue_reaches_the_caller_as_overloaded(
    api_ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "writer.sock"
    writing_ledger = Ledger({**event_store_env("memory://"), "WRITE_QUEUE_MAX": "1"})
    taken, release = held(writing_ledger)
    api_ledger.use_writer(WriterClient(str(path), TIMEOUT_SECONDS))

    async def story() -> None:
        try:
            first = asyncio.ensure_future(api_ledger.open_account_async(OpenAccount("a", "EUR")))
            while not taken.is_set():
                await asyncio.sleep(0.01)
            second = asyncio.ensure_future(api_ledger.open_account_async(OpenAccount("b", "EUR")))
            # Queued behind the group being written: the queue is full.
            while writing_ledger.committer.queued_units < 1:
                await asyncio.sleep(0.01)
            with pytest.raises(OverloadedError) as raised:
                await api_ledger.open_account_async(OpenAccount("c", "EUR"))
        finally:
            release.set()
        assert raised.value.code == "overloaded"
        assert (await first).created
        assert (await second).created

    try:
        with running_writer(writing_ledger, path):
            asyncio.run(story())
        with pytest.raises(AccountNotFoundError):
            writing_ledger.get_account("c")
    finally:
        writing_ledger.close()


def test_a_thread_off_the_loop_writes_through_a_connection_of_its_own(
    writing_ledger: Ledger, api_ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "writer.sock"
    with running_writer(writing_ledger, path):
        api_ledger.use_writer(WriterClient(str(path), TIMEOUT_SECONDS))
        assert api_ledger.open_account(OpenAccount("a", "EUR")).created
    assert writing_ledger.get_account("a").unit == "EUR"


def test_a_writer_asked_to_stop_answers_the_calls_it_took_refuses_new_ones_and_stops(
    writing_ledger: Ledger, api_ledger: Ledger, tmp_path: Path
) -> None:
    """The drain ends with the last answer to a call it took (a count of the calls not
    yet answered), not at its bound: the calls' latest deadline, here far past
    ``WAIT_SECONDS``, is only for answers that never come."""
    path = tmp_path / "writer.sock"
    taken, release = held(writing_ledger)  # the stop comes while the group is being written
    running = RunningWriter(writing_ledger, path)
    api_ledger.use_writer(WriterClient(str(path), 2 * WAIT_SECONDS))

    async def story() -> None:
        try:
            opening = asyncio.ensure_future(api_ledger.open_account_async(OpenAccount("a", "EUR")))
            while not taken.is_set():
                await asyncio.sleep(0.01)
            running.loop.call_soon_threadsafe(running.stopping.set)
            while not running.writer.draining:
                await asyncio.sleep(0.01)
            # A call that comes while it drains is refused, not queued.
            with pytest.raises(StoreUnavailableError):
                await api_ledger.open_account_async(OpenAccount("b", "EUR"))
        finally:
            release.set()
        assert (await opening).created  # answered after its commit, not cut off

    try:
        asyncio.run(story())
        assert running.stopped_within(WAIT_SECONDS), "the drain waited for its bound"
    finally:
        running.stop()
    assert writing_ledger.get_account("a").unit == "EUR"
    with pytest.raises(AccountNotFoundError):
        writing_ledger.get_account("b")


def test_the_writers_ledger_waits_for_the_callers_it_answered_on_any_store(
    writing_ledger: Ledger,
) -> None:
    """A ledger alone on a store other than SQLite takes its next group at once; the
    writer process's waits a moment for its callers to come back through the hop."""
    writing_ledger.open_account(OpenAccount("a", "EUR"))
    assert writing_ledger._gather_seconds() == 0.0
    Writer(writing_ledger)
    assert 0.0 < writing_ledger._gather_seconds() <= GATHER_SECONDS_MAX


def test_a_command_that_cannot_be_sent_is_answered_as_a_fault_at_once(
    writing_ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "writer.sock"
    unsendable: Write[Any] = Write(lambda _: lambda _: None, order=("transfer", lambda: None))
    with running_writer(writing_ledger, path):
        client = WriterClient(str(path), TIMEOUT_SECONDS)

        async def story() -> list[Any]:
            try:
                # A good call in the same turn is sent and answered all the same.
                good = writing_ledger.write_for(("open_account", OpenAccount("b", "EUR")))
                answers, (opened,) = await asyncio.gather(
                    client.submit_all_async([(unsendable, 1)]),
                    client.submit_all_async([(good, 1)]),
                )
                assert opened.created
                assert client.calls_waiting == 0  # nothing left waiting for an answer
                return answers
            finally:
                client.close()

        (answer,) = asyncio.run(story())
    assert isinstance(answer, WriterFaultError)
    assert writing_ledger.get_account("b").unit == "EUR"


def test_a_call_the_writer_fails_on_is_answered_as_a_fault_not_left_waiting(
    writing_ledger: Ledger, api_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("a bug in the writer")

    monkeypatch.setattr(writing_ledger.committer, "submit_all_then", broken)
    path = tmp_path / "writer.sock"
    with running_writer(writing_ledger, path):
        api_ledger.use_writer(WriterClient(str(path), TIMEOUT_SECONDS))
        with pytest.raises(WriterFaultError, match="a bug in the writer"):
            asyncio.run(api_ledger.open_account_async(OpenAccount("a", "EUR")))


def test_a_bug_answering_the_drains_last_call_does_not_hold_the_stop_to_its_bound(
    writing_ledger: Ledger, api_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call whose answer the writer fails to build (a bug) stays unanswered (its
    command may have committed: outcome unknown), but it is no longer counted: the drain
    ends, where it waited for the calls' latest deadline (here far past ``WAIT_SECONDS``)."""

    def broken(_: object) -> None:
        raise RuntimeError("a bug while answering")

    path = tmp_path / "writer.sock"
    taken, release = held(writing_ledger)
    running = RunningWriter(writing_ledger, path)
    api_ledger.use_writer(WriterClient(str(path), 2 * WAIT_SECONDS))

    async def story() -> None:
        opening = asyncio.ensure_future(api_ledger.open_account_async(OpenAccount("a", "EUR")))
        while not taken.is_set():
            await asyncio.sleep(0.01)
        monkeypatch.setattr("app.writer.server.portable", broken)
        running.loop.call_soon_threadsafe(running.stopping.set)
        while not running.writer.draining:
            await asyncio.sleep(0.01)
        release.set()
        assert running.stopped_within(WAIT_SECONDS), "the drain waited for its bound"
        with pytest.raises(OutcomeUnknownError):  # the writer's connection closed unanswered
            await opening

    try:
        asyncio.run(story())
    finally:
        release.set()
        running.stop()
    assert writing_ledger.get_account("a").unit == "EUR"


def test_an_answer_that_cannot_be_sent_fails_its_call_alone(
    writing_ledger: Ledger, api_ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An answer the writer cannot frame (a bug) is its call's fault at once; the other
    answers of the same turn reach their callers."""
    submit_all_then = writing_ledger.committer.submit_all_then
    taken: dict[str, tuple[list[Any], float, Callable[[list[Any]], object]]] = {}

    def answering(
        commands: list[Any], deadline: float, then: Callable[[list[Any]], object]
    ) -> None:
        (write, _), *_ = commands
        taken[write.order[1].id] = (commands, deadline, then)
        if len(taken) < 2:
            return
        _, _, then_bad = taken["bad"]
        good, good_deadline, then_good = taken["good"]

        def both(results: list[Any]) -> None:  # the two answered in one turn
            then_bad([threading.Lock()])  # cannot be pickled
            then_good(results)

        submit_all_then(good, good_deadline, both)

    monkeypatch.setattr(writing_ledger.committer, "submit_all_then", answering)
    path = tmp_path / "writer.sock"
    with running_writer(writing_ledger, path):
        api_ledger.use_writer(WriterClient(str(path), TIMEOUT_SECONDS))

        async def story() -> tuple[Any, Any]:
            return await asyncio.gather(
                api_ledger.open_account_async(OpenAccount("bad", "EUR")),
                api_ledger.open_account_async(OpenAccount("good", "EUR")),
                return_exceptions=True,
            )

        bad, good = asyncio.run(story())
    assert isinstance(bad, WriterFaultError)
    assert "pickle" in str(bad)
    assert good.created
    assert writing_ledger.get_account("good").unit == "EUR"


@pytest.mark.parametrize(
    ("label", "after_the_call"),
    [
        ("a message holding something that is not a call", [5]),
        ("a call whose deadline is not a number", [(2, float("nan"), [])]),
        ("a call whose orders are not orders", [(2, time.monotonic() + WAIT_SECONDS, [5])]),
    ],
)
def test_a_message_holding_a_malformed_call_is_refused_whole_and_nothing_of_it_written(
    writing_ledger: Ledger, tmp_path: Path, label: str, after_the_call: list[Any]
) -> None:
    # A well-formed call first: taken before the malformed one was met, it was written
    # although the connection then failed (asyncio closing it, its answer lost).
    call = (1, time.monotonic() + WAIT_SECONDS, [("open_account", OpenAccount("a", "EUR"))])
    path = tmp_path / "writer.sock"
    with running_writer(writing_ledger, path) as running, socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(WAIT_SECONDS)
        sock.connect(str(path))
        sock.sendall(frame([call, *after_the_call]))
        assert sock.recv(65536) == b"", f"{label}: the writer closes the connection"
        assert running.writer.serving
    with pytest.raises(AccountNotFoundError):
        writing_ledger.get_account("a")
