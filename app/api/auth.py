"""Bearer API keys with scopes read < write < admin, checked by a route guard."""

from collections.abc import Callable, Coroutine
from typing import Any

from litestar.concurrency import sync_to_thread
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from app.api.errors import ApiError
from app.persistence.keys import KeyStore, Verdict, scope_allows

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Coroutine[Any, Any, None]]


def requires(scope: str) -> Guard:
    """A guard run on the event loop: a key verified recently is checked from memory
    (no thread hop per request); only a key the store must confirm is looked up in a
    worker thread."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        header = connection.headers.get("authorization", "")
        kind, _space, key = header.partition(" ")
        if kind.lower() != "bearer" or not key.strip():
            raise NotAuthorizedException("an API key is required: Authorization: Bearer <key>")
        keys: KeyStore = connection.app.state.services.keys
        check = keys.check_cached(key.strip())
        if check is None:
            check = await sync_to_thread(keys.check, key.strip())
        if check.verdict is Verdict.EXPIRED:
            raise ApiError(401, "api_key_expired", f"the API key expired at {check.expires_at}")
        granted = check.scope
        if granted is None:
            raise NotAuthorizedException("the API key is unknown or revoked")
        if not scope_allows(granted, scope):
            raise PermissionDeniedException(f"this operation needs the {scope!r} scope")

    return guard
