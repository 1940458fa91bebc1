"""API keys, stored hashed. A key is ``lk_<key id>_<secret>``: the id finds the row,
the secret's SHA-256 is compared in constant time. Secrets are 256 random bits, so a
fast hash is enough (no password stretching needed: nothing to brute-force)."""

import hashlib
import hmac
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

import psycopg

Scope = Literal["read", "write", "admin"]
SCOPES: Final[tuple[Scope, ...]] = ("read", "write", "admin")
KEY_PREFIX: Final = "lk"
# A verified key is trusted this long before it is looked up again: the delay after
# which a revocation takes effect on a busy server.
VERIFIED_KEY_TTL_SECONDS: Final = 5.0


def scope_allows(granted: str, needed: str) -> bool:
    return SCOPES.index(granted) >= SCOPES.index(needed)  # type: ignore[arg-type,unused-ignore]


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    scope: str
    created_at: str
    revoked_at: str | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_postgres = urlsplit(url).scheme in ("postgresql", "postgres")
        self._verified: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        with self._connect() as connection:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS ledger_api_keys (key_id TEXT PRIMARY KEY, "
                "secret_hash TEXT NOT NULL, scope TEXT NOT NULL, created_at TEXT NOT NULL, "
                "revoked_at TEXT)"
            )

    @contextmanager
    def _connect(self) -> Iterator[Any]:
        if self.is_postgres:
            with psycopg.connect(self.url, autocommit=True) as connection:
                yield connection
            return
        path = Path(self.url.removeprefix("sqlite:///"))
        if self.url.startswith("sqlite:////"):
            path = Path("/" + self.url.removeprefix("sqlite:////"))
        path.parent.mkdir(parents=True, exist_ok=True)
        lite = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            yield lite
        finally:
            lite.close()

    def _placeholders(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.is_postgres else statement

    def create(self, scope: str) -> str:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        with self._connect() as connection:
            connection.execute(
                self._placeholders("INSERT INTO ledger_api_keys VALUES (?, ?, ?, ?, NULL)"),
                (key_id, _hash(secret), scope, datetime.now(tz=UTC).isoformat()),
            )
        return f"{KEY_PREFIX}_{key_id}_{secret}"

    def create_first_admin_key(self) -> str | None:
        """An admin key if no key exists yet (first start), else None."""
        with self._connect() as connection:
            count = connection.execute("SELECT COUNT(*) FROM ledger_api_keys").fetchone()[0]
        return self.create("admin") if count == 0 else None

    def list(self) -> list[ApiKey]:
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT key_id, scope, created_at, revoked_at FROM ledger_api_keys "
                "ORDER BY created_at"
            ).fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, key_id: str) -> bool:
        with self._connect() as connection:
            cursor = connection.execute(
                self._placeholders(
                    "UPDATE ledger_api_keys SET revoked_at = ? "
                    "WHERE key_id = ? AND revoked_at IS NULL"
                ),
                (datetime.now(tz=UTC).isoformat(), key_id),
            )
            changed = bool(cursor.rowcount > 0)
        with self._lock:
            self._verified.pop(key_id, None)
        return changed

    def verify(self, key: str) -> str | None:
        """The key's scope, or None when the key is unknown, revoked or malformed."""
        prefix, _, rest = key.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != KEY_PREFIX or not key_id or not secret:
            return None
        digest = _hash(secret)
        with self._lock:
            cached = self._verified.get(key_id)
        if cached and cached[0] > time.monotonic():
            stored_digest, scope = cached[1].split(":", 1)
            return scope if hmac.compare_digest(stored_digest, digest) else None
        with self._connect() as connection:
            row = connection.execute(
                self._placeholders(
                    "SELECT secret_hash, scope FROM ledger_api_keys "
                    "WHERE key_id = ? AND revoked_at IS NULL"
                ),
                (key_id,),
            ).fetchone()
        if row is None or not hmac.compare_digest(row[0], digest):
            return None
        with self._lock:
            self._verified[key_id] = (
                time.monotonic() + VERIFIED_KEY_TTL_SECONDS,
                f"{row[0]}:{row[1]}",
            )
        return str(row[1])
