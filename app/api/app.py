"""The Litestar application factory: no I/O at import time; everything comes in through
``Services``, built by the composition root (``app.bootstrap``)."""

import random
import time
from collections.abc import Iterable
from copy import copy
from typing import Any, Final

import structlog
from litestar import Litestar, MediaType, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.enums import ScopeType
from litestar.plugins.pydantic import PydanticPlugin
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.access_log import log_request
from app.api.controllers.accounts import AccountController
from app.api.controllers.events import EventController
from app.api.controllers.grants import GrantController
from app.api.controllers.ledger import LedgerController
from app.api.controllers.monitors import MonitorController
from app.api.controllers.transfers import TransferController
from app.api.controllers.webhooks import WebhookController
from app.api.errors import CLIENT_CLOSED_REQUEST, CLIENT_DISCONNECTED, EXCEPTION_HANDLERS
from app.api.fast_lane import TRANSFERS_PATH
from app.api.metrics import Metrics
from app.api.openapi import docs_assets_router, openapi_config
from app.api.openapi import refine as refine_openapi
from app.api.readiness import ReadinessProbe
from app.api.schemas import Health, Readiness
from app.api.services import Services
from app.compat import route_directly
from app.events.metrics import EventsCollector
from app.explorer.plugin import ExplorerPlugin


def request_context(app: ASGIApp) -> ASGIApp:
    """Request ids (taken from X-Request-ID or made), structured access logs, metrics.

    The request id goes into the answer's headers by ``stamp_answer``, the app's
    ``before_send`` hook, which sees every message the app sends: also an answer made
    outside this middleware, by Litestar's app-level exception handling (a bug raised
    in a handler-level middleware such as the fast lane escapes the route's own)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        method = str(scope.get("method", "-"))
        request_id = _request_id(scope.get("headers") or ())
        exchange = _Exchange(request_id)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state[_EXCHANGE] = exchange
        started = time.perf_counter()

        async def receive_watching() -> ReceiveMessage:
            message = await receive()
            if message["type"] == "http.disconnect":
                state[CLIENT_DISCONNECTED] = True
            return message

        bound = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await app(scope, receive_watching, send)
        finally:
            status = exchange.status
            if state.get(CLIENT_DISCONNECTED) and status >= 500:
                # Not a server error: the client left before it had its answer.
                status = CLIENT_CLOSED_REQUEST
            seconds = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            metrics: NamedDependency[Metrics] = scope["app"].state.metrics
            metrics.observe(method, route, status, seconds)
            log_request(method, scope["path"], status, round(seconds * 1000, 2))
            structlog.contextvars.reset_contextvars(**bound)

    return middleware


# The scope state key of a request's ``_Exchange``.
_EXCHANGE: Final = "exchange"


class _Exchange:
    """What ``request_context`` and ``stamp_answer`` share about one request: its id
    (as the header's bytes) and the status it was answered with (500 until an answer
    starts: a request that raised is logged so, whoever answers it afterwards)."""

    __slots__ = ("header", "status")

    def __init__(self, request_id: str) -> None:
        self.header = (REQUEST_ID_HEADER, request_id.encode())
        self.status = 500


async def stamp_answer(message: Message, scope: Scope) -> None:
    """The app's ``before_send`` hook: a request's answer carries its request id (last
    of its headers) and tells ``request_context`` its status."""
    if message["type"] != "http.response.start":
        return
    exchange = scope.get("state", {}).get(_EXCHANGE)
    if exchange is None:  # not a request ``request_context`` took (an unmatched path)
        return
    exchange.status = message["status"]
    message["headers"] = [*message.get("headers", []), exchange.header]


REQUEST_ID_HEADER: Final = b"x-request-id"
REQUEST_ID_CHARS_MAX: Final = 64


def _request_id(headers: Iterable[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-ID (its last, as a dict of the headers kept it) when
    printable, else a new one: 128 random bits in hex, as ``uuid4().hex`` gave, from the
    process's generator (an id to find a request by, not a secret; ``uuid4`` read the
    operating system's entropy for each request)."""
    given = b""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            given = value
    text = given.decode("latin-1")[:REQUEST_ID_CHARS_MAX]
    if text and text.isprintable():
        return text
    return f"{random.getrandbits(128):032x}"


@get(
    "/v1/health",
    tags=["operations"],
    summary="Liveness",
    sync_to_thread=False,
    operation_id="getHealth",
)
def health() -> Health:
    return Health(status="ok")


@get(
    "/v1/ready",
    tags=["operations"],
    summary="Readiness: store reachable, views fresh",
    sync_to_thread=True,
    operation_id="getReadiness",
)
def ready(readiness: NamedDependency[ReadinessProbe]) -> Response[Readiness]:
    return readiness.answer()


@get(
    "/metrics",
    tags=["operations"],
    summary="Prometheus metrics",
    sync_to_thread=True,
    media_type=MediaType.TEXT,
    include_in_schema=False,
)
def metrics_endpoint(metrics: NamedDependency[Metrics]) -> Response[bytes]:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def create_app(
    services: NamedDependency[Services], *, on_shutdown: list[Any] | None = None
) -> Litestar:
    metrics = Metrics(services.lag, services.worker_states)
    readiness = ReadinessProbe(services)
    if services.events is not None:
        metrics.registry.register(EventsCollector(services.events.lag))
    app = Litestar(
        route_handlers=[
            AccountController,
            GrantController,
            TransferController,
            EventController,
            WebhookController,
            MonitorController,
            LedgerController,
            # Copies: registering a handler makes the app its owner, and a module-level
            # handler would keep the last app built (its services and ledger) alive.
            copy(health),
            copy(ready),
            copy(metrics_endpoint),
            docs_assets_router(),
        ],
        dependencies={
            "services": Provide(lambda: services, sync_to_thread=False),
            "metrics": Provide(lambda: metrics, sync_to_thread=False),
            "readiness": Provide(lambda: readiness, sync_to_thread=False),
        },
        state=State({"services": services, "metrics": metrics}),
        exception_handlers=EXCEPTION_HANDLERS,
        # Strict: "5" is not an amount. Money fields never coerce from strings or floats.
        plugins=[PydanticPlugin(validate_strict=True), ExplorerPlugin(services)],
        middleware=[request_context],
        before_send=[stamp_answer],
        request_max_body_size=services.settings.request_body_bytes_max,
        on_shutdown=on_shutdown or [],
        openapi_config=openapi_config(),
        # The process's logging is configured once, by the command that runs it
        # (bootstrap.configure_logging). Litestar's default would replace the root
        # logger's handlers with one bound to the sys.stderr of the moment and start a
        # queue-listener thread for each app built (tests build many, in one process).
        logging_config=None,
        debug=False,
    )
    refine_openapi(app)
    # The API's hottest request skips the router's look-up (decision 0030).
    route_directly(app, TRANSFERS_PATH, "POST")
    return app
