"""The writer process of ``serve --workers N`` (decision 0035): the one ledger that
writes, fed by the API workers over a Unix socket.

Each call an API worker sends (``app/writer/wire.py``) is rebuilt into the ledger's
writes (``Ledger.write_for``) and queued on the ledger's committer with its caller's
deadline, so the committer groups the commands of every worker as one process's
committer groups its own callers'; each call is answered once all its commands are
(after their commit: acknowledged means durable). Answers made in one turn of the loop
go back to their worker in one message.

On SIGTERM or SIGINT (or when the supervisor is gone) it stops accepting connections,
answers every call it took (each within its deadline), then closes the ledger.
"""

import asyncio
import contextlib
import functools
import os
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, cast

import structlog

from app.application.ledger import Ledger, Write
from app.domain.errors import LedgerError, StoreUnavailableError
from app.worker_processes import answer_pings
from app.writer.wire import (
    UNFRAMABLE,
    Answer,
    Call,
    Frames,
    WireError,
    WriterFaultError,
    checked_calls,
    frame,
    portable,
)

log = structlog.get_logger(__name__)

# How long a drain waits past the longest deadline of the calls it still answers.
DRAIN_MARGIN_SECONDS: Final = 2.0
# What a call that comes while the writer drains is told (503: its caller may retry
# shortly, when the supervisor has started the next writer).
STOPPING: Final = "the ledger's writer process is stopping; nothing was written: retry shortly"


class _Connection(asyncio.Protocol):
    """One API worker's connection."""

    def __init__(self, writer: "Writer") -> None:
        self._writer = writer
        self._frames = Frames()
        self._transport: asyncio.Transport | None = None
        self._outgoing: list[Answer] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not ``asyncio.Transport`` subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)
        self._writer.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            calls = checked_calls(self._frames.feed(data))
        except WireError:
            log.exception("writer.unreadable_call")
            self.close()
            return
        for call in calls:
            self._writer.take(call, self)

    def answer(self, answer: Answer) -> None:
        """Queue ``answer`` for this turn's message to the worker."""
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(answer)

    def _flush(self) -> None:
        answers, self._outgoing = self._outgoing, []
        if self._transport is None or self._transport.is_closing():
            return
        try:
            message = frame(answers)
        except UNFRAMABLE:
            # One answer that cannot be framed (a bug) fails alone, its call answered as
            # a fault; the others of the turn go, each in a frame of its own.
            message = b"".join(_framed_alone(answer) for answer in answers)
        self._transport.write(message)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002  # asyncio's
        self._writer.connections.discard(self)
        self._transport = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _framed_alone(answer: Answer) -> bytes:
    """``answer`` in a frame of its own; its call's fault instead when it cannot be
    framed (said in the log)."""
    try:
        return frame([answer])
    except UNFRAMABLE as error:
        log.exception("writer.unsendable_answer")
        return frame([(answer[0], WriterFaultError(f"the writer process failed: {error!r}"))])


class Writer:
    """The ledger's committer behind a Unix socket."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        ledger.gather_callers()
        self.connections: set[_Connection] = set()
        # Calls queued on the committer and not yet answered; set once they all are,
        # while the writer drains.
        self._running = 0
        self._drained: asyncio.Event | None = None
        self._latest_deadline = 0.0
        self.serving = False
        self.draining = False

    def take(self, call: Call, connection: _Connection) -> None:
        """Queue one call's commands on the committer; answer it when they are."""
        # The caller's deadline as the API worker sent it, a ``time.monotonic`` time (one
        # clock for every process of this host): a call read after it passed is dropped
        # by the committer (``write_timeout``, nothing written), however late it was read.
        call_id, deadline, orders = call
        if self.draining:  # past its last call: nothing more is queued, nothing written
            connection.answer((call_id, StoreUnavailableError(STOPPING)))
            return
        self._latest_deadline = max(self._latest_deadline, deadline)
        answers: list[Any] = [None] * len(orders)
        writes: list[tuple[int, Write[Any]]] = []
        for index, order in enumerate(orders):
            try:
                writes.append((index, self.ledger.write_for(order)))
            except LedgerError as error:  # refused as the worker's own ledger would have
                answers[index] = error
            except Exception as error:  # the process boundary: said, answered
                log.exception("writer.unbuildable_order", order=repr(order)[:300])
                answers[index] = portable(error)
        if not writes:
            connection.answer((call_id, answers))
            return
        # Answered by a callback on this loop, not from a task made for each call.
        try:
            self.ledger.committer.submit_all_then(
                [(write, write.units) for _, write in writes],
                deadline,
                functools.partial(self._answered, call_id, writes, answers, connection),
            )
        except LedgerError as error:  # not queued at all (overloaded, shutting down)
            connection.answer((call_id, error))
            return
        except Exception as error:  # the process boundary: said, and answered as a fault
            log.exception("writer.call_failed", commands=len(writes))
            connection.answer((call_id, portable(error)))
            return
        self._running += 1

    def _answered(
        self,
        call_id: int,
        writes: Sequence[tuple[int, Write[Any]]],
        answers: list[Any],
        connection: _Connection,
        results: list[Any],
    ) -> None:
        self._running -= 1
        try:
            for (index, _), result in zip(writes, results, strict=True):
                answers[index] = portable(result)
            connection.answer((call_id, answers))
        finally:  # a bug answering this call leaves it unanswered, not the drain waiting
            if not self._running and self._drained is not None:
                self._drained.set()

    async def serve(self, path: Path, stopping: asyncio.Event) -> None:
        """Listen at ``path`` until ``stopping`` is set, then drain."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # the socket of a writer before this one (killed, restarted)
        server = await loop.create_unix_server(lambda: _Connection(self), str(path))
        self.serving = True
        log.info("writer.serving", pid=os.getpid(), socket=str(path))
        try:
            await stopping.wait()
        finally:
            self.serving = False
            self.draining = True
            server.close()
            await self.drain()
            for connection in list(self.connections):
                connection.close()
            await server.wait_closed()
        log.info("writer.stopped", pid=os.getpid())

    async def drain(self) -> None:
        """Answer every call taken (their deadlines bound the wait)."""
        if not self._running:
            return
        bound = max(0.0, self._latest_deadline - time.monotonic()) + DRAIN_MARGIN_SECONDS
        self._drained = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                await self._drained.wait()
        await asyncio.sleep(0)  # the answers' flush, due this turn


def run_writer(ledger: Ledger, path: Path, control: socket.socket) -> None:
    """The writer process's life: serve until a signal (or the supervisor is gone)."""
    writer = Writer(ledger)
    ledger.committer.start()

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Answered from the loop that serves: a writer whose loop is wedged falls
        # silent, and the supervisor replaces it (a thread would answer for it).
        answer_pings(control, lambda: writer.serving, loop)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        await writer.serve(path, stopping)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(main())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's, as uvicorn's workers run, when it is installed."""
    try:
        import uvloop  # noqa: PLC0415  # optional, as uvicorn takes it
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
