"""An API worker's side of the writer process (``serve --workers N``, decision 0035).

``WriterClient`` stands where the worker's own committer stood (``Ledger.use_writer``):
the ledger builds each write command as before and hands it over; the client sends its
``Order`` to the writer process instead, and awaits the answer on the worker's event
loop. Calls made in one turn of the loop go in one message, written at the end of the
turn (as the committer wakes its writer once per turn).

What a caller is told when the writer cannot answer:
- no writer to reach (not started yet, restarting, gone): ``StoreUnavailableError`` at
  once (503, ``store_unavailable``): nothing was sent, nothing written;
- the connection lost after the command was sent (the writer killed or restarted):
  ``OutcomeUnknownError`` (503, ``outcome_unknown``): it may have been written;
  resending the same id is safe;
- no answer by the caller's deadline and a short grace for the hop (a writer that
  hangs): ``OutcomeUnknownError`` likewise. The writer itself answers ``write_timeout``
  or ``outcome_unknown`` at the deadline, as a committer does, so the grace only bounds
  a writer that no longer answers at all.
"""

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import structlog

from app.application.committer import raised_or_given
from app.application.ledger import Write
from app.domain.errors import OutcomeUnknownError, StoreUnavailableError
from app.writer.wire import UNFRAMABLE, Answer, Call, Frames, WireError, frame, portable

log = structlog.get_logger(__name__)

# How long past its caller's deadline a command's answer may take to come back from the
# writer before the caller is told ``outcome_unknown`` (the writer answers by the
# deadline itself; this bounds one that hangs).
HOP_GRACE_SECONDS: Final = 1.0


def unreachable(why: str) -> StoreUnavailableError:
    return StoreUnavailableError(
        f"the ledger's writer process cannot be reached ({why}); nothing was written: retry shortly"
    )


def lost(why: str) -> OutcomeUnknownError:
    return OutcomeUnknownError(
        f"the ledger's writer process did not answer ({why}); the write may or may not "
        "have been recorded: sending the same request again is safe"
    )


class _Waiting:
    """One call sent (or about to be): its id, its orders' count and its caller's future."""

    __slots__ = ("call_id", "count", "future", "sent")

    def __init__(self, call_id: int, count: int, future: "asyncio.Future[list[Any]]") -> None:
        self.call_id = call_id
        self.count = count
        self.future = future
        self.sent = False

    def settle(self, answers: list[Any]) -> None:
        if not self.future.done():
            self.future.set_result(answers)


class _Link(asyncio.Protocol):
    """One connection to the writer, on the worker's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_lost: Callable[["_Link"], None]):
        self.loop = loop
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._frames = Frames()
        self._ids = itertools.count(1)
        self.waiting: dict[int, _Waiting] = {}
        self._outgoing: list[Call] = []
        self._outgoing_ids: list[int] = []
        self.open = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not ``asyncio.Transport`` subclasses, only alike.
        self._transport = cast(asyncio.Transport, transport)

    def send(self, orders: Sequence[Any], deadline: float) -> _Waiting:
        """Queue a call for this turn's message; its answers come to the returned future.
        On a link already lost it is answered ``store_unavailable`` at once (never sent)."""
        call_id = next(self._ids)
        waiting = _Waiting(call_id, len(orders), self.loop.create_future())
        if not self.open:
            waiting.settle([unreachable("the connection was lost")] * waiting.count)
            return waiting
        self.waiting[call_id] = waiting
        if not self._outgoing:
            self.loop.call_soon(self._flush)
        # The deadline itself, a ``time.monotonic`` time, not the seconds left: the
        # writer is on this host and CLOCK_MONOTONIC is one clock for every process of
        # a Linux system, so a writer late to read the call still drops it once its
        # caller's deadline has passed (``write_timeout``, nothing written) rather than
        # counting the seconds left from when it read it.
        self._outgoing.append((call_id, deadline, orders))
        self._outgoing_ids.append(call_id)
        return waiting

    def give_up(self, waiting: _Waiting, timeout_seconds: float) -> None:
        """Its caller's deadline and the grace passed with no answer: ``outcome_unknown``
        (a late answer is dropped)."""
        self.waiting.pop(waiting.call_id, None)
        waiting.settle([lost(f"no answer within {timeout_seconds}s")] * waiting.count)

    def _flush(self) -> None:
        calls, self._outgoing = self._outgoing, []
        ids, self._outgoing_ids = self._outgoing_ids, []
        if not self.open or self._transport is None:
            for call_id in ids:  # lost meanwhile: nothing was sent
                waiting = self.waiting.pop(call_id, None)
                if waiting is not None:
                    waiting.settle([unreachable("the connection was lost")] * waiting.count)
            return
        try:
            message = frame(calls)
        except UNFRAMABLE:
            # One call that cannot be framed (a bug) fails alone: the others of the
            # turn go, each in a frame of its own.
            message = b"".join(self._framed_alone(call) for call in calls)
        for call_id in ids:
            waiting = self.waiting.get(call_id)
            if waiting is not None:
                waiting.sent = True
        if message:
            self._transport.write(message)

    def _framed_alone(self, call: Call) -> bytes:
        """``call`` in a frame of its own; nothing when it cannot be framed (a bug: said,
        and its caller answered the fault at once)."""
        try:
            return frame([call])
        except UNFRAMABLE as error:
            log.exception("writer_client.unsendable_call")
            waiting = self.waiting.pop(call[0], None)
            if waiting is not None:
                waiting.settle([portable(error)] * waiting.count)
            return b""

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._frames.feed(data)
        except WireError:
            log.exception("writer_client.unreadable_answer")
            self.close()
            return
        for answers in messages:
            answer: Answer
            for answer in answers:
                call_id, outcome = answer
                waiting = self.waiting.pop(call_id, None)
                if waiting is None:
                    continue  # its caller stopped waiting (past deadline and grace)
                if isinstance(outcome, BaseException):  # the whole call's answer
                    waiting.settle([outcome] * waiting.count)
                else:
                    waiting.settle(outcome)

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002  # asyncio's
        self.open = False
        waiting, self.waiting = self.waiting, {}
        for call in waiting.values():
            if call.sent:
                call.settle([lost("the connection was lost")] * call.count)
            else:
                call.settle([unreachable("the connection was lost")] * call.count)
        self._on_lost(self)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class WriterClient:
    """The ledger's command queue in an API worker: every write goes to the writer
    process at ``path`` (a Unix socket), each with its caller's deadline."""

    def __init__(
        self, path: str, timeout_seconds: float, *, grace_seconds: float = HOP_GRACE_SECONDS
    ) -> None:
        self.path = path
        self.timeout_seconds = timeout_seconds
        self.grace_seconds = grace_seconds
        self._link: _Link | None = None
        self._connecting: asyncio.Task[_Link | str] | None = None
        self._said_unreachable = False

    async def submit_async(self, command: Write[Any], units: int = 1) -> Any:
        return raised_or_given(await self.submit_all_async([(command, units)]))

    async def submit_all_async(self, commands: Sequence[tuple[Write[Any], int]]) -> list[Any]:
        """Each command's answer (a result or an error instance, in order)."""
        if not commands:
            return []
        deadline = time.monotonic() + self.timeout_seconds
        orders = [_order_of(write) for write, _units in commands]
        link = await self._connected(deadline)
        if isinstance(link, str):
            return [unreachable(link)] * len(orders)
        waiting = link.send(orders, deadline)
        loop = link.loop
        timer = loop.call_at(
            _loop_time(loop, deadline + self.grace_seconds),
            link.give_up,
            waiting,
            self.timeout_seconds,
        )
        try:
            return await waiting.future
        finally:
            timer.cancel()

    def submit(self, command: Write[Any], units: int = 1) -> Any:
        return raised_or_given(self.submit_all([(command, units)]))

    def submit_all(self, commands: Sequence[tuple[Write[Any], int]]) -> list[Any]:
        """For a caller off the event loop (a thread): on a connection of its own."""
        once = WriterClient(self.path, self.timeout_seconds, grace_seconds=self.grace_seconds)

        async def submitted() -> list[Any]:
            try:
                return await once.submit_all_async(commands)
            finally:
                once.close()

        return asyncio.run(submitted())

    async def _connected(self, deadline: float) -> _Link | str:
        """The open link to the writer, made now if there is none: one attempt at a
        time, which the callers that come meanwhile share. Why not, when no writer
        listens or none accepted the connection by ``deadline``."""
        link = self._link
        if link is not None and link.open:
            return link
        connecting = self._connecting
        if connecting is None:
            connecting = asyncio.get_running_loop().create_task(self._connect(deadline))
            self._connecting = connecting
        # Shielded: a caller cancelled while it waits (its request gone) leaves the
        # attempt to the others. The attempt is bounded by the deadline of the caller
        # that began it, the earliest of those waiting (each has ``timeout_seconds``).
        return await asyncio.shield(connecting)

    async def _connect(self, deadline: float) -> _Link | str:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(_loop_time(loop, deadline)):
                _, made = await loop.create_unix_connection(
                    lambda: _Link(loop, self._lost), self.path
                )
        except OSError as error:  # TimeoutError included: no writer accepted in time
            if not self._said_unreachable:  # once per outage, not once per write
                self._said_unreachable = True
                log.warning("writer_client.unreachable", path=self.path, error=repr(error))
            if isinstance(error, TimeoutError):
                return "no writer accepted the connection by the write's deadline"
            return "no writer is listening"
        else:
            self._link = made
            self._said_unreachable = False
            return made
        finally:
            # Whatever happened (an error, a cancel): the next call tries again.
            self._connecting = None

    @property
    def calls_waiting(self) -> int:
        """Calls sent whose callers still wait for their answers."""
        return 0 if self._link is None else len(self._link.waiting)

    def _lost(self, link: _Link) -> None:
        if self._link is link:
            self._link = None

    def close(self) -> None:
        link, self._link = self._link, None
        connecting, self._connecting = self._connecting, None
        with contextlib.suppress(RuntimeError):  # its loop is closed already
            if connecting is not None:
                connecting.cancel()
            if link is not None:
                link.close()


def _order_of(write: Write[Any]) -> Any:
    if write.order is None:
        raise LookupError(f"a write without its order cannot go to the writer: {write!r}")
    return write.order


def _loop_time(loop: asyncio.AbstractEventLoop, monotonic: float) -> float:
    """A ``time.monotonic`` time on ``loop``'s clock (the same clock on asyncio and
    uvloop on Linux, but said here rather than assumed)."""
    return loop.time() + (monotonic - time.monotonic())
