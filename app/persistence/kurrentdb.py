"""KurrentDB (EventStoreDB ≥ 25.1) as the ledger's event store, as the server and the
client really behave (kurrentdbclient 1.3.5, KurrentDB v25.1.0; decision 0009).

The eventsourcing-kurrentdb extension appends to one stream per call, which cannot
record a transfer and its two accounts atomically. This recorder writes every command
with ONE ``multi_append_to_stream`` call, one ``NewEvents`` per stream with its
expected version (decision 0001), and maps a version conflict to the same
``IntegrityError`` the SQL recorders raise, so the ledger's retry loop is shared.

What the real thing adds, and how each is met here:

- Positions are ``$all`` commit positions, increasing with large gaps. Every event of
  an append has its own; the call returns only the last. The others are read back
  (the events of one append are contiguous in ``$all``), so a transfer inside a batch
  answers the same position first and on replay.
- The client resends an append after a lost reply with the same event ids; the server
  answers an already-committed resend with the original position, and drops one whose
  original is not yet replicated, so the call times out. A deadline, a broken
  connection after sending, or an error the client cannot classify is therefore an
  *unknown outcome*: ``OutcomeUnknownError`` (503 ``outcome_unknown``); resending the
  same command is safe because ids are idempotency keys.
- No call has a deadline by default: every call but the long-lived subscription gets
  ``KURRENTDB_DEADLINE_SECONDS``.
- Reads may go to followers: the client is pinned to ``NodePreference=leader``, so
  that a command never decides on a stale read.
- The extension re-subscribes only on ``ConsumerTooSlowError``: ours re-subscribes
  after any drop, from the last position delivered (never skipping, never twice).
"""

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import wraps
from typing import Any, Final, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from uuid import UUID

import kurrentdbclient.exceptions as kurrent
import structlog
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InfrastructureFactory,
    InfrastructureFactoryError,
    IntegrityError,
    Notification,
    PersistenceError,
    StoredEvent,
    Subscription,
)
from eventsourcing.utils import Environment
from eventsourcing_kurrentdb.factory import KurrentDBFactory
from eventsourcing_kurrentdb.recorders import (
    KurrentDBAggregateRecorder,
    KurrentDBApplicationRecorder,
)
from kurrentdbclient import (
    DEFAULT_EXCLUDE_FILTER,
    KurrentDBClient,
    NewEvent,
    RecordedEvent,
    StreamState,
)
from kurrentdbclient.events import NewEvents

from app.compat import (
    set_subscription_position,
    subscription_position,
    subscription_recorder,
    subscription_stopped,
    subscription_topics,
)
from app.domain.errors import (
    BatchTooLargeError,
    OutcomeUnknownError,
    StoreUnavailableError,
)

log = structlog.get_logger(__name__)

MINIMUM_SERVER_VERSION: Final = "25.1"
# Only the ledger's own events are notifications: probes, snapshots and any foreign
# streams in a shared database are filtered out on the server.
# Snapshots (in their own streams) carry a ledger topic too: the lookahead leaves them out.
LEDGER_EVENT_TYPES: Final = r"(?!.*Snapshot$)app\.domain\..*"
EXCLUDED_EVENT_TYPES: Final = (*DEFAULT_EXCLUDE_FILTER, r".*Snapshot")
PROBE_STREAM: Final = "ledger-capability-probe"
DEADLINE_KEY: Final = "KURRENTDB_DEADLINE_SECONDS"
DEADLINE_SECONDS_DEFAULT: Final = 10.0
# Calls that get the deadline: everything the recorders call except the subscription,
# which is meant to stay open.
BOUNDED_CALLS: Final = frozenset(
    {
        "multi_append_to_stream",
        "append_to_stream",
        "append_events",
        "read_stream",
        "get_stream",
        "read_all",
        "get_commit_position",
        "get_current_version",
    }
)
# A dropped subscription is re-opened after a pause growing to the cap; this many drops
# in a row (the server gone for good) end it, and the supervisor takes over.
RESUBSCRIBE_PAUSE_SECONDS: Final = 0.1
RESUBSCRIBE_PAUSE_CAP_SECONDS: Final = 2.0
RESUBSCRIBE_ATTEMPTS_MAX: Final = 30
# What gRPC says when the connection was never made (nothing can have been sent).
NOT_CONNECTED_MARKERS: Final = ("failed to connect", "connection refused", "dns resolution")
# gRPC's status for a plain HTTP answer (no gRPC server behind the address).
NOT_GRPC_MARKER: Final = "Received http2 header with status"
UNAVAILABLE_DETAIL: Final = (
    "the KurrentDB server could not be reached; nothing was written. "
    "Sending the same request again is safe"
)
UNKNOWN_OUTCOME_DETAIL: Final = (
    "the KurrentDB server did not confirm the write ({reason}); it may or may not have "
    "been recorded. Sending the same request again is safe: ids are idempotency keys"
)


class UnsupportedServerError(RuntimeError):
    """The server cannot append to several streams atomically."""


class DeadlineClient:
    """The client with a deadline on every bounded call that does not bring its own.

    The client's default is no deadline at all (``DefaultDeadline`` unset): a server
    that stops answering would hold a request forever. Wraps the real client or the
    test fake alike."""

    def __init__(self, client: Any, deadline_seconds: float) -> None:
        self.client = client
        self.deadline_seconds = deadline_seconds

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if name not in BOUNDED_CALLS:
            return attribute

        @wraps(attribute)
        def bounded(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = self.deadline_seconds
            return attribute(*args, **kwargs)

        return bounded


def leader_uri(uri: str) -> str:
    """The URI with ``NodePreference=leader``: commands read (and decide on) the
    leader's state, never a follower's stale copy. The client then also asks the
    server to refuse the read on a follower (``requires-leader``)."""
    parts = urlsplit(uri)
    options = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key.lower() != "nodepreference"
    ]
    options.append(("NodePreference", "leader"))
    return urlunsplit(parts._replace(query=urlencode(options)))


def _stream_groups(stored_events: Sequence[StoredEvent]) -> list[NewEvents]:
    """One NewEvents per stream, in first-seen order, versions checked gapless. Event
    ids are set here, once: the client's resend after a lost reply sends the same ids,
    which is how the server recognises it."""
    grouped: dict[str, list[StoredEvent]] = {}
    for stored in stored_events:
        grouped.setdefault(str(stored.originator_id), []).append(stored)
    groups = []
    for stream_name, events in grouped.items():
        first = events[0].originator_version
        if any(event.originator_version != first + i for i, event in enumerate(events)):
            raise IntegrityError(f"gap in versions for stream {stream_name}")
        groups.append(
            NewEvents(
                stream_name=stream_name,
                events=[
                    NewEvent(
                        type=event.topic,
                        data=event.state,
                        metadata=b"",
                        content_type="application/octet-stream",
                        id=uuid.uuid4(),
                    )
                    for event in events
                ],
                current_version=StreamState.NO_STREAM if first == 0 else first - 1,
            )
        )
    return groups


def append_failure(error: kurrent.KurrentDBClientError) -> Exception:
    """What a failed append means for the caller."""
    if isinstance(error, kurrent.WrongCurrentVersionError):
        # A stale expected version: nothing was written; the ledger retries on fresh state.
        return IntegrityError(error)
    if isinstance(
        error, kurrent.TransactionMaxSizeExceededError | kurrent.RecordMaxSizeExceededError
    ):
        return BatchTooLargeError(
            f"the command's events exceed the KurrentDB server's append size limit ({error})"
        )
    if isinstance(error, kurrent.NodeIsNotLeaderError | kurrent.DiscoveryFailedError):
        # Refused before anything was written (the leader check comes first).
        return StoreUnavailableError(UNAVAILABLE_DETAIL)
    if isinstance(error, kurrent.ServiceUnavailableError) and _never_connected(error):
        return StoreUnavailableError(UNAVAILABLE_DETAIL)
    if isinstance(error, kurrent.AccessDeniedError | kurrent.UnauthenticatedError):
        return PersistenceError(error)
    # A deadline, a broken connection after sending, a commit timeout or any error the
    # client could not classify (a bare KurrentDBClientError): the write may have landed.
    return OutcomeUnknownError(UNKNOWN_OUTCOME_DETAIL.format(reason=type(error).__name__))


@contextmanager
def _reading() -> Iterator[None]:
    """A read that fails (deadline, connection, server error) wrote nothing: the store
    is unavailable for now."""
    try:
        yield
    except kurrent.NotFoundError:
        raise
    except kurrent.KurrentDBClientError as error:
        raise StoreUnavailableError(f"{UNAVAILABLE_DETAIL} ({type(error).__name__})") from error


def _never_connected(error: BaseException) -> bool:
    message = str(error).lower()
    return any(marker in message for marker in NOT_CONNECTED_MARKERS)


class LedgerKurrentDBSnapshotRecorder(KurrentDBAggregateRecorder):
    """The extension's recorder with its stream reads failing as the ledger's do (a
    fault is ``StoreUnavailableError``). Used for snapshots, and under the ledger's
    recorder."""

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        with _reading():
            return super().select_events(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)


class LedgerKurrentDBRecorder(KurrentDBApplicationRecorder, LedgerKurrentDBSnapshotRecorder):
    def __init__(self, client: KurrentDBClient, *args: Any, **kwargs: Any) -> None:
        super().__init__(client, *args, **kwargs)
        self.validate_uuids = True

    def insert_events(
        self,
        stored_events: Sequence[StoredEvent],
        **_: Any,
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        groups = _stream_groups(stored_events)
        try:
            last_position = self.client.multi_append_to_stream(groups)
        except kurrent.KurrentDBClientError as error:
            raise append_failure(error) from error
        return self._event_positions(groups, last_position, stored_events)

    def _event_positions(
        self, groups: list[NewEvents], last_position: int, stored_events: Sequence[StoredEvent]
    ) -> list[int]:
        """Each event's own ``$all`` position, in ``stored_events`` order."""
        ids = [event.id for group in groups for event in group.events]
        if len(ids) == 1:
            return [last_position]
        by_id = self._positions_from_all(groups, ids) or self._positions_stream_by_stream(groups)
        by_version = {
            (group.stream_name, _first_version(group) + offset): by_id[event.id]
            for group in groups
            for offset, event in enumerate(group.events)
        }
        return [
            by_version[(str(stored.originator_id), stored.originator_version)]
            for stored in stored_events
        ]

    def _positions_from_all(self, groups: list[NewEvents], ids: list[UUID]) -> dict[UUID, int]:
        """The events of one append are contiguous in ``$all`` (the server writes them
        as one transaction): read forward from the first one. Empty when the ids read
        back are not ours, in order."""
        first = self.client.get_stream(
            groups[0].stream_name, stream_position=_first_version(groups[0]), limit=1
        )
        if not first or first[0].id != ids[0]:
            return {}
        recorded = list(
            self.client.read_all(commit_position=first[0].commit_position, limit=len(ids))
        )
        if [event.id for event in recorded] != ids:
            return {}
        return {event.id: int(event.commit_position or 0) for event in recorded}

    def _positions_stream_by_stream(self, groups: list[NewEvents]) -> dict[UUID, int]:
        by_id: dict[UUID, int] = {}
        for group in groups:
            new_events = list(group.events)
            recorded = self.client.get_stream(
                group.stream_name, stream_position=_first_version(group), limit=len(new_events)
            )
            for new_event, event in zip(new_events, recorded, strict=True):
                by_id[new_event.id] = int(event.commit_position or 0)
        return by_id

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> list[Notification]:
        with _reading():
            return self._select_notifications(
                start, limit, stop, topics, inclusive_of_start=inclusive_of_start
            )

    def _select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None,
        topics: Sequence[str],
        *,
        inclusive_of_start: bool,
    ) -> list[Notification]:
        notifications: list[Notification] = []
        skip_first = not inclusive_of_start and start is not None
        for recorded in self.client.read_all(
            commit_position=start,
            filter_exclude=EXCLUDED_EVENT_TYPES,
            filter_include=list(topics) or [LEDGER_EVENT_TYPES],
            limit=limit + (1 if skip_first else 0),
        ):
            if skip_first and recorded.commit_position == start:
                continue
            if stop is not None and recorded.commit_position > stop:
                break
            notifications.append(self.construct_notification(recorded))
            if len(notifications) == limit:
                break
        return notifications

    def max_notification_id(self) -> int | None:
        with _reading():
            position: int | None = self.client.get_commit_position(
                filter_include=[LEDGER_EVENT_TYPES], filter_exclude=EXCLUDED_EVENT_TYPES
            )
        return position

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return LedgerKurrentDBSubscription(recorder=self, gt=gt, topics=topics)

    def recorded_position(self, originator_id: UUID, version: int) -> int:
        with _reading():
            events = self.client.get_stream(str(originator_id), stream_position=version, limit=1)
        if not events:
            raise LookupError(f"no event {originator_id} v{version}")
        return int(events[0].commit_position)

    def check_multi_stream_append(self) -> None:
        """Refuse to run on a server without atomic multi-stream appends, and say
        "unreachable" when the server cannot be asked at all.

        The probe expects a stream that does not exist to exist: a supporting server
        answers with a version conflict and writes nothing; an older one does not know
        the call (gRPC UNIMPLEMENTED, which the client raises as a plain ``GrpcError``)."""
        probe = NewEvents(
            stream_name=PROBE_STREAM,
            events=[NewEvent(type="LedgerCapabilityProbe", data=b"{}")],
            current_version=StreamState.EXISTS,
        )
        try:
            self.client.multi_append_to_stream([probe])
        except kurrent.WrongCurrentVersionError:
            return
        except kurrent.KurrentDBClientError as error:
            if _is_unimplemented(error):
                raise UnsupportedServerError(
                    f"this KurrentDB/EventStoreDB server cannot append to several streams "
                    f"atomically ({error}); the ledger needs KurrentDB {MINIMUM_SERVER_VERSION} "
                    "or newer"
                ) from None
            raise StoreUnavailableError(
                f"the KurrentDB server could not be asked whether it supports atomic "
                f"multi-stream appends ({type(error).__name__}: {error}); is it running "
                "and reachable?"
            ) from error
        raise UnsupportedServerError(
            f"the capability probe wrote to {PROBE_STREAM!r}: expected-version checks are "
            "not enforced by this server; refusing to run"
        )


def _first_version(group: NewEvents) -> int:
    current = group.current_version
    return 0 if current == StreamState.NO_STREAM else int(cast(int, current)) + 1


def _is_unimplemented(error: kurrent.KurrentDBClientError) -> bool:
    """An old server's answer to an unknown call: the client has no class for gRPC
    UNIMPLEMENTED and raises a plain ``GrpcError`` (kurrentdbclient common.py:489)."""
    message = str(error)
    if NOT_GRPC_MARKER in message:
        return False  # some other HTTP server (a proxy, a wrong port) answered
    return type(error) is kurrent.GrpcError and (
        "UNIMPLEMENTED" in message or "Method not found" in message
    )


class LedgerKurrentDBSubscription(Subscription[KurrentDBApplicationRecorder]):
    """A catch-up subscription on ``$all``, filtered to ledger events, that survives
    drops: a leader change, a restart or a network break ends the client's stream
    (with an error, or with a plain end of iteration); it is opened again from the
    last position delivered, so nothing is skipped and nothing comes twice."""

    def __init__(
        self,
        recorder: KurrentDBApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=list(topics) or [LEDGER_EVENT_TYPES])
        self._lock = threading.Lock()
        self._stream: Any = self._open()
        self.resubscriptions = 0

    def _open(self) -> Any:
        return subscription_recorder(self).client.subscribe_to_all(
            commit_position=subscription_position(self),
            filter_exclude=EXCLUDED_EVENT_TYPES,
            filter_include=subscription_topics(self),
        )

    def __next__(self) -> Notification:
        failures = 0
        while not subscription_stopped(self):
            try:
                recorded: RecordedEvent = next(self._stream)
            except (StopIteration, kurrent.KurrentDBClientError) as error:
                if subscription_stopped(self):
                    break
                failures += 1
                self._reopen(error, failures)
                continue
            notification = subscription_recorder(self).construct_notification(recorded)
            set_subscription_position(self, notification.id)
            return notification
        raise StopIteration

    def _reopen(self, error: BaseException, failures: int) -> None:
        if failures > RESUBSCRIBE_ATTEMPTS_MAX:
            raise StoreUnavailableError(
                f"the $all subscription dropped {failures} times in a row ({error!r})"
            ) from error
        pause = min(RESUBSCRIBE_PAUSE_CAP_SECONDS, RESUBSCRIBE_PAUSE_SECONDS * 2 ** (failures - 1))
        log.warning(
            "kurrentdb.subscription_dropped",
            error=repr(error),
            after_position=subscription_position(self),
            retry_in_seconds=pause,
        )
        time.sleep(pause)
        with self._lock:
            if subscription_stopped(self):
                return
            try:
                self._stream = self._open()
            except kurrent.KurrentDBClientError as reopen_error:
                log.warning("kurrentdb.resubscribe_failed", error=repr(reopen_error))
                return
            self.resubscriptions += 1

    def stop(self) -> None:
        with self._lock:
            super().stop()
            self._stream.stop()


class LedgerKurrentDBFactory(KurrentDBFactory):
    """Selected with ``PERSISTENCE_MODULE=app.persistence.kurrentdb:LedgerKurrentDBFactory``."""

    def __init__(self, env: Environment) -> None:
        InfrastructureFactory.__init__(self, env)  # the client is built by our hook below
        uri = self.env.get(self.KURRENTDB_URI)
        if not uri:
            raise InfrastructureFactoryError(f"{self.KURRENTDB_URI} is not set")
        deadline = float(self.env.get(DEADLINE_KEY) or DEADLINE_SECONDS_DEFAULT)
        client = self.construct_client(uri, self.env.get(self.KURRENTDB_ROOT_CERTIFICATES))
        self.client = cast(KurrentDBClient, DeadlineClient(client, deadline))
        self._checked = False

    def construct_client(self, uri: str, root_certificates: str | None) -> KurrentDBClient:
        """TLS and credentials come from the URI, as the client accepts them."""
        return KurrentDBClient(uri=leader_uri(uri), root_certificates=root_certificates)

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        return LedgerKurrentDBSnapshotRecorder(
            client=self.client, for_snapshotting=purpose == "snapshots"
        )

    def application_recorder(self) -> ApplicationRecorder:
        recorder = LedgerKurrentDBRecorder(self.client)
        if not self._checked:
            recorder.check_multi_stream_append()
            self._checked = True
        return recorder
