"""Event-store URLs → the eventsourcing library's environment for one backend.

The library is configured by environment keys (PERSISTENCE_MODULE, SQLITE_DBNAME, ...);
this module is the one place that turns our URLs into those keys.
"""

import math
from collections.abc import Callable
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from app.persistence.tcp_liveness import LIVENESS_ENV_KEY, urls_liveness

# Every wait on a store is bounded by this (SQLite's busy wait for its write lock,
# PostgreSQL's connect, pool, lock and statement timeouts, KurrentDB's call deadline):
# long enough for a burst of contending processes, short enough that a store that went
# away is answered as 503 store_unavailable instead of a hung request (decision 0009).
STORE_TIMEOUT_SECONDS: Final = 10
POSTGRES_LIBRARY_ATTEMPTS: Final = 10
POSTGRES_FACTORY_TOPIC: Final = "app.persistence.postgres:LedgerPostgresFactory"
POSTGRES_POOL_SIZE: Final = 8
KURRENTDB_SCHEMES: Final = ("kurrentdb", "kurrentdb+discover", "esdb", "esdb+discover")
KURRENTDB_FACTORY_TOPIC: Final = "app.persistence.kurrentdb:LedgerKurrentDBFactory"
SQLITE_RECORDER_TOPIC: Final = (
    "app.persistence.sqlite_subscription:SubscribableSQLiteApplicationRecorder"
)
POSTGRES_MAX_OVERFLOW: Final = 8


class StoreURLError(ValueError):
    """The URL names no backend we support, or is malformed."""


# Further backends by URL scheme (e.g. the test suite's fake KurrentDB, ``fake://``).
EXTRA_SCHEMES: dict[str, Callable[[str], dict[str, str]]] = {}


def register_store_scheme(scheme: str, env_for_url: Callable[[str], dict[str, str]]) -> None:
    EXTRA_SCHEMES[scheme] = env_for_url


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def sqlite_env(path: str, timeout_seconds: int = STORE_TIMEOUT_SECONDS) -> dict[str, str]:
    if path != ":memory:" and not path.startswith("file:"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        # The library's SQLite recorder cannot subscribe; ours polls (decision 0005).
        "APPLICATION_RECORDER_TOPIC": SQLITE_RECORDER_TOPIC,
        "SQLITE_DBNAME": path,
        "SQLITE_LOCK_TIMEOUT": str(timeout_seconds),
    }


def postgres_env(url: str, timeout_seconds: int = STORE_TIMEOUT_SECONDS) -> dict[str, str]:
    parts = urlsplit(url)
    dbname = unquote(parts.path.lstrip("/"))
    if not dbname:
        raise StoreURLError(f"PostgreSQL URL needs a database name: {url!r}")
    env = {
        "PERSISTENCE_MODULE": POSTGRES_FACTORY_TOPIC,
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": parts.hostname or "localhost",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_POOL_SIZE": str(POSTGRES_POOL_SIZE),
        "POSTGRES_MAX_OVERFLOW": str(POSTGRES_MAX_OVERFLOW),
        # Bounded waits: for a connection, for a lock, for any statement (read by our
        # factory), and a check of each pooled connection before use, so that the ones a
        # restarted server broke are replaced instead of failing a request. The library
        # tries a call up to 10 times on a connection error (eventsourcing/postgres.py,
        # ``@retry(..., max_attempts=10, wait=0.2)``), so each try gets a tenth.
        "POSTGRES_CONNECT_TIMEOUT": str(
            max(1, math.ceil(timeout_seconds / POSTGRES_LIBRARY_ATTEMPTS))
        ),
        "POSTGRES_LOCK_TIMEOUT": str(timeout_seconds),
        "POSTGRES_STATEMENT_TIMEOUT": str(timeout_seconds),
        "POSTGRES_PRE_PING": "y",
    }
    query: dict[str, str] = {}
    for option in parts.query.split("&") if parts.query else []:
        key, _, value = option.partition("=")
        query[key] = unquote(value)
    if "schema" in query:
        env["POSTGRES_SCHEMA"] = query["schema"]
    env[LIVENESS_ENV_KEY] = urls_liveness(query)  # the URL's own, for our factory
    return env


def sqlite_path(url: str) -> str:
    """The file a ``sqlite:///relative`` or ``sqlite:////absolute`` URL names."""
    path = url.removeprefix("sqlite://").removeprefix("/") if "///" in url else ""
    if not path:
        raise StoreURLError(f"SQLite URL must look like sqlite:///path/to/file: {url!r}")
    return path


def event_store_env(url: str, timeout_seconds: int = STORE_TIMEOUT_SECONDS) -> dict[str, str]:
    """The library environment for an event-store URL (``memory://``, ``sqlite:///…``,
    ``postgresql://…``), every wait on the store bounded by ``timeout_seconds``."""
    scheme = urlsplit(url).scheme
    if scheme in EXTRA_SCHEMES:
        return EXTRA_SCHEMES[scheme](url)
    if scheme == "memory":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    if scheme == "sqlite":
        return sqlite_env(sqlite_path(url), timeout_seconds)
    if scheme in ("postgresql", "postgres"):
        return postgres_env(url, timeout_seconds)
    if scheme in KURRENTDB_SCHEMES:
        return {
            "PERSISTENCE_MODULE": KURRENTDB_FACTORY_TOPIC,
            "KURRENTDB_URI": url,
            "KURRENTDB_DEADLINE_SECONDS": str(timeout_seconds),
        }
    raise StoreURLError(
        f"unsupported event store {url!r}: use sqlite:///PATH, postgresql://…, "
        "kurrentdb://… (or esdb://…) or memory://"
    )
