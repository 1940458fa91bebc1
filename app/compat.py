"""The one place that reaches into libraries' non-public parts. Each seam has a test in
tests/unit/test_compat.py that fails loudly when an upgrade moves it. Code elsewhere
calls these, never the private names themselves; where a public extension point exists
it is used instead (the projection runner's context manager, the subscription's own
iteration, the tracking recorder's ``max_tracking_id``).
"""

import asyncio
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    ApplicationRecorder,
    ListenNotifySubscription,
    Notification,
    StoredEvent,
    Subscription,
    Tracking,
)
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresDatastore,
    PostgresTrackingRecorder,
)
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteApplicationRecorder,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteTrackingRecorder,
)
from litestar import Litestar
from litestar.types import Receive, Scope, Send
from prometheus_client import Histogram
from psycopg_pool import ConnectionPool
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.persistence.rows import StoredRows, row_of

# Nothing else of this application is imported here at module level (``rows`` imports
# only the library): the domain imports this module (``initialise_aggregate``), so an
# import of the API here would be a cycle.

TRecorder = TypeVar("TRecorder", bound=ApplicationRecorder)


# eventsourcing 9.5: an aggregate's base attributes (id, version, created_on, modified_on,
# pending events) are set by ``BaseAggregate.__base_init__``, which the library calls
# itself when its Created event builds an aggregate (``CanInitAggregate.mutate``).
def initialise_aggregate(
    aggregate: Aggregate, originator_id: UUID, version: int, timestamp: datetime
) -> None:
    """Give a new, not yet initialised aggregate object (``cls.__new__(cls)``) its base
    attributes, as the library's Created event does before calling ``__init__``."""
    aggregate.__base_init__(originator_id, version, timestamp)


def postgres_connection_kwargs(datastore: PostgresDatastore) -> dict[str, Any]:
    """The keyword arguments the library's pool passes to every new connection
    (psycopg_pool's ``ConnectionPool.kwargs``), to add libpq options the library does
    not expose. Effective for connections opened after the change: the library opens its
    pool lazily, on first use."""
    kwargs = datastore.pool.kwargs
    assert isinstance(kwargs, dict), "psycopg_pool keeps connection kwargs as a dict"
    return kwargs


# eventsourcing 9.5: the PostgreSQL recorders' inserts are public only with the library's
# own retry around them (``@retry(..., max_attempts=10, wait=0.2)``, which keeps the
# undecorated method as ``__wrapped__``, functools.wraps).
def postgres_insert_once(
    recorder: PostgresAggregateRecorder, stored_events: Sequence[StoredEvent], **kwargs: Any
) -> Sequence[int] | None:
    """One try of the library's ``PostgresAggregateRecorder.insert_events`` (its own
    connection and transaction), without its retry: the caller retries in time."""
    insert = PostgresAggregateRecorder.insert_events
    assert hasattr(insert, "__wrapped__"), "the library's retry keeps the insert as __wrapped__"
    written: Sequence[int] | None = insert.__wrapped__(recorder, stored_events, **kwargs)
    return written


def postgres_select_once(
    recorder: PostgresAggregateRecorder, originator_id: UUID | str, **kwargs: Any
) -> Sequence[StoredEvent]:
    """One try of the library's ``PostgresAggregateRecorder.select_events``, without its
    retry (the same decorator as its insert's): the caller retries in time."""
    select = PostgresAggregateRecorder.select_events
    assert hasattr(select, "__wrapped__"), "the library's retry keeps the select as __wrapped__"
    found: Sequence[StoredEvent] = select.__wrapped__(recorder, originator_id, **kwargs)
    return found


# psycopg_pool 3.2/3.3: a pool's connection check (``check=`` at construction, which the
# library sets to a ping of every connection it hands out when pre-ping is on) is kept
# only in the pool's protected ``_check``.
def set_pool_check(pool: ConnectionPool[Any], check: Callable[[Any], None]) -> None:
    """Replace the check the pool runs on each connection before handing it out."""
    assert hasattr(pool, "_check"), "psycopg_pool keeps its connection check in _check"
    pool._check = check


# psycopg_pool 3.2/3.3: the pool keeps its idle connections in the protected deque
# ``_pool`` and hands out the one at its left (``_get_ready_connection``: ``popleft``),
# while a returned one goes to its right; it has no option for the other order. It ends a
# connection past its ``max_lifetime`` (the connection's ``_expire_at``) only when it is
# returned (or on ``check()``).
def hand_out_last_returned(pool: ConnectionPool[Any]) -> None:
    """Make the pool hand out the connection returned last (a stack), not the one idle
    longest (a queue). Everything else of the pool's hand-out (its count of the fewest
    idle connections, which its shrinking reads; its errors) is its own: the idle
    connection returned last is moved to the deque's left, where the pool takes it.

    Except when the one idle longest is past its lifetime: that one is handed out, as
    the queue would, so that its return replaces it. A stack alone never hands out
    those below its top, which then outlived their lifetime for as long as the
    process ran (the library's ``POSTGRES_CONN_MAX_AGE``, an hour by default)."""
    idle = getattr(pool, "_pool", None)
    hand_out = getattr(pool, "_get_ready_connection", None)
    assert isinstance(idle, deque), "psycopg_pool keeps its idle connections in _pool"
    assert callable(hand_out), "psycopg_pool hands out through _get_ready_connection"

    def last_returned_first(timeout: float | None) -> Any:
        if len(idle) > 1 and idle[0]._expire_at > time.monotonic():
            idle.rotate(1)
        return hand_out(timeout)

    pool._get_ready_connection = last_returned_first  # type: ignore[method-assign]


class ExecutemanySQLiteRecorder(SQLiteApplicationRecorder):
    """The library's SQLite application recorder, inserting a write's rows with one
    ``executemany`` instead of one ``execute`` per event (its ``_insert_events`` hook,
    called by ``insert_events`` inside the write transaction).

    The notification ids it must return are the rows' rowids: inside the one write
    transaction SQLite numbers new rows one above the largest rowid, in insertion order,
    so they are the ``len(rows)`` ids ending at ``last_insert_rowid()``."""

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **_: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        # Rows the mapper made as it encoded the events (``StoredRows``) go as they are.
        rows = (
            stored_events.rows
            if isinstance(stored_events, StoredRows)
            else [row_of(event) for event in stored_events]
        )
        c.executemany(self.insert_events_statement, rows)
        c.execute("SELECT last_insert_rowid()")
        last = int(c.fetchone()[0])
        return list(range(last - len(rows) + 1, last + 1))


# eventsourcing 9.5: a Notification is a frozen dataclass whose constructor sets each
# field through object.__setattr__; its state is a plain instance dict (no slots), which
# is how the library's own mapper builds domain events.
def new_notification(
    position: int, originator_id: UUID | str, originator_version: int, topic: str, state: bytes
) -> Notification:
    """``Notification(id=position, …)``, built without the frozen dataclass's
    constructor (a catch-up builds one per event of the log)."""
    notification = object.__new__(Notification)
    object.__setattr__(
        notification,
        "__dict__",
        {
            "originator_id": originator_id,
            "originator_version": originator_version,
            "topic": topic,
            "state": state,
            "id": position,
        },
    )
    return notification


# eventsourcing 9.5: the SQLite connection pool has no hook for new connections.
def on_new_sqlite_connections(datastore: SQLiteDatastore, setup: Callable[[Any], None]) -> None:
    """Run ``setup(sqlite3_connection)`` on every connection of the datastore's pool,
    those already open and those it opens later."""
    pool: Any = datastore.pool
    create_connection = pool._create_connection

    def create_and_set_up() -> Any:
        connection = create_connection()
        setup(connection._sqlite_conn)
        return connection

    pool._create_connection = create_and_set_up
    for connection in list(pool._pool):
        setup(connection._sqlite_conn)


# eventsourcing 9.5: the SQLite pool opens each connection in ``_create_connection`` with
# ``cached_statements=True``, a cache of ONE statement (True is 1), and offers no way to
# ask for more: a read's ``BEGIN`` and its query then compile again on every call.
def cache_sqlite_statements(datastore: SQLiteDatastore, size: int) -> None:
    """Connections the datastore's pool opens from now on keep ``size`` statements
    compiled. Each is the library's own (its journal mode set, its row factory) on a
    connection opened with the same arguments but this cache (SQLite fixes the cache
    size when a connection opens). An in-memory database is left alone: each of its
    connections opened anew would be another database. Install it before any other
    hook on the pool's new connections (``on_new_sqlite_connections``)."""
    pool: Any = datastore.pool
    create_connection = pool._create_connection
    if pool.is_sqlite_memory_mode or getattr(create_connection, "caches_statements", False):
        return  # in memory, or installed already (another recorder on the same datastore)

    def create_caching() -> Any:
        made = create_connection()
        library_connection: sqlite3.Connection = made._sqlite_conn
        caching = sqlite3.connect(
            database=pool.db_name,
            uri=True,
            check_same_thread=False,
            isolation_level=None,  # autocommit, as the library's: its transactions say BEGIN
            cached_statements=size,
            timeout=pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT,
        )
        caching.row_factory = library_connection.row_factory
        library_connection.close()
        made._sqlite_conn = caching
        return made

    create_caching.caches_statements = True  # type: ignore[attr-defined]
    pool._create_connection = create_caching


# eventsourcing 9.5: the tracking insert (which refuses an id not above the stored one,
# exactly-once) is only public bundled with the library's own view update.
def insert_tracking(
    recorder: SQLiteTrackingRecorder | PostgresTrackingRecorder, cursor: Any, tracking: Tracking
) -> None:
    recorder._insert_tracking(cursor, tracking)


# eventsourcing 9.5: ListenNotifySubscription pulls ``_select_limit`` rows per query.
def set_pull_batch_size(subscription: ListenNotifySubscription[Any], size: int) -> None:
    subscription._select_limit = size


# eventsourcing 9.5: a Subscription subclass finds its recorder, its position, its topics
# and whether it was stopped only in the base class's protected attributes (set in
# ``Subscription.__init__`` and ``stop``); a ListenNotifySubscription pulls its next batch
# when its protected ``_has_been_notified`` event is set.
def subscription_recorder(subscription: Subscription[TRecorder]) -> TRecorder:
    return subscription._recorder


def subscription_position(subscription: Subscription[Any]) -> int | None:
    """The last position the subscription delivered (``gt`` until it delivers one)."""
    position: int | None = subscription._last_notification_id
    return position


def set_subscription_position(subscription: Subscription[Any], position: int) -> None:
    subscription._last_notification_id = position


def subscription_topics(subscription: Subscription[Any]) -> list[str]:
    return list(subscription._topics)


def subscription_stopped(subscription: Subscription[Any]) -> bool:
    return bool(subscription._has_been_stopped)


def wake_subscription(subscription: ListenNotifySubscription[Any]) -> None:
    """Make the subscription pull now (what a PostgreSQL NOTIFY does)."""
    subscription._has_been_notified.set()


# eventsourcing 9.5: the in-memory recorder has no query for an event's position.
def popo_position(recorder: POPOApplicationRecorder, originator_id: str, version: int) -> int:
    with recorder._database_lock:
        return int(recorder._stored_events_index[originator_id][version]) + 1


# litestar 2.x/3.x: the served OpenAPI document can only be replaced through the
# plugin's private cache (no public hook takes a post-processed document).
def openapi_document(app: Litestar) -> dict[str, Any]:
    from litestar._openapi.plugin import OpenAPIPlugin  # noqa: PLC0415  # private module

    document: dict[str, Any] = app.plugins.get(OpenAPIPlugin).provide_openapi_schema()
    return document


def serve_openapi_document(app: Litestar, document: dict[str, Any]) -> None:
    from litestar._openapi.plugin import OpenAPIPlugin  # noqa: PLC0415  # private module

    app.plugins.get(OpenAPIPlugin)._openapi_schema = document


# litestar 2.25: a request goes from the app's ASGI handler (the app-level exception
# middleware, ``Litestar.asgi_handler``) to the router (``Litestar.asgi_router``), which
# checks the Host header, finds the route by path and method (``handle_routing``), and
# puts the route handler, its path template and its exception handlers (resolved anew
# for every request, in the private ``ScopeState``) into the scope before it calls the
# route's ASGI stack (the route's middleware around the handler). No public knob runs
# code before the router.
def route_directly(app: Litestar, path: str, method: str) -> None:
    """Requests for exactly ``path`` and ``method`` go from the app's exception middleware
    straight to the route's stack, the scope prepared as the router prepares it (the
    route's lookup and its exception handlers resolved once, here); every other request
    goes to the router as before, also one whose Host header the router refuses."""
    from litestar._asgi.utils import is_valid_host  # noqa: PLC0415  # private module
    from litestar.middleware._internal.exceptions import (  # noqa: PLC0415  # private
        ExceptionHandlerMiddleware,
    )
    from litestar.utils.scope.state import ScopeState  # noqa: PLC0415  # private state

    front = app.asgi_handler
    assert isinstance(front, ExceptionHandlerMiddleware), "the app's handler: its exceptions"
    router = front.app
    assert router is app.asgi_router, "the app's exception middleware wraps the router alone"
    assert app.cors_config is None, "CORS would wrap the router too"
    stack, handler, routed_path, path_params, template = router.handle_routing(path, method)
    assert routed_path == path, "an exact path"
    assert not path_params, "no path parameters"
    handlers = handler.resolve_exception_handlers()

    async def direct(scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["path"] != path
            or scope.get("method") != method
            or scope.get("root_path")
            or not _host_allowed(scope["headers"], is_valid_host)
        ):
            await router(scope, receive, send)
            return
        scope["path_params"] = {}
        ScopeState.from_scope(scope).exception_handlers = handlers
        scope["route_handler"] = handler
        scope["path_template"] = template
        await stack(scope, receive, send)

    front.app = direct


def _host_allowed(headers: Iterable[tuple[bytes, bytes]], valid: Callable[[bytes], bool]) -> bool:
    """As the router: the first Host header, if any, must be a valid host."""
    for name, value in headers:
        if name == b"host":
            return valid(value)
    return True


# prometheus_client 0.26: a histogram child adds one observation at a time (``observe``:
# its sum's value, then a Python loop over the bounds to one bucket's value); its values
# are ``_sum`` and ``_buckets`` (one per upper bound, +Inf last, not cumulative).
def add_to_histogram(child: Histogram, bucket_counts: Sequence[int], total: float) -> None:
    """Add observations already sorted into the child's buckets (``bucket_counts``, one
    per upper bound, +Inf last) whose sum is ``total``: as many ``observe`` calls."""
    buckets = child._buckets
    assert len(buckets) == len(bucket_counts), "one count per bucket of the histogram"
    child._sum.inc(total)
    for value, count in zip(buckets, bucket_counts, strict=True):
        if count:
            value.inc(count)


# uvicorn 0.54: its HTTP protocols answer bytes they cannot parse as a request with their
# own text/plain 400 from ``send_400_response(msg)``, a method with no documented way to
# change it; the protocol class itself is a documented option (``uvicorn.Config(http=…)``).
class ProblemHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's default protocol (httptools), except that a request it cannot parse is
    answered as a problem document with a stable code (MALFORMED_REQUEST_BODY), and that
    what it writes during one turn of the event loop goes to the socket at once
    (``OneWritePerTurn``)."""

    def connection_made(  # type: ignore[override]  # as uvicorn's own
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(OneWritePerTurn(transport, self.loop))

    def send_400_response(self, msg: str) -> None:  # noqa: ARG002  # uvicorn logs msg
        from app.api.errors import (  # noqa: PLC0415  # no cycle: see the imports above
            MALFORMED_REQUEST_BODY,
            PROBLEM_MEDIA_TYPE,
        )

        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:  # date, server
            head.append(name + b": " + value + b"\r\n")
        head.append(b"content-type: " + PROBLEM_MEDIA_TYPE.encode() + b"\r\n")
        head.append(b"content-length: " + str(len(MALFORMED_REQUEST_BODY)).encode() + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + MALFORMED_REQUEST_BODY)
        self.transport.close()


# uvicorn 0.54 writes a response's head (at ``http.response.start``) and its body (at
# ``http.response.body``) with one ``transport.write`` each, and uvloop sends each at once:
# two system calls and two TCP segments per answer, the client woken for each.
class OneWritePerTurn(asyncio.Transport):
    """A connection's transport that holds a write until the next one, which it sends
    with it (a response's head goes out with its body: one send, at once), or until the
    end of the loop's turn if none comes. Everything else is the transport's own;
    closing sends what is held first."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes | bytearray | memoryview] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._held:
            self._held.append(data)
            self._send()
            return
        self._held.append(data)
        self._loop.call_soon(self._send)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _send(self) -> None:
        held, self._held = self._held, []
        if held and not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self._send()
        self._transport.close()

    def write_eof(self) -> None:
        self._send()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = []
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(data) for data in self._held)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()
