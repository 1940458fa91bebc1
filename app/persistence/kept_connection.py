"""One PostgreSQL connection a store keeps for its few, small statements instead of
opening one per use: a connection opened on a request's path made the request wait for a
TCP handshake and a server process forked for it, and 1 s more whenever the SYN had to be
sent again (decision 0026, fourteenth session's addendum)."""

import math
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from app.persistence.stores import STORE_TIMEOUT_SECONDS, sqlite_path
from app.persistence.tcp_liveness import tcp_liveness


class KeptConnection:
    """A connection to ``url`` (autocommit), opened on first use and kept; one thread
    uses it at a time. Before each use it is pinged (one round trip, as psycopg_pool's
    check does) and replaced if the ping fails: a restarted server, or its
    ``idle_session_timeout``, cut it. Closed by ``close()``, or when the holder is
    collected (a store made for one statement, as ``ledger`` commands do). Opening it
    and each statement on it take at most ``timeout_seconds``: a statement past it is
    cancelled by the server, a store fault, where it waited as long as a lock on its
    table was held and every user of the connection waited behind it."""

    def __init__(self, url: str, timeout_seconds: float = STORE_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.timeout_seconds = timeout_seconds
        self._held: list[psycopg.Connection[Any]] = []  # none yet, or the one kept
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._held)

    @contextmanager
    def using(self) -> Iterator[psycopg.Connection[Any]]:
        with self._lock:
            yield self._pinged()

    def _pinged(self) -> psycopg.Connection[Any]:
        if self._held:
            kept = self._held[0]
            try:
                kept.execute("")
            except psycopg.Error:
                _close_all(self._held)
            else:
                return kept
        self._held.append(
            psycopg.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(1, math.ceil(self.timeout_seconds)),
                options=self._options(),
                **tcp_liveness(self.timeout_seconds, self.url),
            )
        )
        return self._held[0]

    def _options(self) -> str:
        """The URL's own server options (``?options=…``), and the statement timeout."""
        given = conninfo_to_dict(self.url).get("options")
        timeout = f"-c statement_timeout={math.ceil(self.timeout_seconds * 1000)}"
        return timeout if not given else f"{given} {timeout}"

    def close(self) -> None:
        """Close the connection; a later use opens another."""
        with self._lock:
            _close_all(self._held)


class StoreConnection:
    """The connection a small store's statements run on (the API keys, the views'
    generation pointer, the log's digest checkpoints): on PostgreSQL the one it keeps
    (``KeptConnection``, with its timeout), on SQLite one opened per use (autocommit,
    waiting up to ``sqlite_busy_seconds`` for another writer's lock; the file's folder
    made on first use)."""

    def __init__(
        self,
        url: str,
        timeout_seconds: float = STORE_TIMEOUT_SECONDS,
        *,
        sqlite_busy_seconds: float = STORE_TIMEOUT_SECONDS,
    ) -> None:
        self.url = url
        self.is_postgres = urlsplit(url).scheme in ("postgresql", "postgres")
        self.sqlite_busy_seconds = sqlite_busy_seconds
        self._kept = KeptConnection(url, timeout_seconds)

    @contextmanager
    def using(self) -> Iterator[Any]:
        if self.is_postgres:
            with self._kept.using() as connection:
                yield connection
            return
        path = Path(sqlite_path(self.url))
        path.parent.mkdir(parents=True, exist_ok=True)
        lite = sqlite3.connect(path, timeout=self.sqlite_busy_seconds, isolation_level=None)
        try:
            yield lite
        finally:
            lite.close()

    def close(self) -> None:
        """Close the kept connection (PostgreSQL); a later use opens another."""
        self._kept.close()


def _close_all(held: list[psycopg.Connection[Any]]) -> None:
    while held:
        held.pop().close()
