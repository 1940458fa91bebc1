"""API keys, stored hashed. A key is ``lk_<key id>_<secret>``: the id finds the row,
the secret's SHA-256 is compared in constant time. Secrets are 256 random bits, so a
fast hash is enough (no password stretching needed: nothing to brute-force)."""

import enum
import hashlib
import hmac
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from app.domain.errors import StoreUnavailableError
from app.persistence.faults import UNAVAILABLE_DETAIL
from app.persistence.kept_connection import StoreConnection
from app.persistence.schema_lock import creating_schema
from app.persistence.stores import STORE_TIMEOUT_SECONDS

Scope = Literal["read", "write", "admin"]
SCOPES: Final[tuple[Scope, ...]] = ("read", "write", "admin")
KEY_PREFIX: Final = "lk"
# A verified key is trusted this long before it is looked up again: the delay after
# which a revocation takes effect on a busy server.
VERIFIED_KEY_TTL_SECONDS: Final = 5.0
# PostgreSQL: how long opening the kept connection and each statement on it may take,
# and how long a look-up waits for the one under way: past it the request answers a
# store fault (503), where it waited as long as the store did not answer (a lock on the
# keys table, a connection whose server stopped answering), and every request needing a
# look-up in the process waited behind it. The store's bound (the schema's creators on
# the ledger's connections wait no longer either).
KEY_STORE_TIMEOUT_SECONDS: Final[float] = STORE_TIMEOUT_SECONDS
# SQLite: how long a use waits for another process's write lock on the keys' file.
SQLITE_BUSY_SECONDS: Final = 30
# Whole keys remembered as checked (``KeyStore.check_cached``); all are forgotten past it.
CHECKED_KEYS_KEPT: Final = 1_000


def scope_allows(granted: str, needed: str) -> bool:
    return SCOPES.index(granted) >= SCOPES.index(needed)  # type: ignore[arg-type,unused-ignore]


# A key given by the operator (LEDGER_BOOTSTRAP_ADMIN_KEY): ``lk_<id>_<secret>``.
KEY_ID_PATTERN: Final = re.compile(r"[a-z0-9]{4,32}")
SECRET_LENGTH_MIN: Final = 32
KEY_NAME_LENGTH_MAX: Final = 100


class KeyFormatError(ValueError):
    """A key given from outside does not look like ``lk_<id>_<secret>``."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    scope: str
    created_at: str
    revoked_at: str | None
    name: str | None = None
    expires_at: str | None = None

    def state(self, now: datetime) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and datetime.fromisoformat(self.expires_at) <= now:
            return "expired"
        return "active"


class Verdict(enum.Enum):
    """Why a presented key is refused, or that it is fine (then see its scope)."""

    VALID = "valid"
    UNKNOWN = "unknown"  # malformed, never issued, wrong secret, or revoked
    EXPIRED = "expired"


@dataclass(frozen=True)
class KeyCheck:
    verdict: Verdict
    scope: str | None = None
    expires_at: str | None = None


def split_key(key: str) -> tuple[str, str] | None:
    """``lk_<key id>_<secret>`` → (key id, the secret's digest), or None if malformed."""
    try:
        key_id, secret = parse_key(key)
    except KeyFormatError:
        return None
    return key_id, _hash(secret)


def new_key() -> str:
    """A new key: a random id, and 256 random bits of secret."""
    return f"{KEY_PREFIX}_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._verified: dict[str, tuple[float, tuple[str, str, str | None]]] = {}
        # Whole keys found valid from memory (no expiry of their own), until their
        # ``_verified`` entry goes stale: the API checks the same key on every request,
        # and this spares it the key's parsing and hashing each time.
        self._checked: dict[str, tuple[float, KeyCheck]] = {}
        self._lock = threading.Lock()
        # PostgreSQL: the one connection every use of the store takes in turn, opened
        # here and kept (see ``_connect``).
        self._connection = StoreConnection(
            url, KEY_STORE_TIMEOUT_SECONDS, sqlite_busy_seconds=SQLITE_BUSY_SECONDS
        )
        self.is_postgres = self._connection.is_postgres
        # One look-up at a time: the requests that find a key's confirmation stale
        # together wait for the first one's answer instead of each asking the store.
        self._looking_up = threading.Lock()
        with self._connect() as connection, creating_schema(connection):
            connection.execute(
                "CREATE TABLE IF NOT EXISTS ledger_api_keys (key_id TEXT PRIMARY KEY, "
                "secret_hash TEXT NOT NULL, scope TEXT NOT NULL, created_at TEXT NOT NULL, "
                "revoked_at TEXT)"
            )
            self._add_missing_columns(connection)

    def _add_missing_columns(self, connection: Any) -> None:
        """Keys tables made before keys had names and expiry gain the two columns."""
        if self.is_postgres:
            for column in ("name", "expires_at"):
                connection.execute(
                    f"ALTER TABLE ledger_api_keys ADD COLUMN IF NOT EXISTS {column} TEXT"
                )
            return
        present = {row[1] for row in connection.execute("PRAGMA table_info(ledger_api_keys)")}
        for column in ("name", "expires_at"):
            if column not in present:
                try:
                    connection.execute(f"ALTER TABLE ledger_api_keys ADD COLUMN {column} TEXT")
                except sqlite3.OperationalError as error:  # another process added it first
                    if "duplicate column" not in str(error):
                        raise

    def _connect(self) -> AbstractContextManager[Any]:
        """A connection to the store. On PostgreSQL the kept one (``KeptConnection``): a
        look-up on a connection of its own opened a TCP connection and a server process
        on a request's path, once every ``VERIFIED_KEY_TTL_SECONDS`` per key and API
        process."""
        return self._connection.using()

    def close(self) -> None:
        """Close the kept connection (PostgreSQL); a later use opens another."""
        self._connection.close()

    def _placeholders(self, statement: str) -> str:
        return statement.replace("?", "%s") if self.is_postgres else statement

    def create(
        self, scope: str, *, name: str | None = None, expires_at: datetime | None = None
    ) -> str:
        key = new_key()
        with self._connect() as connection:
            self._insert_on(connection, key, scope, name, expires_at)
        return key

    def _insert_on(
        self,
        connection: Any,
        key: str,
        scope: str,
        name: str | None,
        expires_at: datetime | None,
    ) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        if name is not None and not 0 < len(name) <= KEY_NAME_LENGTH_MAX:
            raise ValueError(f"a key's name has 1-{KEY_NAME_LENGTH_MAX} characters")
        now = datetime.now(tz=UTC)
        if expires_at is not None and expires_at <= now:
            raise ValueError(f"the expiry {expires_at.isoformat()} is not in the future")
        key_id, secret = parse_key(key)
        connection.execute(
            self._placeholders(
                "INSERT INTO ledger_api_keys (secret_hash, key_id, scope, created_at, "
                "revoked_at, name, expires_at) VALUES (?, ?, ?, ?, NULL, ?, ?)"
            ),
            (
                _hash(secret),
                key_id,
                scope,
                now.isoformat(),
                name,
                None if expires_at is None else expires_at.astimezone(UTC).isoformat(),
            ),
        )

    def create_first_admin_key(self, given: str | None = None) -> str | None:
        """On first start (no key yet): the admin key ``given`` by the operator (from a
        secret), stored and not returned, or a new one, returned to be shown once.
        None when keys exist already. Processes starting together on a new database
        look and insert one at a time (``_first_start``): one of them makes the key."""
        if given is not None:
            parse_key(given)  # refuse a malformed secret even when keys exist
        with self._connect() as connection, self._first_start(connection):
            count = connection.execute("SELECT COUNT(*) FROM ledger_api_keys").fetchone()[0]
            if count:
                return None
            if given is not None:
                self._insert_on(connection, given, "admin", "bootstrap", None)
                return None
            key = new_key()
            self._insert_on(connection, key, "admin", "first start", None)
            return key

    @contextmanager
    def _first_start(self, connection: Any) -> Iterator[None]:
        """One transaction in which no other process looks for the first key: the
        schema lock's on PostgreSQL (decision 0032), SQLite's write lock taken at BEGIN."""
        if self.is_postgres:
            with creating_schema(connection):
                yield
            return
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def list(self) -> list[ApiKey]:
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT key_id, scope, created_at, revoked_at, name, expires_at "
                "FROM ledger_api_keys ORDER BY created_at"
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
            self._checked.clear()
        return changed

    def verify(self, key: str) -> str | None:
        """The key's scope, or None when the key is unknown, revoked, expired or malformed."""
        return self.check(key).scope

    def check(self, key: str) -> KeyCheck:
        parts = split_key(key)
        return KeyCheck(Verdict.UNKNOWN) if parts is None else self.check_digest(*parts)

    def check_digest(self, key_id: str, digest: str) -> KeyCheck:
        """The verdict on key ``key_id`` given its secret's digest: lets a session re-check
        its key on every request without keeping the secret."""
        cached = self._fresh(key_id)
        if cached is None:
            cached = self._looked_up(key_id)
        return KeyCheck(Verdict.UNKNOWN) if cached is None else _verdict(cached, digest)

    def _looked_up(self, key_id: str) -> tuple[str, str, str | None] | None:
        """Key ``key_id``'s stored digest, scope and expiry (None: unknown or revoked),
        confirmed by the store now or by the look-up another thread just made."""
        if not self._looking_up.acquire(timeout=KEY_STORE_TIMEOUT_SECONDS):
            raise StoreUnavailableError(UNAVAILABLE_DETAIL)
        try:
            cached = self._fresh(key_id)
            if cached is not None:
                return cached
            with self._connect() as connection:
                row = connection.execute(
                    self._placeholders(
                        "SELECT secret_hash, scope, expires_at FROM ledger_api_keys "
                        "WHERE key_id = ? AND revoked_at IS NULL"
                    ),
                    (key_id,),
                ).fetchone()
            if row is None:
                return None
            cached = (str(row[0]), str(row[1]), row[2])
            with self._lock:
                self._verified[key_id] = (time.monotonic() + VERIFIED_KEY_TTL_SECONDS, cached)
            return cached
        finally:
            self._looking_up.release()

    def check_cached(self, key: str) -> KeyCheck | None:
        """``check`` without touching the store: the verdict when the key was verified
        recently (or is malformed), None when only the store can say."""
        remembered = self._checked.get(key)
        if remembered is not None and remembered[0] > time.monotonic():
            return remembered[1]
        parts = split_key(key)
        if parts is None:
            return KeyCheck(Verdict.UNKNOWN)
        key_id, digest = parts
        with self._lock:
            verified = self._verified.get(key_id)
        if verified is None or verified[0] <= time.monotonic():
            return None
        check = _verdict(verified[1], digest)
        if check.verdict is Verdict.VALID and check.expires_at is None:
            with self._lock:
                if self._verified.get(key_id) is verified:  # not revoked meanwhile
                    if len(self._checked) >= CHECKED_KEYS_KEPT:
                        self._checked.clear()
                    self._checked[key] = (verified[0], check)
        return check

    def _fresh(self, key_id: str) -> tuple[str, str, str | None] | None:
        with self._lock:
            cached = self._verified.get(key_id)
        if cached is None or cached[0] <= time.monotonic():
            return None
        return cached[1]


def _verdict(stored: tuple[str, str, str | None], digest: str) -> KeyCheck:
    stored_digest, scope, expires_at = stored
    if not hmac.compare_digest(stored_digest, digest):
        return KeyCheck(Verdict.UNKNOWN)
    if expires_at is not None and datetime.fromisoformat(expires_at) <= datetime.now(tz=UTC):
        return KeyCheck(Verdict.EXPIRED, expires_at=expires_at)
    return KeyCheck(Verdict.VALID, scope=scope, expires_at=expires_at)


def parse_key(key: str) -> tuple[str, str]:
    """(key id, secret) of ``lk_<id>_<secret>``, or KeyFormatError."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if (
        prefix != KEY_PREFIX
        or not KEY_ID_PATTERN.fullmatch(key_id)
        or len(secret) < SECRET_LENGTH_MIN
        or not secret.isascii()
        or not secret.isprintable()
    ):
        raise KeyFormatError(
            f"an API key looks like {KEY_PREFIX}_<id>_<secret>: id 4-32 of [a-z0-9], "
            f"secret at least {SECRET_LENGTH_MIN} printable ASCII characters"
        )
    return key_id, secret
