"""KurrentDB (EventStoreDB ≥ 25.1) as the ledger's event store.

The eventsourcing-kurrentdb extension appends to one stream per call, which cannot
record a transfer and its two accounts atomically. This recorder writes every command
with ONE ``multi_append_to_stream`` call, one ``NewEvents`` per stream with its
expected version (decision 0001), and maps a version conflict to the same
``IntegrityError`` the SQL recorders raise, so the ledger's retry loop is shared.

Positions are ``$all`` commit positions: increasing, with large gaps.
"""

from collections.abc import Sequence
from typing import Any, Final
from uuid import UUID

import kurrentdbclient.exceptions
from eventsourcing.persistence import (
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
    KurrentDBApplicationRecorder,
    KurrentDBSubscription,
)
from kurrentdbclient import DEFAULT_EXCLUDE_FILTER, KurrentDBClient, NewEvent, StreamState
from kurrentdbclient.events import NewEvents

MINIMUM_SERVER_VERSION: Final = "25.1"
# Only the ledger's own events are notifications: probes, snapshots and any foreign
# streams in a shared database are filtered out on the server.
# Snapshots (in their own streams) carry a ledger topic too: the lookahead leaves them out.
LEDGER_EVENT_TYPES: Final = r"(?!.*Snapshot$)app\.domain\..*"
EXCLUDED_EVENT_TYPES: Final = (*DEFAULT_EXCLUDE_FILTER, r".*Snapshot")
PROBE_STREAM: Final = "ledger-capability-probe"


class UnsupportedServerError(RuntimeError):
    """The server cannot append to several streams atomically."""


def _stream_groups(stored_events: Sequence[StoredEvent]) -> list[NewEvents]:
    """One NewEvents per stream, in first-seen order, versions checked gapless."""
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
                    )
                    for event in events
                ],
                current_version=StreamState.NO_STREAM if first == 0 else first - 1,
            )
        )
    return groups


class LedgerKurrentDBRecorder(KurrentDBApplicationRecorder):
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
        try:
            commit_position = self.client.multi_append_to_stream(_stream_groups(stored_events))
        except kurrentdbclient.exceptions.WrongCurrentVersionError as error:
            # Also what an append that committed but whose reply was lost looks like
            # after the client's own retry: the ledger's retry then finds the transfer
            # already recorded and answers it as an idempotent replay.
            raise IntegrityError(error) from error
        except kurrentdbclient.exceptions.KurrentDBClientError as error:
            raise PersistenceError(error) from error
        # The server returns one position for the whole commit: every event of the
        # command shares it, which is what read-your-writes needs.
        return [commit_position] * len(stored_events)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
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
        position: int | None = self.client.get_commit_position(
            filter_include=[LEDGER_EVENT_TYPES], filter_exclude=EXCLUDED_EVENT_TYPES
        )
        return position

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> Subscription[ApplicationRecorder]:
        return LedgerKurrentDBSubscription(recorder=self, gt=gt, topics=topics)

    def recorded_position(self, originator_id: UUID, version: int) -> int:
        events = self.client.get_stream(str(originator_id), stream_position=version, limit=1)
        if not events:
            raise LookupError(f"no event {originator_id} v{version}")
        return int(events[0].commit_position)

    def check_multi_stream_append(self) -> None:
        """Refuse to run on a server without atomic multi-stream appends.

        The probe expects a stream that does not exist to exist: a supporting server
        answers with a version conflict and writes nothing; an older one does not know
        the call at all."""
        probe = NewEvents(
            stream_name=PROBE_STREAM,
            events=[NewEvent(type="LedgerCapabilityProbe", data=b"{}")],
            current_version=StreamState.EXISTS,
        )
        try:
            self.client.multi_append_to_stream([probe])
        except kurrentdbclient.exceptions.WrongCurrentVersionError:
            return
        except kurrentdbclient.exceptions.GrpcError as error:
            raise UnsupportedServerError(
                f"this KurrentDB/EventStoreDB server cannot append to several streams "
                f"atomically ({error}); the ledger needs KurrentDB {MINIMUM_SERVER_VERSION} "
                "or newer"
            ) from None
        raise UnsupportedServerError(
            f"the capability probe wrote to {PROBE_STREAM!r}: expected-version checks are "
            "not enforced by this server; refusing to run"
        )


class LedgerKurrentDBSubscription(KurrentDBSubscription):
    """The extension's catch-up subscription on ``$all``, filtered to ledger events."""

    def __init__(
        self,
        recorder: KurrentDBApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=list(topics) or [LEDGER_EVENT_TYPES])


class LedgerKurrentDBFactory(KurrentDBFactory):
    """Selected with ``PERSISTENCE_MODULE=app.persistence.kurrentdb:LedgerKurrentDBFactory``."""

    def __init__(self, env: Environment) -> None:
        InfrastructureFactory.__init__(self, env)  # the client is built by our hook below
        uri = self.env.get(self.KURRENTDB_URI)
        if not uri:
            raise InfrastructureFactoryError(f"{self.KURRENTDB_URI} is not set")
        self.client = self.construct_client(uri, self.env.get(self.KURRENTDB_ROOT_CERTIFICATES))
        self._checked = False

    def construct_client(self, uri: str, root_certificates: str | None) -> KurrentDBClient:
        """TLS and credentials come from the URI, as the client accepts them."""
        return KurrentDBClient(uri=uri, root_certificates=root_certificates)

    def application_recorder(self) -> ApplicationRecorder:
        recorder = LedgerKurrentDBRecorder(self.client)
        if not self._checked:
            recorder.check_multi_stream_append()
            self._checked = True
        return recorder
