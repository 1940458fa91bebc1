"""One test per library seam in app/compat.py: each fails loudly when an upgrade of
eventsourcing or Litestar moves or changes the private part the seam relies on."""

import asyncio
import inspect
import queue
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.domain import Aggregate, CanInitAggregate
from eventsourcing.persistence import (
    IntegrityError,
    ListenNotifySubscription,
    Notification,
    OperationalError,
    StoredEvent,
    Subscription,
    Tracking,
)
from eventsourcing.popo import POPOApplicationRecorder
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from eventsourcing.sqlite import SQLiteDatastore
from litestar import Litestar, Response, get, post
from litestar.testing import TestClient
from litestar.types import ASGIApp, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from psycopg_pool import ConnectionPool
from uvicorn import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.application.commands import OpenAccount
from app.application.ledger import Ledger
from app.compat import (
    ExecutemanySQLiteRecorder,
    OneWritePerTurn,
    ProblemHttpToolsProtocol,
    add_to_histogram,
    cache_sqlite_statements,
    hand_out_last_returned,
    initialise_aggregate,
    insert_tracking,
    new_notification,
    on_new_sqlite_connections,
    openapi_document,
    popo_position,
    postgres_connection_kwargs,
    postgres_insert_once,
    postgres_select_once,
    route_directly,
    serve_openapi_document,
    set_pool_check,
    set_pull_batch_size,
    set_subscription_position,
    subscription_position,
    subscription_recorder,
    subscription_stopped,
    subscription_topics,
    wake_subscription,
)
from app.domain.account import Account
from app.domain.values import account_uuid
from app.persistence.sqlite_subscription import (
    SQLitePollingSubscription,
    SubscribableSQLiteApplicationRecorder,
)
from app.persistence.stores import sqlite_env, sqlite_url
from projections.runner import open_view
from tests.conftest import store_env
from tests.support.threads import assert_all_end

SYNCHRONOUS_NORMAL = 1
WAKE_GRACE_SECONDS = 0.2
WAKE_WAIT_SECONDS = 10.0


def test_setup_runs_on_sqlite_connections_already_open_and_opened_later(tmp_path: Path) -> None:
    datastore = SQLiteDatastore(str(tmp_path / "seam.sqlite"))
    seen: list[sqlite3.Connection] = []
    with datastore.transaction(commit=False):
        pass  # opens one connection before the hook is installed
    on_new_sqlite_connections(datastore, seen.append)
    assert len(seen) >= 1, "the connection already in the pool was set up"
    opened_before = len(seen)
    pool: Any = datastore.pool
    created = pool._create_connection()  # what the pool calls for a new connection
    assert len(seen) == opened_before + 1
    assert all(isinstance(connection, sqlite3.Connection) for connection in seen)
    created.close()
    datastore.close()


def compilations(connection: sqlite3.Connection, statements: list[str], rounds: int) -> int:
    """How many times SQLite compiled one of these ``SELECT`` statements while they ran
    ``rounds`` times in turn: its authorizer is asked only while a statement compiles,
    once with ``SQLITE_SELECT`` per select (setting it expires what was compiled
    before, so a count starts from nothing kept)."""
    compiled = 0

    def authorize(action: int, *_: object) -> int:
        nonlocal compiled
        compiled += action == sqlite3.SQLITE_SELECT
        return sqlite3.SQLITE_OK

    connection.set_authorizer(authorize)
    for _ in range(rounds):
        for statement in statements:
            connection.execute(statement).fetchall()
    connection.set_authorizer(None)
    return compiled


def test_the_sqlite_pool_caches_one_statement_and_the_seam_caches_more(tmp_path: Path) -> None:
    statements = ["SELECT 1", "SELECT 2"]
    plain = SQLiteDatastore(str(tmp_path / "plain.sqlite"))
    pool: Any = plain.pool
    library_made = pool._create_connection()
    assert compilations(library_made._sqlite_conn, statements, rounds=4) == 4 * len(statements), (
        "the library's pool no longer caches one statement: the seam may be dropped"
    )
    library_made.close()
    plain.close()

    datastore = SQLiteDatastore(str(tmp_path / "seam.sqlite"))
    cache_sqlite_statements(datastore, 16)
    cache_sqlite_statements(datastore, 16)  # a second recorder on the same datastore
    made = datastore.pool._create_connection()
    connection: sqlite3.Connection = made._sqlite_conn
    assert compilations(connection, statements, rounds=4) == len(statements), "each compiled once"
    # Otherwise the library's own connection: its journal mode, row factory, autocommit.
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.row_factory is sqlite3.Row
    assert connection.isolation_level is None
    with datastore.transaction(commit=True) as cursor:
        cursor.execute("CREATE TABLE kept (n INTEGER)")
        cursor.execute("INSERT INTO kept VALUES (1)")
    with datastore.transaction(commit=False) as cursor:
        cursor.execute("SELECT n FROM kept")
        assert [tuple(row) for row in cursor.fetchall()] == [(1,)]
    made.close()
    datastore.close()


def test_an_in_memory_sqlite_pool_is_left_as_the_library_made_it() -> None:
    datastore = SQLiteDatastore(":memory:")
    pool: Any = datastore.pool
    before = pool._create_connection
    cache_sqlite_statements(datastore, 16)
    assert pool._create_connection == before
    datastore.close()


def test_view_connections_run_with_relaxed_durability(tmp_path: Path) -> None:
    view: Any = open_view(sqlite_url(tmp_path / "views.sqlite"), 1)
    with view.datastore.transaction(commit=False) as cursor:
        cursor.execute("PRAGMA synchronous")
        assert cursor.fetchone()[0] == SYNCHRONOUS_NORMAL
    view.datastore.close()


def test_the_tracking_insert_refuses_a_position_not_above_the_stored_one(tmp_path: Path) -> None:
    view: Any = open_view(sqlite_url(tmp_path / "views.sqlite"), 1)
    with view.datastore.transaction(commit=True) as cursor:
        insert_tracking(view, cursor, Tracking("ledger", 5))
    assert view.max_tracking_id("ledger") == 5
    with pytest.raises(IntegrityError), view.datastore.transaction(commit=True) as cursor:
        insert_tracking(view, cursor, Tracking("ledger", 5))
    assert view.max_tracking_id("ledger") == 5
    view.datastore.close()


def test_the_pull_batch_size_is_the_subscriptions_select_limit(tmp_path: Path) -> None:
    assert "self._select_limit" in inspect.getsource(ListenNotifySubscription), (
        "ListenNotifySubscription no longer pulls _select_limit rows per query"
    )
    env = sqlite_env(str(tmp_path / "events.sqlite"))
    with Ledger(env) as ledger:
        recorder = ledger.recorder
        assert isinstance(recorder, SubscribableSQLiteApplicationRecorder)
        for number in range(5):
            ledger.open_account(OpenAccount(f"a{number}", "CREDITS"))
        with recorder.subscribe(gt=0) as subscription:
            assert isinstance(subscription, ListenNotifySubscription)
            set_pull_batch_size(subscription, 2)
            assert subscription._select_limit == 2
            positions = [next(subscription).id for _ in range(5)]
    assert positions == sorted(positions)
    assert len(set(positions)) == 5


def test_the_in_memory_store_tells_where_an_event_sits() -> None:
    with Ledger({"PERSISTENCE_MODULE": "eventsourcing.popo"}) as ledger:
        assert isinstance(ledger.recorder, POPOApplicationRecorder)
        first = ledger.open_account(OpenAccount("a", "CREDITS"))
        second = ledger.open_account(OpenAccount("b", "CREDITS"))
        assert popo_position(ledger.recorder, str(account_uuid("a")), 0) == first.position
        assert popo_position(ledger.recorder, str(account_uuid("b")), 0) == second.position
        with pytest.raises(KeyError):
            popo_position(ledger.recorder, str(uuid4()), 0)


def test_a_refined_openapi_document_is_the_one_served() -> None:
    @get("/ping", sync_to_thread=False)
    def ping() -> str:
        return "pong"

    app = Litestar([ping])
    document = openapi_document(app)
    assert "/ping" in document["paths"]
    document["info"]["description"] = "refined"
    serve_openapi_document(app, document)
    with TestClient(app=app) as client:
        served = client.get("/schema/openapi.json").json()
    assert served["info"]["description"] == "refined"


class RouteRefusalError(Exception):
    """Raised by a route's middleware; only the route has a handler for it."""


ROUTE_SCOPE_KEYS = ("path", "path_params", "path_template")


def scope_watching_app() -> tuple[Litestar, list[dict[str, Any]]]:
    """An app whose ``POST /v1/things`` has a middleware that notes what the scope holds
    (and raises ``RouteRefusalError`` when asked to) and an exception handler of its own."""
    seen: list[dict[str, Any]] = []

    def watching(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            noted = {key: scope.get(key) for key in ROUTE_SCOPE_KEYS}
            noted["route_handler"] = scope["route_handler"].handler_name
            seen.append(noted)
            if (b"x-refuse", b"1") in scope["headers"]:
                raise RouteRefusalError
            await app(scope, receive, send)

        return middleware

    def refused(_: Any, __: RouteRefusalError) -> Response[str]:
        return Response("refused by the route's handler", status_code=418)

    @post(
        "/v1/things",
        middleware=[watching],
        exception_handlers={RouteRefusalError: refused},
        sync_to_thread=False,
    )
    def make() -> str:
        return "made"

    return Litestar([make]), seen


def test_a_route_taken_directly_gets_the_routers_scope_and_exception_handlers() -> None:
    answers = []
    for direct in (False, True):
        app, seen = scope_watching_app()
        if direct:
            route_directly(app, "/v1/things", "POST")
        with TestClient(app=app) as client:
            made = client.post("/v1/things")
            refused = client.post("/v1/things", headers={"x-refuse": "1"})
        answers.append((made.status_code, made.text, refused.status_code, refused.text, seen))
    assert answers[0] == answers[1]
    assert answers[1][:4] == (201, "made", 418, "refused by the route's handler")


def test_only_the_routes_own_requests_with_a_host_the_router_allows_skip_the_router(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, seen = scope_watching_app()
    route_directly(app, "/v1/things", "POST")

    def no_router(*_: Any) -> None:
        raise AssertionError("the router was asked")

    monkeypatch.setattr(app.asgi_router, "handle_routing", no_router)
    with TestClient(app=app) as client:
        assert client.post("/v1/things").text == "made"
        assert len(seen) == 1
        for routed in (
            client.post("/v1/things/"),  # not exactly the path
            client.get("/v1/things"),  # nor the method
        ):
            assert routed.status_code == 500  # the router was asked: it raised
        # The router refuses a bad Host header before it looks the route up.
        assert client.post("/v1/things", headers={"Host": "bad/host"}).status_code == 400
        with TestClient(app=app, root_path="/api") as mounted:
            assert mounted.post("/v1/things").status_code == 500
    assert len(seen) == 1


def test_observations_added_by_bucket_are_exposed_as_the_same_observe_calls() -> None:
    latencies = [0.0005, 0.001, 0.25, 0.25, 3.0, 7.5, 0.125]  # exact in binary: exact sums
    exposed = []
    for by_bucket in (False, True):
        registry = CollectorRegistry()
        histogram = Histogram("seam", "a seam", ["route"], registry=registry, buckets=(0.001, 1, 5))
        child = histogram.labels(route="/x")
        if by_bucket:
            add_to_histogram(child, [2, 3, 1, 1], sum(latencies))
        else:
            for latency in latencies:
                child.observe(latency)
        lines = generate_latest(registry).decode().splitlines()
        exposed.append([line for line in lines if "_created" not in line])
    assert exposed[0] == exposed[1]
    assert 'seam_bucket{le="1.0",route="/x"} 5.0' in exposed[1]


def test_the_postgres_pool_exposes_the_kwargs_of_its_future_connections() -> None:
    datastore = PostgresDatastore(dbname="ledger", host="127.0.0.1", port=1, user="u", password="p")
    kwargs = postgres_connection_kwargs(datastore)
    assert kwargs["dbname"] == "ledger"
    kwargs["connect_timeout"] = 3
    assert postgres_connection_kwargs(datastore)["connect_timeout"] == 3


def test_the_sqlite_recorder_inserts_through_its_hook_and_numbers_rows_by_rowid(
    tmp_path: Path,
) -> None:
    """``insert_events`` must call ``_insert_events`` in its transaction and hand back
    its ids as the notification ids; ours must be the rows' rowids."""
    datastore = SQLiteDatastore(str(tmp_path / "events.sqlite"))
    recorder = ExecutemanySQLiteRecorder(datastore)
    recorder.create_table()
    calls: list[int] = []
    original = recorder._insert_events  # the seam under test

    def counting(cursor: Any, stored_events: Any, **kwargs: Any) -> Any:
        calls.append(len(stored_events))
        return original(cursor, stored_events, **kwargs)

    recorder._insert_events = counting  # type: ignore[method-assign,assignment]
    for size in (3, 1, 4):
        stream = uuid4()
        events = [StoredEvent(stream, version, "topic", b"{}") for version in range(size)]
        ids = recorder.insert_events(events)
        assert ids is not None
        assert len(ids) == size
        rows = recorder.select_notifications(start=ids[0], limit=size)
        assert [row.id for row in rows] == list(ids)
        assert [(row.originator_id, row.originator_version) for row in rows] == [
            (stream, version) for version in range(size)
        ]
    assert calls == [3, 1, 4]
    assert recorder.max_notification_id() == 8


def test_a_notification_built_without_its_constructor_is_the_constructors(
    tmp_path: Path,
) -> None:
    """``new_notification`` sets the frozen dataclass's instance dict directly: equal,
    hashable and printed as the constructor's, and still frozen."""
    stream = uuid4()
    built = new_notification(9, stream, 2, "app:Event", b'{"a":1}')
    constructed = Notification(
        id=9, originator_id=stream, originator_version=2, topic="app:Event", state=b'{"a":1}'
    )
    assert built == constructed
    assert hash(built) == hash(constructed)
    assert repr(built) == repr(constructed)
    assert vars(built) == vars(constructed)
    with pytest.raises(AttributeError):
        built.id = 10  # type: ignore[misc]  # frozen


def test_the_sqlite_recorder_selects_the_notifications_the_library_selects(
    tmp_path: Path,
) -> None:
    """The subscription's form of ``select_notifications`` (read as tuples) answers what
    the library's own query answers, from any position, inclusive or not."""
    datastore = SQLiteDatastore(str(tmp_path / "events.sqlite"))
    ours = SubscribableSQLiteApplicationRecorder(datastore)
    ours.create_table()
    library = ExecutemanySQLiteRecorder(datastore)
    streams = [uuid4() for _ in range(3)]
    for version in range(4):
        ours.insert_events(
            [
                StoredEvent(s, version, f"t:{n}", b'{"v":%d}' % version)
                for n, s in enumerate(streams)
            ]
        )
    head = ours.max_notification_id()
    assert head == 12
    for start in (0, 1, 5, 12, 13):
        for inclusive in (True, False):
            for limit in (1, 4, 100):
                found = ours.select_notifications(start, limit, inclusive_of_start=inclusive)
                expected = library.select_notifications(start, limit, inclusive_of_start=inclusive)
                assert found == expected, (start, inclusive, limit)
    assert len(ours.select_notifications(0, 100)) == head


class Probe(Subscription[Any]):
    """The smallest subscription a subclass can write: it relies on the seams alone."""

    def __next__(self) -> Notification:
        raise StopIteration


def test_a_subscription_keeps_its_recorder_position_topics_and_stop_where_the_seams_read(
    tmp_path: Path,
) -> None:
    recorder = ExecutemanySQLiteRecorder(SQLiteDatastore(str(tmp_path / "events.sqlite")))
    probe = Probe(recorder, gt=7, topics=["a:Opened", "b:Closed"])
    assert subscription_recorder(probe) is recorder
    assert subscription_position(probe) == 7
    assert subscription_topics(probe) == ["a:Opened", "b:Closed"]
    assert subscription_stopped(probe) is False
    set_subscription_position(probe, 12)
    assert subscription_position(probe) == 12
    probe.stop()
    assert subscription_stopped(probe) is True
    assert subscription_position(Probe(recorder)) is None, "no position before the first"


def test_the_library_advances_the_position_the_seam_reads(tmp_path: Path) -> None:
    """ListenNotifySubscription itself moves the position the KurrentDB subscription
    sets and reads through the seam: the two must stay the same attribute."""
    env = sqlite_env(str(tmp_path / "events.sqlite"))
    with Ledger(env) as ledger:
        for number in range(3):
            ledger.open_account(OpenAccount(f"a{number}", "CREDITS"))
        head = ledger.recorder.max_notification_id()
        with ledger.recorder.subscribe(gt=0) as subscription:
            delivered = [next(subscription).id for _ in range(3)]
            assert subscription_position(subscription) == delivered[-1] == head


def test_waking_a_polling_subscription_makes_it_pull_at_once(tmp_path: Path) -> None:
    env = sqlite_env(str(tmp_path / "events.sqlite"))
    with Ledger(env) as ledger:
        recorder = ledger.recorder
        assert isinstance(recorder, SubscribableSQLiteApplicationRecorder)
        ledger.open_account(OpenAccount("early", "CREDITS"))
        # A poll interval far beyond the test: only the wake can make it pull again.
        with SQLitePollingSubscription(recorder, gt=0, poll_interval_seconds=3600) as subscription:
            assert next(subscription).id == recorder.max_notification_id()  # the first pull
            ledger.open_account(OpenAccount("late", "CREDITS"))
            delivered: queue.Queue[int] = queue.Queue()
            reader = threading.Thread(target=lambda: delivered.put(next(subscription).id))
            reader.start()
            time.sleep(WAKE_GRACE_SECONDS)
            assert delivered.empty(), "nothing pulls the new event before the wake"
            wake_subscription(subscription)
            assert delivered.get(timeout=WAKE_WAIT_SECONDS) == recorder.max_notification_id()
            assert_all_end([reader], WAKE_WAIT_SECONDS)


@pytest.mark.postgres
def test_the_postgres_pool_runs_the_check_we_set_on_each_connection_it_hands_out(
    postgres_url: str,
) -> None:
    with Ledger(store_env(postgres_url)) as ledger:
        pool = ledger.recorder.datastore.pool  # type: ignore[attr-defined]
        checked: list[Any] = []
        set_pool_check(pool, checked.append)
        with ledger.recorder.datastore.get_connection() as connection:  # type: ignore[attr-defined]
            assert checked == [connection]


@pytest.mark.postgres
def test_the_postgres_pool_hands_out_the_connection_returned_last(postgres_url: str) -> None:
    with ConnectionPool(postgres_url, min_size=2, max_size=2, open=True) as pool:
        pool.wait()
        hand_out_last_returned(pool)
        with pool.connection() as first, pool.connection() as second:
            assert first is not second
        # ``second`` went back first, then ``first``: the pool's own order (a queue)
        # would hand out ``second``, idle longest, now.
        with pool.connection() as again:
            assert again is first
            with pool.connection() as other:
                assert other is second
        with pool.connection() as last:
            assert last is first


@pytest.mark.postgres
def test_the_postgres_pool_handing_out_the_last_returned_still_ends_expired_connections(
    postgres_url: str,
) -> None:
    """psycopg_pool ends a connection past its lifetime (``_expire_at``) when it is
    returned: the idle ones below the stack's top, never handed out, are handed out
    once expired and so replaced."""
    with ConnectionPool(postgres_url, min_size=3, max_size=3, open=True) as pool:
        pool.wait()
        hand_out_last_returned(pool)
        with pool.connection() as top:
            pass
        below = [connection for connection in pool._pool if connection is not top]
        assert len(below) == 2
        for connection in below:
            connection._expire_at = 0.0  # past its lifetime
        for _ in range(3):
            with pool.connection():
                pass
        pool.wait()  # the replacements opened
        assert not {id(connection) for connection in below} & {id(c) for c in pool._pool}
        assert all(connection.closed for connection in below)


def test_one_try_of_the_librarys_snapshot_insert_writes_and_fails_without_retrying(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Ledger(store_env(postgres_url)) as ledger:
        assert ledger.snapshots is not None
        recorder = ledger.snapshots.recorder
        assert isinstance(recorder, PostgresAggregateRecorder)
        stream = uuid4()
        postgres_insert_once(recorder, [StoredEvent(stream, 0, "topic", b"{}")])
        assert [e.originator_version for e in recorder.select_events(stream)] == [0]
        tries: list[int] = []

        @contextmanager
        def unreachable() -> Iterator[Any]:
            tries.append(1)
            raise OperationalError("connection refused")
            yield  # a generator, as the library's get_connection

        monkeypatch.setattr(recorder.datastore, "get_connection", unreachable)
        with pytest.raises(OperationalError):
            postgres_insert_once(recorder, [StoredEvent(stream, 1, "topic", b"{}")])
        assert tries == [1], "one try: no retry of the library's around it"


def test_one_try_of_the_librarys_select_reads_a_streams_events(postgres_url: str) -> None:
    with Ledger(store_env(postgres_url)) as ledger:
        ledger.open_account(OpenAccount("alice", "CREDITS"))
        recorder = ledger.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        found = postgres_select_once(recorder, account_uuid("alice"), desc=True, limit=1)
        assert [e.originator_version for e in found] == [0]


async def no_app(_scope: Any, _receive: Any, _send: Any) -> None:
    """An ASGI app for a configuration that never serves."""


def test_uvicorn_answers_unreadable_requests_through_the_overridden_method() -> None:
    """``ProblemHttpToolsProtocol`` replaces ``send_400_response(msg)``: uvicorn must still
    call it (with one argument) where the parser gives up, and still be the default protocol
    class the ``http=`` option replaces. tests/e2e/test_serve.py checks the answer itself."""
    parameters = list(inspect.signature(HttpToolsProtocol.send_400_response).parameters)
    assert parameters == ["self", "msg"]
    data_received = inspect.getsource(HttpToolsProtocol.data_received)
    assert "except httptools.HttpParserError" in data_received
    assert "self.send_400_response(msg)" in data_received
    assert ProblemHttpToolsProtocol.send_400_response is not HttpToolsProtocol.send_400_response
    config = Config(app=no_app, http=ProblemHttpToolsProtocol)
    config.load()
    assert config.http_protocol_class is ProblemHttpToolsProtocol
    default = Config(app=no_app)
    default.load()
    assert issubclass(ProblemHttpToolsProtocol, default.http_protocol_class)


class RecordingTransport(asyncio.Transport):
    """A connection that keeps what is written to it, write by write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def answering_ok(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


def writes_for(protocol_class: type[HttpToolsProtocol], request: bytes) -> RecordingTransport:
    async def scenario() -> RecordingTransport:
        config = Config(app=answering_ok, http=protocol_class, proxy_headers=False)
        config.load()
        protocol = protocol_class(config, ServerState(), {}, asyncio.get_running_loop())
        transport = RecordingTransport()
        protocol.connection_made(transport)
        protocol.data_received(request)
        for _ in range(20):  # the app's task, then the turn after it
            await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport

    return asyncio.run(scenario())


def test_a_responses_head_and_body_go_to_the_connection_in_one_write() -> None:
    """uvicorn writes a response's head and body with a write each (each a send on the
    socket); ``ProblemHttpToolsProtocol`` hands them to the connection as one."""
    request = b"GET / HTTP/1.1\r\nHost: ledger\r\n\r\n"
    assert len(writes_for(HttpToolsProtocol, request).writes) == 2  # the seam: uvicorn's way
    (written,) = writes_for(ProblemHttpToolsProtocol, request).writes
    assert written.startswith(b"HTTP/1.1 200 OK\r\n")
    assert written.endswith(b"\r\ncontent-length: 2\r\n\r\nok")


def test_a_held_write_goes_out_with_the_next_at_once_or_alone_at_the_turns_end() -> None:
    async def scenario() -> None:
        connection = RecordingTransport()
        transport = OneWritePerTurn(connection, asyncio.get_running_loop())
        transport.write(b"head ")
        assert connection.writes == []
        transport.write(b"body")
        assert connection.writes == [b"head body"]  # in this turn, no turn waited for
        transport.write(b"last chunk")
        assert connection.writes == [b"head body"]
        for _ in range(2):
            await asyncio.sleep(0)
        assert connection.writes == [b"head body", b"last chunk"]

    asyncio.run(scenario())


def test_a_connection_closed_after_an_answer_gets_the_whole_answer_first() -> None:
    answered = writes_for(ProblemHttpToolsProtocol, b"NOT HTTP AT ALL\r\n\r\n")
    (written,) = answered.writes
    assert written.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert answered.closed


def test_a_new_aggregate_gets_the_base_attributes_the_librarys_created_event_gives() -> None:
    moment = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    stream = account_uuid("seam")
    account = Account.__new__(Account)
    initialise_aggregate(account, stream, 0, moment)
    assert (account.id, account.version, account.created_on, account.modified_on) == (
        stream,
        0,
        moment,
        moment,
    )
    assert account.pending_events == []
    # The library's own Created event calls the same method with the same names.
    created = inspect.getsource(CanInitAggregate.mutate)
    assert "__base_init__" in created
    assert list(inspect.signature(Aggregate.__base_init__).parameters) == [
        "self",
        "originator_id",
        "originator_version",
        "timestamp",
    ]
