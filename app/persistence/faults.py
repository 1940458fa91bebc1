"""Store faults → the ledger's typed answers.

Each backend fails in its own vocabulary (sqlite3 codes, psycopg SQLSTATEs and pool
timeouts, gRPC statuses from kurrentdbclient), and the eventsourcing library wraps most
of them in its own ``PersistenceError`` classes with the original as ``__cause__``. This
is the one place that reads them: a full disk becomes ``StorageFullError`` (507), a
store that cannot be reached or does not answer within its bound becomes
``StoreUnavailableError`` (503 with Retry-After). Anything else is not a store fault
and stays what it is (an unexpected error).
"""

import errno
import sqlite3
from typing import Final

import kurrentdbclient.exceptions as kurrent
import psycopg
import psycopg.errors
import psycopg_pool
from eventsourcing.persistence import PersistenceError

from app.domain.errors import LedgerError, StorageFullError, StoreUnavailableError

# Seconds a client should wait before trying again after a 503 store fault.
RETRY_AFTER_SECONDS: Final = 1
CAUSE_DEPTH_MAX: Final = 8
DISK_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})
SQLITE_FULL_NAMES: Final = frozenset({"SQLITE_FULL"})
SQLITE_UNAVAILABLE_PREFIXES: Final = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_CANTOPEN")
KURRENTDB_UNAVAILABLE: Final = (
    kurrent.ServiceUnavailableError,
    kurrent.DeadlineExceededError,
    kurrent.DiscoveryFailedError,
    kurrent.NodeIsNotLeaderError,
    kurrent.CancelledError,
    kurrent.AbortedByServerError,
)

# What a store call can raise, to catch before asking ``store_fault`` what it means.
STORE_ERRORS: Final = (
    PersistenceError,
    sqlite3.Error,
    psycopg.Error,
    psycopg_pool.PoolTimeout,
    kurrent.KurrentDBClientError,
    LedgerError,
    OSError,
)

FULL_DETAIL: Final = "the store has no space left; nothing was written"
UNAVAILABLE_DETAIL: Final = (
    "the store could not be reached or did not answer in time; nothing was written. "
    "Sending the same request again is safe"
)


def causes(error: BaseException) -> list[BaseException]:
    """The error and what it wraps (``raise … from``, then implicit context), nearest
    first, bounded."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and len(chain) < CAUSE_DEPTH_MAX and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def store_fault(error: BaseException) -> LedgerError | None:
    """The typed answer for a store fault, or None when ``error`` is not one."""
    for cause in causes(error):
        if isinstance(cause, LedgerError):
            return cause
        fault = _classify_one(cause)
        if fault is not None:
            return fault
    return None


def _classify_one(error: BaseException) -> LedgerError | None:  # noqa: PLR0911
    if isinstance(error, psycopg.errors.DiskFull):
        return StorageFullError(FULL_DETAIL)
    if isinstance(error, sqlite3.Error):
        return _classify_sqlite(error)
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return StorageFullError(FULL_DETAIL)
    if isinstance(
        error,
        psycopg_pool.PoolTimeout
        | psycopg.OperationalError
        | psycopg.InterfaceError
        | psycopg.errors.QueryCanceled
        | psycopg.errors.LockNotAvailable,
    ):
        return StoreUnavailableError(UNAVAILABLE_DETAIL)
    if isinstance(error, KURRENTDB_UNAVAILABLE):
        return StoreUnavailableError(UNAVAILABLE_DETAIL)
    if isinstance(error, ConnectionError | TimeoutError):
        return StoreUnavailableError(UNAVAILABLE_DETAIL)
    return None


def _classify_sqlite(error: sqlite3.Error) -> LedgerError | None:
    name = getattr(error, "sqlite_errorname", "") or ""
    message = str(error).lower()
    if name in SQLITE_FULL_NAMES or "database or disk is full" in message:
        return StorageFullError(FULL_DETAIL)
    if name.startswith(SQLITE_UNAVAILABLE_PREFIXES) or "database is locked" in message:
        return StoreUnavailableError(UNAVAILABLE_DETAIL)
    return None
