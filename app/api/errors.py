"""The only place that maps errors to HTTP: RFC 9457 problem documents with a stable
``code``. Nothing internal ever reaches a client; unexpected errors are logged with the
request id and answered as a generic problem."""

from typing import Any, Final

import orjson
import structlog
from litestar import Request, Response
from litestar.exceptions import (
    HTTPException,
    NotAuthorizedException,
    NotFoundException,
    PermissionDeniedException,
    ValidationException,
)
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from app.domain.errors import BatchRejectedError, LedgerError
from app.persistence.faults import RETRY_AFTER_SECONDS, store_fault

log = structlog.get_logger(__name__)

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
# The request state key set when the client went away mid-request, and the status such a
# request is logged and counted with (nginx's "client closed request"): never a 5xx.
CLIENT_DISCONNECTED: Final = "client_disconnected"
CLIENT_CLOSED_REQUEST: Final = 499

STATUS_BY_KIND: Final = {
    "invalid": 422,
    "unprocessable": 422,
    "not_found": 404,
    "conflict": 409,
    "too_large": 413,
    "unavailable": 503,
    "storage_full": 507,
}

TITLES: Final = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    422: "Unprocessable content",
    500: "Internal server error",
    503: "Service unavailable",
    507: "Insufficient storage",
}


# Codes the HTTP layer and the event feed answer with (the domain's come from its error
# classes, app.domain.errors.all_error_codes); together they are the schema's enum of
# Problem.code. tests/api/test_docs.py finds every literal code raised in app/ and fails
# when one is missing here.
API_CODES: Final = frozenset(
    {
        "account_not_found",
        "api_key_expired",
        "as_of_in_future",
        "bad_request",
        "body_too_large",
        "client_disconnected",
        "conflicting_parameters",
        "events_unavailable",
        "filter_too_large",
        "forbidden",
        "http_error",
        "internal_error",
        "invalid_cursor",
        "malformed_json",
        "malformed_request",
        "method_not_allowed",
        "monitor_not_found",
        "not_found",
        "position_not_reached",
        "position_out_of_range",
        "too_many_monitors",
        "too_many_streams",
        "transfer_not_found",
        "unauthorized",
        "unknown_event_type",
        "unknown_parameter",
        "validation_error",
        "webhook_not_found",
    }
)


class ApiError(Exception):
    """An HTTP-level refusal raised by the API itself (cursor, position, auth, …)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def problem_body(status: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": f"/problems/{code}",
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }


def problem(
    status: int,
    code: str,
    detail: str,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    elif status == 503:
        headers.setdefault("Retry-After", str(RETRY_AFTER_SECONDS))
    return Response(
        problem_body(status, code, detail, **extra),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers or None,
    )


# The answer to bytes the HTTP server cannot read as a request (an over-long request line,
# bytes a header may not hold, no HTTP at all): the server answers before any handler runs
# (app.compat.ProblemHttpToolsProtocol), and closes the connection.
MALFORMED_REQUEST_BODY: Final = orjson.dumps(
    problem_body(
        400,
        "malformed_request",
        "the request is not HTTP/1.1 the server can read: its request line, a header or "
        "its framing is malformed or too long",
    )
)


def status_of(error: LedgerError) -> int:
    return STATUS_BY_KIND.get(error.kind, 422)


def ledger_error_body(error: LedgerError) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if isinstance(error, BatchRejectedError):
        extra["index"] = error.index
    return problem_body(status_of(error), error.code, error.detail, **extra)


def on_ledger_error(
    request: Request[Any, Any, Any], error: LedgerError
) -> Response[dict[str, Any]]:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejections.labels(code=error.code).inc()
    body = ledger_error_body(error)
    return problem(
        body.pop("status"),
        body.pop("code"),
        body.pop("detail"),
        **{k: v for k, v in body.items() if k not in ("type", "title")},
    )


def on_api_error(_: Request[Any, Any, Any], error: ApiError) -> Response[dict[str, Any]]:
    return problem(error.status, error.code, error.detail)


def on_validation_error(
    _: Request[Any, Any, Any], error: ValidationException
) -> Response[dict[str, Any]]:
    message = str(error.detail or "")
    if "malformed" in message.lower() or ("json" in message.lower() and not error.extra):
        return problem(400, "malformed_json", "the request body is not valid JSON")
    return problem(422, "validation_error", _describe(error.extra) or message)


def _describe(extra: Any) -> str:
    if not isinstance(extra, list):
        return ""
    parts = []
    for item in extra[:10]:
        if isinstance(item, dict):
            where = item.get("key") or item.get("source") or "body"
            parts.append(f"{where}: {item.get('message', 'invalid')}")
    return "; ".join(parts)


def on_http_error(_: Request[Any, Any, Any], error: HTTPException) -> Response[dict[str, Any]]:
    status = error.status_code
    codes: dict[type[HTTPException], str] = {
        NotAuthorizedException: "unauthorized",
        PermissionDeniedException: "forbidden",
        NotFoundException: "not_found",
    }
    code = codes.get(type(error))
    if code is None:
        code = {405: "method_not_allowed", 413: "body_too_large", 400: "bad_request"}.get(
            status, "http_error"
        )
    if status >= 500:
        return on_unexpected_error(_, error)
    if status == 400:
        # Litestar's plain 400s come from decoding the body (parameters fail validation).
        return problem(400, "malformed_json", f"the request body is not valid JSON: {error.detail}")
    # Litestar's own headers stay: `Allow` on a 405, `Retry-After` where it sets one.
    return problem(status, code, str(error.detail), headers=dict(error.headers or {}))


def on_unexpected_error(
    request: Request[Any, Any, Any], error: Exception
) -> Response[dict[str, Any]]:
    request_id = request.scope.get("state", {}).get("request_id", "-")
    if request.scope.get("state", {}).get(CLIENT_DISCONNECTED):
        log.info("request.client_disconnected", request_id=request_id, error=str(error))
        return problem(
            CLIENT_CLOSED_REQUEST, "client_disconnected", "the client closed the connection"
        )
    fault = store_fault(error)
    if fault is not None:
        # A nameable store fault (full disk, store gone or too slow): a clear answer and
        # one log line, no traceback.
        log.warning(
            "request.store_fault", request_id=request_id, code=fault.code, error=repr(error)
        )
        return on_ledger_error(request, fault)
    log.error("request.failed", request_id=request_id, error=repr(error), exc_info=error)
    return problem(
        HTTP_500_INTERNAL_SERVER_ERROR,
        "internal_error",
        f"an unexpected error occurred; quote request id {request_id}",
    )


def on_undecodable_body(
    _: Request[Any, Any, Any], error: RecursionError | UnicodeDecodeError
) -> Response[dict[str, Any]]:
    """Nesting too deep to decode, or bytes that are not UTF-8: the body is not JSON."""
    return problem(
        400, "malformed_json", f"the request body is not valid JSON ({type(error).__name__})"
    )


EXCEPTION_HANDLERS: Final[dict[Any, Any]] = {
    RecursionError: on_undecodable_body,
    UnicodeDecodeError: on_undecodable_body,
    LedgerError: on_ledger_error,
    ApiError: on_api_error,
    ValidationException: on_validation_error,
    HTTPException: on_http_error,
    Exception: on_unexpected_error,
}
