"""An in-memory fake of exactly the kurrentdbclient methods the ledger calls, written
from the client's documented behaviour:

- ``multi_append_to_stream``: all-or-nothing across streams, each stream's expected
  version checked first (``WrongCurrentVersionError`` otherwise); every event gets its
  own ``$all`` commit position, increasing with gaps; returns the last one.
- ``append_events`` (the snapshot recorder's single-stream append).
- ``read_stream`` / ``get_stream`` / ``get_current_version``: by stream position;
  ``NotFoundError`` for a stream that does not exist.
- ``read_all`` (inclusive of ``commit_position``) and ``subscribe_to_all`` (exclusive:
  the events after ``commit_position``), both with the client's include/exclude regex
  filters on event types; ``get_commit_position`` with the same filters.
- Optionally the client's retry after a lost reply: the append commits, and the
  retried call answers with a version conflict.

Servers are named, so that several Ledger instances of one test share one "database":
``KURRENTDB_URI=fake://NAME`` with ``PERSISTENCE_MODULE=tests.support.fake_kurrentdb``.
"""

import random
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from kurrentdbclient import NewEvent, RecordedEvent, StreamState
from kurrentdbclient.common import (
    construct_filter_exclude_regex,
    construct_filter_include_regex,
)
from kurrentdbclient.events import NewEvents
from kurrentdbclient.exceptions import GrpcError, NotFoundError, WrongCurrentVersionError

from app.persistence.kurrentdb import LedgerKurrentDBFactory
from app.persistence.stores import register_store_scheme

COMMIT_POSITION_GAP_MAX: Final = 4096
SUBSCRIPTION_WAIT_SECONDS: Final = 0.05


@dataclass
class FakeServer:
    """The state of one fake database."""

    seed: int = 0
    log: list[RecordedEvent] = field(default_factory=list)
    streams: dict[str, list[RecordedEvent]] = field(default_factory=dict)
    position: int = 0
    lose_next_reply: bool = False
    supports_multi_append: bool = True
    condition: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)


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
        server = self.server
        if not server.supports_multi_append:
            # What the client raises when an older server does not know the method.
            raise GrpcError("Method not found: kurrentdb.protocol.v2.StreamsService/AppendSession")
        with server.condition:
            for group in groups:
                _check_expected(server, group.stream_name, group.current_version)
            position = self._append(groups)
            if server.lose_next_reply:
                server.lose_next_reply = False
                # The reply was lost and the client retried: the retry meets its own write.
                raise WrongCurrentVersionError("retried append found the stream moved on")
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

    def get_current_version(self, stream_name: str, **_: Any) -> int | StreamState:
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
        **_: Any,
    ) -> Iterator[RecordedEvent]:
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
        **_: Any,
    ) -> int | None:
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
        return FakeCatchupSubscription(self.server, commit_position, filter_include, filter_exclude)

    def close(self) -> None:
        pass


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

    def __next__(self) -> RecordedEvent:
        while not self.stopped.is_set():
            with self.server.condition:
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
