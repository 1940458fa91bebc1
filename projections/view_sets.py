"""The view sets a deployment's read model holds, and dropping the ones nobody uses.

A *view set* is one generation of the views as one version of their tables has it: a
SQLite file ``views.gN.vV.sqlite`` beside the generation pointer's ``views.sqlite``, or a
PostgreSQL schema ``ledger_views_gN_vV`` (``projections.runner.view_file`` and
``view_schema``); versions 5 and before named theirs without the version
(``views.gN.sqlite``, ``ledger_views_gN``). An upgrade that bumps ``SCHEMA_VERSION``
leaves the older version's sets in place (decision 0036), a rebuild the older
generations: each a full copy, disposable (the log is the truth).

A set is *current* when it is this version's at the pointer's generation, *building*
when a rebuild is filling it; neither is ever dropped. Any other set is dropped only
when nothing is seen using it (decision 0038): no other process holds its SQLite file
open, no other PostgreSQL session's last statement named its schema, and its checkpoint
did not move while watched.
"""

import fcntl
import os
import re
import sqlite3
import time
from collections.abc import Sequence
from contextlib import closing, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol
from urllib.parse import urlsplit

import psycopg
from psycopg import sql

from app.persistence.stores import STORE_TIMEOUT_SECONDS, sqlite_path
from app.persistence.tcp_liveness import tcp_liveness
from projections.projection import LedgerProjection
from projections.runner import GenerationPointer
from projections.schema import APPLICATION_NAME, SCHEMA_VERSION, parse_timestamp

# Where a SQLite connection to a WAL database holds a shared lock for as long as it is
# open, reader or writer (the "dead-man switch" byte of its -shm file: SQLite's
# UNIX_SHM_DMS, (22 + 8) * 4 + 8). The last connection to close deletes the -shm file.
SQLITE_SHM_DMS_OFFSET: Final = 128
# How long a drop on PostgreSQL waits for a statement that holds the set's tables.
DROP_LOCK_WAIT_SECONDS: Final = 2
# How long the checkpoints are watched before a drop, by default, and at the most.
WATCH_SECONDS_DEFAULT: Final = 3.0
WATCH_SECONDS_MAX: Final = 60.0
# Files that belong to a SQLite set beside its database file.
SQLITE_COMPANIONS: Final = ("-wal", "-shm", "-wanted")
# The library's tracking table on PostgreSQL, named after the projection (on SQLite:
# ``tracking``).
TRACKING_TABLE: Final = LedgerProjection.name.lower() + "_tracking"
CHECKPOINT: Final = (
    "SELECT MAX(notification_id) FROM {{schema}}{tracking} WHERE application_name = ?"
)
SCHEMA_NAME: Final = re.compile(r"ledger_views_g(\d{1,9})(?:_v(\d{1,9}))?")
# pg_stat_activity's query for a session of another role, without pg_read_all_stats.
HIDDEN_QUERY: Final = "<insufficient privilege>"


@dataclass(frozen=True)
class ViewSet:
    """One set as found: ``version`` from its name (``None``: named before versions,
    then ``tables_version`` from its ``view_schema`` table says which it was)."""

    name: str
    generation: int
    version: int | None
    tables_version: int | None
    state: str  # current | building | other
    size_bytes: int
    checkpoint: int | None
    reached_at: datetime | None  # when the last commit it holds was recorded
    written_at: datetime | None  # SQLite: the last write to its files
    in_use: str | None  # why another process is seen using it now (None: nothing seen)

    @property
    def kept(self) -> bool:
        return self.state != "other"


class ViewSetInUseError(Exception):
    """A set something may still use: left as it is."""


class ViewSetStore(Protocol):
    """The sets of one read model, on its backend."""

    def names(self) -> list[tuple[str, int, int | None]]:
        """Each set's name, generation and version as its name says."""
        ...

    def size(self, name: str) -> tuple[int, datetime | None]:
        """Its size in bytes, and when its files were last written (SQLite only)."""
        ...

    def one(self, name: str, statement: str, *parameters: object) -> object:
        """The first value ``statement`` reads from the set (its tables are named
        ``{schema}TABLE``), or None where the set's tables do not have it (a set of
        another version, or one whose build stopped before its tables)."""
        ...

    def checkpoint(self, name: str) -> int | None: ...

    def users(self, name: str) -> str | None:
        """Why the set is in use by another process, or None when nothing is seen."""
        ...

    def drop(self, name: str) -> None:
        """Drop the set, refusing (``ViewSetInUseError``) if a user shows up meanwhile."""
        ...


def store_for(read_model_url: str) -> ViewSetStore:
    if urlsplit(read_model_url).scheme in ("postgresql", "postgres"):
        return PostgresViewSets(read_model_url)
    return SQLiteViewSets(Path(sqlite_path(read_model_url)))


def find_sets(read_model_url: str) -> list[ViewSet]:
    """Every set of the read model, oldest version and generation first."""
    store = store_for(read_model_url)
    current, building = GenerationPointer(read_model_url).read()

    def state(generation: int, version: int | None) -> str:
        if version != SCHEMA_VERSION:
            return "other"
        return {current: "current", building: "building"}.get(generation, "other")

    found = [describe(store, name, g, v, state(g, v)) for name, g, v in store.names()]
    return sorted(found, key=lambda s: (s.version or 0, s.generation, s.name))


def describe(
    store: ViewSetStore, name: str, generation: int, version: int | None, state: str
) -> ViewSet:
    size_bytes, written_at = store.size(name)
    tables_version = store.one(name, "SELECT version FROM {schema}view_schema WHERE id = 1")
    reached = store.one(
        name, "SELECT recorded_at FROM {schema}commits ORDER BY start_position DESC LIMIT 1"
    )
    return ViewSet(
        name=name,
        generation=generation,
        version=version,
        tables_version=None if tables_version is None else int(str(tables_version)),
        state=state,
        size_bytes=size_bytes,
        checkpoint=store.checkpoint(name),
        reached_at=_instant(reached),
        written_at=written_at,
        in_use=store.users(name),  # after the reads above: their connections are closed
    )


def choose(sets: Sequence[ViewSet], names: Sequence[str]) -> list[ViewSet]:
    """The sets to drop: those named, or every set but the current and building ones.
    A name that is no set, or a kept set named, is a ``ValueError`` (nothing dropped)."""
    if not names:
        return [s for s in sets if not s.kept]
    by_name = {s.name: s for s in sets}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"no view set named {unknown[0]} (see `ledger views list`)")
    kept = [by_name[name] for name in names if by_name[name].kept]
    if kept:
        raise ValueError(f"{kept[0].name} is the {kept[0].state} view set: it is never dropped")
    return [by_name[name] for name in dict.fromkeys(names)]


def idle_sets(
    read_model_url: str, chosen: Sequence[ViewSet], watch_seconds: float
) -> dict[ViewSet, str | None]:
    """For each chosen set, why it is in use (or None: idle): its checkpoint moved while
    watched for ``watch_seconds``, or another process holds it."""
    store = store_for(read_model_url)
    before = {s.name: store.checkpoint(s.name) for s in chosen}
    time.sleep(watch_seconds)
    reasons: dict[ViewSet, str | None] = {}
    for view_set in chosen:
        first, then = before[view_set.name], store.checkpoint(view_set.name)
        reasons[view_set] = (
            store.users(view_set.name)
            if then == first
            else f"its checkpoint moved from {first} to {then} in {watch_seconds:g} s"
        )
    return reasons


def drop_set(read_model_url: str, name: str) -> None:
    store_for(read_model_url).drop(name)


class SQLiteViewSets:
    """The sets in files beside the generation pointer's file (``views.sqlite``)."""

    def __init__(self, pointer_file: Path) -> None:
        self.directory = pointer_file.parent
        self.pattern = re.compile(
            re.escape(pointer_file.stem)
            + r"\.g(\d{1,9})(?:\.v(\d{1,9}))?"
            + re.escape(pointer_file.suffix)
        )

    def names(self) -> list[tuple[str, int, int | None]]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = self.pattern.fullmatch(path.name)
            if match and path.is_file():
                version = None if match[2] is None else int(match[2])
                found.append((path.name, int(match[1]), version))
        return found

    def _files(self, name: str) -> list[Path]:
        main = self.directory / name
        return [main, *(main.with_name(name + part) for part in SQLITE_COMPANIONS)]

    def size(self, name: str) -> tuple[int, datetime | None]:
        sizes, times = 0, []
        for path in self._files(name):
            with suppress(FileNotFoundError):
                stat = path.stat()
                sizes += stat.st_size
                if not path.name.endswith("-wanted"):  # readers write it, not the writer
                    times.append(stat.st_mtime)
        return sizes, datetime.fromtimestamp(max(times), tz=UTC) if times else None

    def one(self, name: str, statement: str, *parameters: object) -> object:
        with closing(self._connect(name)) as connection:
            try:
                row = connection.execute(statement.format(schema=""), parameters).fetchone()
            except sqlite3.OperationalError:  # no such table or column
                return None
        return None if row is None else row[0]

    def _connect(self, name: str) -> sqlite3.Connection:
        # Read only: a look must not create a set, nor write into one.
        uri = (self.directory / name).resolve().as_uri() + "?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=DROP_LOCK_WAIT_SECONDS)

    def checkpoint(self, name: str) -> int | None:
        return _int(self.one(name, CHECKPOINT.format(tracking="tracking"), APPLICATION_NAME))

    def users(self, name: str) -> str | None:
        # Our own connections are closed by now: a lock of this process would not
        # conflict with the probe, and closing the probe's descriptor drops them all.
        try:
            descriptor = os.open(self.directory / f"{name}-shm", os.O_RDWR)
        except FileNotFoundError:
            return None  # no connection has it open (the last one deletes the -shm file)
        try:
            return None if _locked_alone(descriptor) else "another process has it open"
        finally:
            os.close(descriptor)

    def drop(self, name: str) -> None:
        # The probe's exclusive lock is held while the files go: a process that opens
        # the set meanwhile fails to ("database is locked") rather than write into a
        # file being unlinked.
        try:
            descriptor = os.open(self.directory / f"{name}-shm", os.O_RDWR)
        except FileNotFoundError:
            descriptor = None
        try:
            if descriptor is not None and not _locked_alone(descriptor, keep=True):
                raise ViewSetInUseError("another process has it open")
            for path in self._files(name):
                path.unlink(missing_ok=True)
        finally:
            if descriptor is not None:
                os.close(descriptor)


def _locked_alone(descriptor: int, *, keep: bool = False) -> bool:
    """Whether this process got the -shm file's connection lock alone (released unless
    ``keep``: then it goes with the descriptor)."""
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, SQLITE_SHM_DMS_OFFSET)
    except OSError:
        return False
    if not keep:
        fcntl.lockf(descriptor, fcntl.LOCK_UN, 1, SQLITE_SHM_DMS_OFFSET)
    return True


class PostgresViewSets:
    """The sets in schemas of the read model's database."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            self.url, autocommit=True, **tcp_liveness(STORE_TIMEOUT_SECONDS, self.url)
        )

    def names(self) -> list[tuple[str, int, int | None]]:
        with self._connect() as connection:
            rows = connection.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ledger\\_views\\_g%'"
            ).fetchall()
        found = []
        for (name,) in rows:
            match = SCHEMA_NAME.fullmatch(str(name))
            if match:
                found.append(
                    (str(name), int(match[1]), None if match[2] is None else int(match[2]))
                )
        return found

    def size(self, name: str) -> tuple[int, datetime | None]:
        with self._connect() as connection:
            row = connection.execute(
                "SELECT SUM(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
                [name],
            ).fetchone()
        return _int(None if row is None else row[0]) or 0, None

    def one(self, name: str, statement: str, *parameters: object) -> object:
        schema = sql.Identifier(name).as_string() + "."
        with self._connect() as connection:
            try:
                row = connection.execute(
                    sql.SQL(statement.format(schema=schema)),
                    parameters,
                ).fetchone()
            except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
                return None
        return None if row is None else row[0]

    def checkpoint(self, name: str) -> int | None:
        statement = CHECKPOINT.format(tracking=TRACKING_TABLE).replace("?", "%s")
        return _int(self.one(name, statement, APPLICATION_NAME))

    def users(self, name: str) -> str | None:
        with self._connect() as connection:
            return _sessions_naming(connection, name)

    def drop(self, name: str) -> None:
        with self._connect() as connection, connection.transaction():
            connection.execute(f"SET LOCAL lock_timeout = '{DROP_LOCK_WAIT_SECONDS}s'")
            user = _sessions_naming(connection, name)
            if user is not None:
                raise ViewSetInUseError(user)
            try:
                connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
            except psycopg.errors.LockNotAvailable:
                raise ViewSetInUseError(
                    f"a statement held its tables for {DROP_LOCK_WAIT_SECONDS} s"
                ) from None


def _sessions_naming(connection: psycopg.Connection[tuple[object, ...]], name: str) -> str | None:
    """Why another session of this database uses the schema ``name``: its last statement
    named it (a pooled connection of a reader or writer of the set, idle or not; the
    library and the views qualify every table with the schema), or its statements are
    hidden from this role, so it might."""
    # The name, not a longer one that starts with it (ledger_views_g1 in
    # ledger_views_g1_v6, or g12); its writer's notice channel ("<schema>_wanted") counts.
    naming = re.compile(rf"(?<![\w]){re.escape(name)}(?![0-9]|_v[0-9])")
    rows = connection.execute(
        "SELECT pid, COALESCE(query, '') FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend'"
    ).fetchall()
    for pid, query in rows:
        if query == HIDDEN_QUERY:
            return f"session {pid} is another role's, whose statements this role cannot see"
        if naming.search(str(query)):
            return f"session {pid} reads or writes it"
    return None


def _int(value: object) -> int | None:
    return None if value is None else int(str(value))


def _instant(value: object) -> datetime | None:
    """A ``recorded_at`` as the views store it (``timestamp_text``), if it is one."""
    if value is None:
        return None
    try:
        return parse_timestamp(str(value)).astimezone(UTC)
    except ValueError:
        return None
