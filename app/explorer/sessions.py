"""Signing in to the explorer: an API key, checked once at the form and again on every
request, kept in a server-side session as its id and its secret's digest (never the key).

The session cookie is HttpOnly and SameSite=Strict, and Secure whenever the request came
over TLS; the forms carry Litestar's CSRF token; every page answers with a content
security policy that allows no inline script at all.
"""

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from litestar import Request
from litestar.config.csrf import CSRFConfig
from litestar.datastructures import MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.exceptions import PermissionDeniedException
from litestar.middleware.session.server_side import ServerSideSessionConfig
from litestar.response import Redirect, Template
from litestar.types import ASGIApp, Empty, Message, Receive, Scope, Send

from app.api.errors import status_of
from app.domain.errors import LedgerError
from app.persistence.keys import KeyStore, Verdict, split_key

SESSION_COOKIE: Final = "ledger_explorer_session"
CSRF_COOKIE: Final = "ledger_explorer_csrf"
SESSION_STORE: Final = "ledger_explorer_sessions"
SESSION_SECONDS_MAX: Final = 8 * 3600  # a working day; then sign in again
COOKIE_PATH: Final = "/explorer"
LOGIN_PATH: Final = "/explorer/login"
SECRET_FILE_NAME: Final = "explorer-csrf.secret"  # noqa: S105  # a file name, not a secret
SECRET_BYTES: Final = 32

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)
SECURITY_HEADERS: Final = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}

# Why the sign-in page was shown: fixed texts (nothing from the request is echoed).
REASONS: Final = {
    "signed_out": "Sign in with an API key to continue.",
    "revoked": "Your key is no longer valid (it was revoked). Sign in again with a valid key.",
    "expired": "Your key has expired. Sign in again with a valid key.",
    "bye": "You are signed out.",
}
WRONG_KEY: Final = (
    "That key was not accepted: it is unknown, revoked or mistyped. "
    "Keys look like lk_<id>_<secret>, as printed by `ledger keys create`."
)
EXPIRED_KEY: Final = "That key has expired: ask for a new one (`ledger keys create`)."
EMPTY_KEY: Final = "Enter an API key."
STALE_FORM: Final = (
    "The form had expired or did not come from this site (its CSRF token did not match). "
    "Reload the page and try again."
)


@dataclass(frozen=True)
class Viewer:
    key_id: str
    scope: str


class SignInRequiredError(Exception):
    def __init__(self, reason: str, next_path: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.next_path = next_path


def session_config() -> ServerSideSessionConfig:
    return ServerSideSessionConfig(
        key=SESSION_COOKIE,
        store=SESSION_STORE,
        max_age=SESSION_SECONDS_MAX,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=False,  # made Secure per request when it came over TLS (security_headers)
    )


def csrf_config(secret: str) -> CSRFConfig:
    return CSRFConfig(
        secret=secret,
        cookie_name=CSRF_COOKIE,
        cookie_path=COOKIE_PATH,
        cookie_httponly=True,
        cookie_samesite="strict",
    )


def csrf_secret(data_dir: Path) -> str:
    """One secret for every API process sharing this data directory, made on first use."""
    path = data_dir.resolve() / SECRET_FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x") as stream:  # only the first process to get here writes it
            path.chmod(0o600)
            stream.write(secrets.token_hex(SECRET_BYTES))
    except FileExistsError:
        pass
    return path.read_text().strip()


def security_headers(app: ASGIApp) -> ASGIApp:
    """The explorer's response headers, and cookies marked Secure over TLS."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        over_tls = scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if over_tls:
                    cookies = headers.getall("set-cookie", [])
                    headers.pop("set-cookie", None)
                    for cookie in cookies:
                        secure = "secure" in cookie.lower().split("; ")
                        headers.add("set-cookie", cookie if secure else f"{cookie}; Secure")
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


def fresh_session_on_sign_in(app: ASGIApp) -> ASGIApp:
    """Sits outside the session middleware: a sign-in never reuses the session id the
    browser brought (a planted id would otherwise be signed in for whoever planted it)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        signing_in = scope["type"] == ScopeType.HTTP and scope.get("method") == "POST"
        if signing_in and scope["path"].rstrip("/") == LOGIN_PATH:
            scope["headers"] = [
                (name, _without_cookie(value, SESSION_COOKIE) if name == b"cookie" else value)
                for name, value in scope["headers"]
            ]
        await app(scope, receive, send)

    return middleware


def _without_cookie(header: bytes, name: str) -> bytes:
    kept = [part for part in header.split(b";") if part.strip().split(b"=", 1)[0] != name.encode()]
    return b";".join(kept)


def forget_empty_sessions(app: ASGIApp) -> ASGIApp:
    """Sits inside the session middleware: a request that never signed in leaves nothing
    in the store (Litestar would otherwise keep an empty session per anonymous visit)."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        async def send_forgetting(message: Message) -> None:
            if message["type"] == "http.response.start" and scope.get("session") == {}:
                scope["session"] = Empty
            await send(message)

        await app(scope, receive, send_forgetting)

    return middleware


def sign_in(request: Request[Any, Any, Any], keys: KeyStore, key: str) -> str | None:
    """Sign the session in with ``key``; None on success, else the message to show."""
    key = key.strip()
    if not key:
        return EMPTY_KEY
    parts = split_key(key)
    if parts is None:
        return WRONG_KEY
    verdict = keys.check_digest(*parts).verdict
    if verdict is Verdict.EXPIRED:
        return EXPIRED_KEY
    if verdict is not Verdict.VALID:
        return WRONG_KEY
    key_id, digest = parts
    request.set_session({"key_id": key_id, "digest": digest})
    return None


def current_viewer(request: Request[Any, Any, Any], keys: KeyStore) -> Viewer:
    """Who is signed in, with the key re-checked now: a revoked key's session ends here."""
    session = request.session if "session" in request.scope else {}
    next_path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    key_id, digest = session.get("key_id"), session.get("digest")
    if not isinstance(key_id, str) or not isinstance(digest, str):
        raise SignInRequiredError("signed_out", next_path)
    check = keys.check_digest(key_id, digest)
    if check.scope is None:
        request.clear_session()
        reason = "expired" if check.verdict is Verdict.EXPIRED else "revoked"
        raise SignInRequiredError(reason, next_path)
    return Viewer(key_id=key_id, scope=check.scope)


def to_sign_in(_: Request[Any, Any, Any], error: SignInRequiredError) -> Redirect:
    """To the sign-in form, which then leads back to the page that was asked for."""
    query = urlencode({"reason": error.reason, "next": error.next_path})
    return Redirect(f"{LOGIN_PATH}?{query}", status_code=303)


def refuse_stale_form(_: Request[Any, Any, Any], __: PermissionDeniedException) -> Template:
    """A form whose CSRF token did not match: a page that says so (not a JSON problem)."""
    return Template("refused.html.j2", context={"message": STALE_FORM}, status_code=403)


def refuse_ledger_error(_: Request[Any, Any, Any], error: LedgerError) -> Template:
    """A read the ledger refused (views still catching up, a bad filter): a page that says
    what, with the API's status and code."""
    return Template(
        "problem.html.j2",
        context={"detail": error.detail, "code": error.code},
        status_code=status_of(error),
    )
