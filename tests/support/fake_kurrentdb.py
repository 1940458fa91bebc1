"""An in-memory fake of exactly the kurrentdbclient methods the ledger calls, modelling
how the client (kurrentdbclient 1.3.5, cited as ``client.py``/``common.py``/``streams.py``
of the installed package) and the server (KurrentDB v25.1.0, cited by path in
github.com/kurrent-io/KurrentDB) really behave:

- ``multi_append_to_stream``: all-or-nothing across streams, each stream's expected
  version checked (``WrongCurrentVersionError`` otherwise); every event gets its own
  ``$all`` commit position, increasing with gaps, contiguous within one append; returns
  the last one.
- The client's resend after a lost reply, with the same event ids, and the server's
  answer to it: success with the ORIGINAL position when the original is replicated, a
  dropped request (the call runs into its deadline) when it is not.
- Deadlines: a stalled server answers ``GrpcDeadlineExceededError`` once the call's
  ``timeout`` passes; without a timeout the call waits for as long as the stall lasts.
- Unreachable servers (``ServiceUnavailableError``), server errors the client cannot
  classify (a bare ``KurrentDBClientError``), the same stream twice in one append, the
  append size limits, and subscriptions that drop or simply end.
- ``append_events`` (the snapshot recorder's single-stream append); ``read_stream`` /
  ``get_stream`` / ``get_current_version`` by stream position; ``read_all`` (inclusive
  of ``commit_position``) and ``subscribe_to_all`` (exclusive), with the client's
  include/exclude regex filters; ``get_commit_position`` with the same filters.

Servers are named, so that several Ledger instances of one test share one "database":
``KURRENTDB_URI=fake://NAME`` with ``PERSISTENCE_MODULE=tests.support.fake_kurrentdb``.
"""

import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from kurrentdbclient import NewEvent, RecordedEvent, StreamState
from kurrentdbclient.common import (
    construct_filter_exclude_regex,
    construct_filter_include_regex,
)
from kurrentdbclient.events import NewEvents
from kurrentdbclient.exceptions import (
    GrpcDeadlineExceededError,
    GrpcError,
    KurrentDBClientError,
    MultiAppendToSameStreamError,
    NotFoundError,
    RecordMaxSizeExceededError,
    ServiceUnavailableError,
    TransactionMaxSizeExceededError,
    WrongCurrentVersionError,
)

from app.persistence.kurrentdb import LedgerKurrentDBFactory
from app.persistence.stores import register_store_scheme

R = TypeVar("R")

COMMIT_POSITION_GAP_MAX: Final = 4096
SUBSCRIPTION_WAIT_SECONDS: Final = 0.05
# The server's defaults (src/KurrentDB.Core/Configuration/ClusterVNodeOptions.cs:155,158
# and src/KurrentDB.Core/TransactionLog/Chunks/TFConsts.cs:9,14).
MAX_APPEND_SIZE_DEFAULT: Final = 256 * 1024 * 1024
MAX_RECORD_SIZE_DEFAULT: Final = 16 * 1024 * 1024


@dataclass
class FakeServer:
    """The state of one fake database, and the faults it is told to show."""

    seed: int = 0
    log: list[RecordedEvent] = field(default_factory=list)
    streams: dict[str, list[RecordedEvent]] = field(default_factory=dict)
    by_id: dict[uuid.UUID, RecordedEvent] = field(default_factory=dict)
    position: int = 0
    supports_multi_append: bool = True
    # Faults ----------------------------------------------------------------------------
    # The next N appends commit but their replies are lost (the connection breaks).
    lost_replies: int = 0
    # Whether a committed write has reached the cluster's quorum; a resend of one that
    # has not is dropped by the server.
    replicated: bool = True
    # Every call (or, with stall_writes_only, every append) waits this long before the
    # server answers.
    stall_seconds: float = 0.0
    stall_writes_only: bool = False
    # Connections are refused.
    unreachable: bool = False
    # The next N appends commit, then answer an error the client cannot classify.
    unclassified_errors: int = 0
    max_append_size: int = MAX_APPEND_SIZE_DEFAULT
    max_record_size: int = MAX_RECORD_SIZE_DEFAULT
    # Counts, for tests.
    append_attempts: int = 0
    subscriptions_opened: int = 0
    condition: threading.Condition = field(default_factory=threading.Condition)
    subscriptions: list["FakeCatchupSubscription"] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def drop_subscriptions(self, *, cleanly: bool = False) -> None:
        """Every live subscription breaks (a leader change, a restart, the network):
        the client raises the channel's error (streams.py:325-334) or, when the server
        ends the call, a plain end of iteration (streams.py:309-316)."""
        with self.condition:
            for subscription in self.subscriptions:
                subscription.broken = "end" if cleanly else "error"
            self.subscriptions.clear()
            self.condition.notify_all()


SERVERS: dict[str, FakeServer] = {}
_SERVERS_LOCK = threading.Lock()


def server_named(name: str) -> FakeServer:
    with _SERVERS_LOCK:
        return SERVERS.setdefault(name, FakeServer(seed=len(SERVERS)))


def _current_version(server: FakeServer, stream_name: str) -> int | StreamState:
    events = server.streams.get(stream_name)
    return StreamState.NO_STREAM if not events else events[-1].stream_position


def _check_expected(server: FakeServer, stream_name: str, expected: int | StreamState) -> None:
    actual = _current_version(server, stream_name)
    if expected == StreamState.ANY:
        return
    if expected == StreamState.EXISTS:
        matches = actual != StreamState.NO_STREAM
    else:
        matches = actual == expected
    if not matches:
        raise WrongCurrentVersionError(
            f"expected {expected}, stream {stream_name} is at {actual}",
            stream_name=stream_name,
            actual_version=actual,
            expected_version=expected,
        )


def _matches(event_type: str, filter_include: Sequence[str], filter_exclude: Sequence[str]) -> bool:
    if filter_include:  # the include filter has priority, as in the client
        return re.match(construct_filter_include_regex(filter_include), event_type) is not None
    return re.match(construct_filter_exclude_regex(filter_exclude), event_type) is not None


def _record_size(event: NewEvent) -> int:
    return len(event.data) + len(event.metadata) + len(event.type)


def _answer_after_stall(server: FakeServer, timeout: float | None, *, write: bool = False) -> None:
    """A server that does not answer: the call ends at its deadline with gRPC
    DEADLINE_EXCEEDED (common.py:436-437); with no deadline (the client's default,
    client.py:218 and connection_spec.py:166) it waits as long as the stall lasts.
    An unreachable server refuses the connection: UNAVAILABLE (common.py:442-452)."""
    if server.unreachable:
        raise ServiceUnavailableError("failed to connect to all addresses; Connection refused")
    if server.stall_seconds <= 0 or (server.stall_writes_only and not write):
        return
    if timeout is not None and timeout < server.stall_seconds:
        time.sleep(timeout)
        raise GrpcDeadlineExceededError("Deadline Exceeded")
    time.sleep(server.stall_seconds)


def _as_the_client_resends(attempt: Callable[[], R]) -> R:
    """What the client's decorators do around ``multi_append_to_stream``:
    ``@retrygrpc`` (client.py:162-171) calls again once after any ``GrpcError``, and
    inside it ``@autoreconnect`` (client.py:117-159) reconnects and calls again after a
    ``ServiceUnavailableError``: up to four sends of the same request, same event ids."""

    def with_reconnect() -> R:
        try:
            return attempt()
        except ServiceUnavailableError:
            return attempt()

    try:
        return with_reconnect()
    except GrpcError:
        return with_reconnect()


class FakeKurrentDBClient:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    # Writing ---------------------------------------------------------------------------

    def multi_append_to_stream(
        self,
        events: NewEvents | Iterable[NewEvents],
        *,
        timeout: float | None = None,
        credentials: Any = None,
    ) -> int:
        groups = [events] if isinstance(events, NewEvents) else list(events)
        groups = [NewEvents(g.stream_name, list(g.events), g.current_version) for g in groups]
        return _as_the_client_resends(lambda: self._send_append(groups, timeout))

    def _send_append(self, groups: list[NewEvents], timeout: float | None) -> int:
        server = self.server
        server.append_attempts += 1
        _answer_after_stall(server, timeout, write=True)
        if not server.supports_multi_append:
            # An older server does not know the call: gRPC UNIMPLEMENTED, for which the
            # client has no class and raises a plain GrpcError (common.py:489).
            raise GrpcError(
                "<_InactiveRpcError: StatusCode.UNIMPLEMENTED, Method not found: "
                "kurrentdb.protocol.v2.StreamsService/AppendSession>"
            )
        _check_session(server, groups)
        with server.condition:
            original = _idempotent_position(server, groups)
            if original is not None:
                if server.replicated:
                    # StorageWriterService.cs:747-763: every stream idempotent → the
                    # original write's result (AlreadyCommitted), its position included.
                    return original
                # StorageWriterService.cs:724-731 (IdempotentNotReady): the request is
                # dropped; the client hears nothing until its deadline.
                raise GrpcDeadlineExceededError("Deadline Exceeded")
            for group in groups:
                _check_expected(server, group.stream_name, group.current_version)
            position = self._append(groups)
            if server.lost_replies > 0:
                server.lost_replies -= 1
                raise ServiceUnavailableError("Socket closed")
            if server.unclassified_errors > 0:
                server.unclassified_errors -= 1
                # A commit timeout (StreamsService.cs:152) is sent as OperationTimeout
                # with RetryInfo details (ApiErrors.cs:209-219), which the client does not
                # recognise: a bare KurrentDBClientError (common.py:353). The write may
                # still commit; here it did.
                raise KurrentDBClientError(
                    "Operation timed out: Append Session timed out while waiting for commit"
                )
            return position

    def append_events(
        self,
        stream_name: str,
        *,
        current_version: int | StreamState,
        events: Iterable[NewEvent],
        timeout: float | None = None,
        credentials: Any = None,
    ) -> int:
        _answer_after_stall(self.server, timeout, write=True)
        with self.server.condition:
            _check_expected(self.server, stream_name, current_version)
            return self._append([NewEvents(stream_name, list(events), current_version)])

    def _append(self, groups: list[NewEvents]) -> int:
        server = self.server
        for group in groups:
            stream = server.streams.setdefault(group.stream_name, [])
            for new_event in group.events:
                server.position += server.random.randint(1, COMMIT_POSITION_GAP_MAX)
                recorded = RecordedEvent(
                    type=new_event.type,
                    data=new_event.data,
                    metadata=new_event.metadata,
                    content_type=new_event.content_type,
                    id=new_event.id or uuid.uuid4(),
                    stream_name=group.stream_name,
                    stream_position=len(stream),
                    commit_position=server.position,
                    prepare_position=server.position,
                    recorded_at=datetime.now(tz=UTC),
                )
                stream.append(recorded)
                server.log.append(recorded)
                server.by_id[recorded.id] = recorded
        server.condition.notify_all()
        return server.position

    # Reading ---------------------------------------------------------------------------

    def read_stream(
        self,
        stream_name: str,
        *,
        stream_position: int | None = None,
        backwards: bool = False,
        resolve_links: bool = False,
        limit: int = 2**63,
        timeout: float | None = None,
        credentials: Any = None,
    ) -> Iterator[RecordedEvent]:
        # Like the client's, the response is lazy: a missing stream raises NotFoundError
        # when it is iterated, not when it is asked for.
        _answer_after_stall(self.server, timeout)
        with self.server.condition:
            stream = list(self.server.streams.get(stream_name, []))

        def responses() -> Iterator[RecordedEvent]:
            if not stream:
                raise NotFoundError(f"stream {stream_name} not found")
            if backwards:
                start = len(stream) - 1 if stream_position is None else stream_position
                selected = list(reversed(stream[: start + 1]))
            else:
                selected = stream[stream_position or 0 :]
            yield from selected[:limit]

        return responses()

    def get_stream(self, stream_name: str, **kwargs: Any) -> tuple[RecordedEvent, ...]:
        try:
            return tuple(self.read_stream(stream_name, **kwargs))
        except NotFoundError:
            return ()

    def get_current_version(
        self, stream_name: str, *, timeout: float | None = None, **_: Any
    ) -> int | StreamState:
        _answer_after_stall(self.server, timeout)
        with self.server.condition:
            return _current_version(self.server, stream_name)

    def read_all(
        self,
        *,
        commit_position: int | None = None,
        backwards: bool = False,
        filter_exclude: Sequence[str] = (),
        filter_include: Sequence[str] = (),
        limit: int = 2**63,
        timeout: float | None = None,
        **_: Any,
    ) -> Iterator[RecordedEvent]:
        _answer_after_stall(self.server, timeout)
        with self.server.condition:
            log = list(self.server.log)
        selected = [
            event
            for event in log
            if (commit_position is None or event.commit_position >= commit_position)
            and _matches(event.type, filter_include, filter_exclude)
        ]
        return iter(selected[:limit])

    def get_commit_position(
        self,
        *,
        filter_exclude: Sequence[str] = (),
        filter_include: Sequence[str] = (),
        timeout: float | None = None,
        **_: Any,
    ) -> int | None:
        _answer_after_stall(self.server, timeout)
        with self.server.condition:
            for event in reversed(self.server.log):
                if _matches(event.type, filter_include, filter_exclude):
                    return event.commit_position
        return None

    def subscribe_to_all(
        self,
        *,
        commit_position: int | None = None,
        filter_exclude: Sequence[str] = (),
        filter_include: Sequence[str] = (),
        **_: Any,
    ) -> "FakeCatchupSubscription":
        _answer_after_stall(self.server, None)
        subscription = FakeCatchupSubscription(
            self.server, commit_position, filter_include, filter_exclude
        )
        with self.server.condition:
            self.server.subscriptions.append(subscription)
            self.server.subscriptions_opened += 1
        return subscription

    def close(self) -> None:
        pass


def _check_session(server: FakeServer, groups: list[NewEvents]) -> None:
    """What the server refuses before writing anything (StreamsService.cs:80-106)."""
    seen: set[str] = set()
    total = 0
    for group in groups:
        name = group.stream_name.lower()  # compared ignoring case (StreamsService.cs:167-170)
        if name in seen:
            # StreamsService.cs:86-87 → ABORTED with details (common.py:345-352).
            raise MultiAppendToSameStreamError(
                f"Stream '{group.stream_name}' is already part of this append session.",
                stream_name=group.stream_name,
            )
        seen.add(name)
        for event in group.events:
            size = _record_size(event)
            if size > server.max_record_size:
                # StreamsService.cs:97-99 → INVALID_ARGUMENT with details (common.py:323-334).
                raise RecordMaxSizeExceededError(
                    f"The size of record {event.id} exceeds the maximum allowed size",
                    stream_name=group.stream_name,
                    event_id=event.id,
                    size=size,
                    max_size=server.max_record_size,
                )
            total += size
            if total > server.max_append_size:
                # StreamsService.cs:101-102 → ABORTED with details (common.py:335-344).
                raise TransactionMaxSizeExceededError(
                    "Transaction size exceeded the maximum allowed size",
                    size=total,
                    max_size=server.max_append_size,
                )


def _idempotent_position(server: FakeServer, groups: list[NewEvents]) -> int | None:
    """The original position when every stream of this append already holds exactly
    these events (same ids) at the expected versions: a resend. Some streams matching
    and others not is "corrupted idempotency", answered as a version conflict
    (StorageWriterService.cs:712-722 and the mixed case after line 780)."""
    matching = 0
    last = 0
    for group in groups:
        recorded = [server.by_id.get(event.id) for event in group.events]
        if all(event is not None for event in recorded):
            matching += 1
            last = max(last, *(event.commit_position or 0 for event in recorded if event))
    if matching == 0:
        return None
    if matching < len(groups):
        raise WrongCurrentVersionError("part of this append was already written")
    return last


class FakeCatchupSubscription(Iterator[RecordedEvent]):
    """Catch-up from after ``commit_position``, then live; blocks until stopped."""

    def __init__(
        self,
        server: FakeServer,
        commit_position: int | None,
        filter_include: Sequence[str],
        filter_exclude: Sequence[str],
    ) -> None:
        self.server = server
        self.last = commit_position
        self.filter_include = filter_include
        self.filter_exclude = filter_exclude
        self.stopped = threading.Event()
        self.index = 0
        self.broken: str | None = None

    def __next__(self) -> RecordedEvent:
        while not self.stopped.is_set():
            with self.server.condition:
                if self.broken == "error":
                    raise ServiceUnavailableError("Socket closed")
                if self.broken == "end":
                    raise StopIteration
                while self.index < len(self.server.log):
                    event = self.server.log[self.index]
                    self.index += 1
                    if self.last is not None and event.commit_position <= self.last:
                        continue
                    if _matches(event.type, self.filter_include, self.filter_exclude):
                        self.last = event.commit_position
                        return event
                self.server.condition.wait(SUBSCRIPTION_WAIT_SECONDS)
        raise StopIteration

    def stop(self) -> None:
        self.stopped.set()


class FakeKurrentDBFactory(LedgerKurrentDBFactory):
    def construct_client(self, uri: str, root_certificates: str | None) -> Any:
        name = uri.removeprefix("fake://")
        return FakeKurrentDBClient(server_named(name))


def fake_env(name: str) -> dict[str, str]:
    return {
        "PERSISTENCE_MODULE": "tests.support.fake_kurrentdb:FakeKurrentDBFactory",
        "KURRENTDB_URI": f"fake://{name}",
    }


# ``fake://NAME`` then works wherever a store URL does (workers, runners, the CLI code).
register_store_scheme("fake", lambda url: fake_env(url.removeprefix("fake://")))
