"""The fast lane of ``POST /v1/transfers``: the API's hottest request, answered without
Litestar's per-request machinery when it is an ordinary one.

A Litestar handler costs the event loop several hundred microseconds per request for
what a transfer needs in a tenth of that: the guard call copies the route handler, the
kwargs and signature models are built, dependencies resolved, the answer is wrapped and
re-wrapped before it is sent. This handler-level middleware (a public Litestar knob)
takes the request first. When it can say for certain that the route would accept it
(no query string, one bearer key verified recently with the ``write`` scope, a body of
announced length within the limit that decodes and validates exactly as the route's
``data`` does), it checks and records the transfer and sends the same answer the route
would. Anything else (a refused key, query or body, and a key only the store can
confirm) is handed to the route untouched, the body replayed, so those errors keep the
route's own answer. The command's own refusals (the rules across fields, the write)
are answered by the app's exception handlers, as the route's would be; anything else
raised there is a bug, left to Litestar's own exception handling.

``tests/api/test_fast_lane.py`` holds both paths to the same bytes."""

from collections.abc import Callable, Iterable
from typing import Any, Final

import orjson
import pydantic
from litestar import MediaType, Request, Response
from litestar.exceptions import SerializationException
from litestar.handlers import HTTPRouteHandler
from litestar.serialization import decode_json
from litestar.types import ASGIApp, HTTPRequestEvent, Receive, ReceiveMessage, Scope, Send

from app.api.consistency import POSITION_HEADER
from app.api.errors import EXCEPTION_HANDLERS
from app.api.metrics import Metrics
from app.api.schemas import TransferCreate, transfer_document
from app.api.services import Services
from app.application.views import TransferOutcome
from app.persistence.faults import STORE_ERRORS
from app.persistence.keys import Verdict, scope_allows

TRANSFERS_PATH: Final = "/v1/transfers"  # the lane's route
WRITE_SCOPE: Final = "write"
_AUTHORIZATION: Final = b"authorization"
_CONTENT_LENGTH: Final = b"content-length"
_JSON_CONTENT_TYPE: Final = MediaType.JSON.encode()
_POSITION: Final = POSITION_HEADER.lower().encode()
# What decoding and validating a body raises when the route would refuse it: not JSON
# (bytes, numbers out of range), nested too deep to decode, or not a transfer.
REFUSED_BODY: Final = (
    SerializationException,
    UnicodeDecodeError,
    RecursionError,
    pydantic.ValidationError,
)


def transfer_fast_lane(app: ASGIApp) -> ASGIApp:
    """Middleware of the transfer route: the fast lane, else ``app`` (the route)."""
    route = app

    async def lane(scope: Scope, receive: Receive, send: Send) -> None:
        app = scope["app"]
        services: Services = app.state.services
        body = await _ordinary_body(scope, receive, services)
        if isinstance(body, _Replay):
            await route(scope, body.receive, send)
            return
        try:
            data = TransferCreate.model_validate(decode_json(body), strict=True)
        except REFUSED_BODY:  # the route answers it, with its own problem
            await route(scope, _Replay.of(body, receive).receive, send)
            return
        try:
            outcome = await services.ledger.record_transfer_async(data.command())
        except STORE_ERRORS as error:  # a refusal or a store fault: the app's handlers
            await _answer_error(scope, receive, send, error)
            return
        metrics: Metrics = app.state.metrics
        if outcome.created:
            metrics.transfers_recorded.inc()
        await _answer(send, outcome)

    return lane


class _Replay:
    """What a request sent so far, given again to the route before the rest."""

    def __init__(self, messages: list[ReceiveMessage], receive: Receive) -> None:
        self._messages = messages
        self._receive = receive

    @classmethod
    def of(cls, body: bytes, receive: Receive) -> "_Replay":
        whole: HTTPRequestEvent = {"type": "http.request", "body": body, "more_body": False}
        return cls([whole], receive)

    async def receive(self) -> ReceiveMessage:
        if self._messages:
            return self._messages.pop(0)
        return await self._receive()


async def _ordinary_body(scope: Scope, receive: Receive, services: Services) -> "bytes | _Replay":
    """The body of a request the route would take as it is, or what to replay to it."""
    authorization, length = _key_and_length(scope["headers"])
    if scope["query_string"] or not _authorized(authorization, services):
        return _Replay([], receive)
    route_handler = scope["route_handler"]
    assert isinstance(route_handler, HTTPRouteHandler), "a middleware of an HTTP route"
    limit = route_handler.resolve_request_max_body_size()  # the route's own limit
    if length is None or limit is None or length > limit:
        return _Replay([], receive)
    messages: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    received = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return _Replay(messages, receive)  # the client left: the route says so
        chunk = message.get("body", b"")
        chunks.append(chunk)
        received += len(chunk)
        if received > length:
            return _Replay(messages, receive)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _key_and_length(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, int | None]:
    """The request's Authorization and its Content-Length, each when it comes exactly
    once (and the length as digits), in one pass over the headers."""
    authorization: bytes | None = None
    length: bytes | None = None
    authorizations = lengths = 0
    for name, value in headers:
        if name == _AUTHORIZATION:
            authorization = value
            authorizations += 1
        elif name == _CONTENT_LENGTH:
            length = value
            lengths += 1
    return (
        authorization if authorizations == 1 else None,
        int(length) if lengths == 1 and length is not None and length.isdigit() else None,
    )


def _authorized(authorization: bytes | None, services: Services) -> bool:
    """One bearer key, verified recently, that may write (else the route's guard says)."""
    if authorization is None:
        return False
    kind, _space, key = authorization.decode("latin-1").partition(" ")
    if kind.lower() != "bearer" or not key.strip():
        return False
    check = services.keys.check_cached(key.strip())
    return (
        check is not None
        and check.verdict is Verdict.VALID
        and check.scope is not None
        and scope_allows(check.scope, WRITE_SCOPE)
    )


async def _answer(send: Send, outcome: TransferOutcome) -> None:
    """What the route answers (``transfer_response``), sent as Litestar sends it."""
    body = orjson.dumps(
        transfer_document(outcome.transfer, outcome.position), option=orjson.OPT_UTC_Z
    )
    headers = [
        (_POSITION, b"%d" % outcome.position),
        (b"content-type", _JSON_CONTENT_TYPE),
        (b"content-length", b"%d" % len(body)),
    ]
    if outcome.created:
        headers.insert(0, (b"location", f"/v1/transfers/{outcome.transfer.id}".encode()))
    await send(
        {
            "type": "http.response.start",
            "status": 201 if outcome.created else 200,
            "headers": headers,
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _answer_error(scope: Scope, receive: Receive, send: Send, error: Exception) -> None:
    """The app's exception handler for ``error``, as Litestar's own middleware runs it."""
    request: Request[Any, Any, Any] = Request(scope, receive, send)
    response: Response[Any] = handler_for(error)(request, error)
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)


def handler_for(error: Exception) -> Callable[[Request[Any, Any, Any], Any], Response[Any]]:
    """The app's exception handler for this error: the nearest class it is registered for."""
    for klass in type(error).__mro__:
        handler = EXCEPTION_HANDLERS.get(klass)
        if handler is not None:
            found: Callable[[Request[Any, Any, Any], Any], Response[Any]] = handler
            return found
    raise AssertionError(f"no exception handler for {type(error)!r}")  # Exception has one
