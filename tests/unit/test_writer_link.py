"""An API worker's writes through the writer process's socket (app/writer/client.py and
server.py, decision 0035), both ends in this process over a real Unix socket: answers
after the writer's commit; ``store_unavailable`` at once with no writer; a connection
lost with commands sent is ``outcome_unknown``; a writer that never answers is answered
``outcome_unknown`` by the deadline and its grace, never a hang; a command whose deadline
passed before the writer took it is ``write_timeout`` with nothing written; the writer's
refusal to queue (``overloaded``) reaches the caller; and a draining writer answers what
it took."""

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import GATHER_SECONDS_MAX, Ledger
from app.domain.errors import (
    AccountNotFoundError,
    OutcomeUnknownError,
    OverloadedError,
    StoreUnavailableError,
    WriteTimeoutError,
)
from app.persistence.stores import event_store_env
from app.writer.client import WriterClient
from app.writer.server import Writer

TIMEOUT_SECONDS: Final = 10.0


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
    api_ledger: Ledger, tmp_path: Path, hang_up: bool
) -> None:
    path = tmp_path / "writer.sock"

    async def story() -> None:
        server = await silent_writer(path, hang_up=hang_up)
        client = WriterClient(str(path), 0.2, grace_seconds=0.1)
        api_ledger.use_writer(client)
        try:
            with pytest.raises(OutcomeUnknownError) as raised:
                await api_ledger.record_transfer_async(RecordTransfer("t", "a", "b", 1))
            assert client.calls_waiting == 0  # nothing kept for an answer that never comes
        finally:
            server.close()
        assert "sending the same request again is safe" in str(raised.value)

    asyncio.run(story())


def test_a_command_whose_deadline_passed_before_the_writer_took_it_is_never_written(
    writing_ledger: Ledger, api_ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "writer.sock"
    with running_writer(writing_ledger, path):
        api_ledger.use_writer(WriterClient(str(path), 0.0))
        with pytest.raises(WriteTimeoutError):
            asyncio.run(api_ledger.open_account_async(OpenAccount("late", "EUR")))
    with pytest.raises(AccountNotFoundError):
        writing_ledger.get_account("late")


def slowed(ledger: Ledger, seconds: float) -> threading.Event:
    """Each group write of ``ledger`` takes ``seconds`` longer; the event is set once
    the first group is taken."""
    committer = ledger.committer
    write_group = committer._write_group
    taken = threading.Event()

    def slow_group(group: list[Any]) -> list[Any]:
        taken.set()
        time.sleep(seconds)
        return write_group(group)

    committer._write_group = slow_group
    return taken


def test_the_writers_full_queue_reaches_the_caller_as_overloaded(
    api_ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "writer.sock"
    writing_ledger = Ledger({**event_store_env("memory://"), "WRITE_QUEUE_MAX": "1"})
    taken = slowed(writing_ledger, 1.0)  # long enough for the next two calls to come
    api_ledger.use_writer(WriterClient(str(path), TIMEOUT_SECONDS))

    async def story() -> None:
        first = asyncio.ensure_future(api_ledger.open_account_async(OpenAccount("a", "EUR")))
        while not taken.is_set():
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(api_ledger.open_account_async(OpenAccount("b", "EUR")))
        await asyncio.sleep(0.05)  # queued behind the group being written: the queue is full
        with pytest.raises(OverloadedError) as raised:
            await api_ledger.open_account_async(OpenAccount("c", "EUR"))
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


def test_a_writer_asked_to_stop_answers_the_calls_it_took_and_refuses_new_ones(
    writing_ledger: Ledger, api_ledger: Ledger, tmp_path: Path
) -> None:
    path = tmp_path / "writer.sock"
    taken = slowed(writing_ledger, 0.3)  # the stop comes while the group is being written
    running = RunningWriter(writing_ledger, path)
    api_ledger.use_writer(WriterClient(str(path), TIMEOUT_SECONDS))

    async def story() -> None:
        opening = asyncio.ensure_future(api_ledger.open_account_async(OpenAccount("a", "EUR")))
        while not taken.is_set():
            await asyncio.sleep(0.01)
        running.loop.call_soon_threadsafe(running.stopping.set)
        while not running.writer.draining:
            await asyncio.sleep(0.01)
        # A call that comes while it drains is refused, not queued.
        with pytest.raises(StoreUnavailableError):
            await api_ledger.open_account_async(OpenAccount("b", "EUR"))
        assert (await opening).created  # answered after its commit, not cut off

    try:
        asyncio.run(story())
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
