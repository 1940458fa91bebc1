"""Projection workers: the catch-up runner over our views, plus lag,
read-your-writes, the expiry worker, and rebuild-beside-and-switch by generations.

A *generation* is one complete copy of the views: a SQLite file ``views.gN.vV.sqlite``
or a PostgreSQL schema ``ledger_views_gN_vV`` (V: the version of its tables). A small
pointer names the generation readers use; a rebuild fills generation N+1 from position
zero while N keeps serving, then moves the pointer in one write (decision 0006).
"""

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import structlog
from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.utils import Environment

from app.application.ledger import GRANT_EXPIRIES_MAX, Ledger
from app.application.read_model import Lag as Lag  # noqa: PLC0414  # re-exported
from app.application.read_model import ReadModel
from app.domain.errors import LedgerError
from app.persistence.decoding import DecodedBatches
from app.persistence.faults import STORE_ERRORS, store_fault
from app.persistence.kept_connection import StoreConnection
from app.persistence.schema_lock import creating_schema
from app.persistence.stores import event_store_env, postgres_env, sqlite_env
from app.supervisor import Supervisor, WorkerState
from projections.backends import LedgerView, PostgresLedgerView, SQLiteLedgerView
from projections.catchup import CatchUpRunner
from projections.digest import DigestCheckpoints, keep_digest
from projections.projection import LedgerProjection
from projections.schema import SCHEMA_VERSION

log = structlog.get_logger(__name__)

VIEW_ENV_PREFIX: Final = LedgerProjection.name.upper() + "_"
EXPIRY_INTERVAL_SECONDS: Final = 1.0
EXPIRY_BATCH_SIZE: Final = 100
# Grants expire in batches of this many (one group write of the committer); one tick of
# the worker runs at most GRANT_EXPIRY_ROUNDS_MAX batches, so that a burst of expiries
# cannot starve the holds (expired by the same worker after it).
GRANT_EXPIRY_BATCH_SIZE: Final = GRANT_EXPIRIES_MAX
GRANT_EXPIRY_ROUNDS_MAX: Final = 500
GENERATION_CHECK_SECONDS: Final = 1.0
RUNNER_CHECK_SECONDS: Final = 0.5
REBUILD_POLL_SECONDS: Final = 0.25
POINTER_CHECK_SECONDS: Final = 1.0
# SQLite: how long a use of the generation pointer waits for another writer's lock.
POINTER_SQLITE_BUSY_SECONDS: Final = 30


class WorkerDownError(RuntimeError):
    """A supervised worker is down (being restarted)."""


class GenerationPointer:
    """Which view generation is live (``current``) and which is being rebuilt."""

    def __init__(self, read_model_url: str) -> None:
        self.url = read_model_url
        # PostgreSQL: the pointer is read every second (by a reader on a request's path,
        # by the projections' watcher) on one connection kept for it.
        self._connection = StoreConnection(
            read_model_url, sqlite_busy_seconds=POINTER_SQLITE_BUSY_SECONDS
        )
        self.is_postgres = self._connection.is_postgres
        with self._connect() as connection, creating_schema(connection):
            connection.execute(
                "CREATE TABLE IF NOT EXISTS ledger_view_generation ("
                "id INTEGER PRIMARY KEY, current_generation INTEGER NOT NULL, "
                "building_generation INTEGER)"
            )
            connection.execute(
                "INSERT INTO ledger_view_generation VALUES (1, 1, NULL) ON CONFLICT DO NOTHING"
            )

    def _connect(self) -> AbstractContextManager[Any]:
        return self._connection.using()

    def read(self) -> tuple[int, int | None]:
        with self._connect() as connection:
            row = connection.execute(
                "SELECT current_generation, building_generation FROM ledger_view_generation"
            ).fetchone()
        return int(row[0]), (None if row[1] is None else int(row[1]))

    @property
    def current(self) -> int:
        return self.read()[0]

    def start_building(self, generation: int) -> None:
        self._write("UPDATE ledger_view_generation SET building_generation = {}", generation)

    def switch_to(self, generation: int) -> None:
        # One statement: readers see the old generation or the new one, never neither.
        self._write(
            "UPDATE ledger_view_generation SET current_generation = {}, building_generation = NULL",
            generation,
        )

    def _write(self, statement: str, generation: int) -> None:
        with self._connect() as connection:
            connection.execute(statement.format(int(generation)))

    def close(self) -> None:
        """Close the kept connection (PostgreSQL); a later use opens another."""
        self._connection.close()


def _sqlite_path(url: str) -> Path:
    return Path(
        url.removeprefix("sqlite://")[1:]
        if url.startswith("sqlite:////")
        else url.removeprefix("sqlite:///")
    )


def view_schema(generation: int) -> str:
    """The PostgreSQL schema of a generation of the views, as this version's tables
    (``SCHEMA_VERSION``) have it: named by both, so that a process of a newer version
    builds its own views beside those an older one still writes and reads (a rolling
    upgrade), never in them (decision 0036)."""
    return f"ledger_views_g{generation}_v{SCHEMA_VERSION}"


def view_file(read_model_url: str, generation: int) -> Path:
    """The SQLite file of a generation of the views (named as ``view_schema``)."""
    base = _sqlite_path(read_model_url)
    return base.with_name(f"{base.stem}.g{generation}.v{SCHEMA_VERSION}{base.suffix}")


def view_env(read_model_url: str, generation: int) -> dict[str, str]:
    """Library keys for the views, prefixed with the projection's name."""
    if urlsplit(read_model_url).scheme in ("postgresql", "postgres"):
        env = postgres_env(read_model_url)
        env["POSTGRES_SCHEMA"] = view_schema(generation)
    else:
        env = sqlite_env(str(view_file(read_model_url, generation)))
    return {VIEW_ENV_PREFIX + key: value for key, value in env.items()}


def view_class_for(read_model_url: str) -> type[SQLiteLedgerView] | type[PostgresLedgerView]:
    if urlsplit(read_model_url).scheme in ("postgresql", "postgres"):
        return PostgresLedgerView
    return SQLiteLedgerView


def open_view(read_model_url: str, generation: int) -> LedgerView:
    """A view to read (and to write, for a runner), without starting any worker."""
    env = Environment(LedgerProjection.name, view_env(read_model_url, generation))
    factory = InfrastructureFactory[Any].construct(env)
    view = factory.tracking_recorder(view_class_for(read_model_url))
    assert isinstance(view, LedgerView)
    return view


def start_runner(
    event_store_url: str,
    read_model_url: str,
    generation: int,
    shared: DecodedBatches | None = None,
) -> CatchUpRunner:
    env = {**event_store_env(event_store_url), **view_env(read_model_url, generation)}
    return CatchUpRunner(view_class_for(read_model_url), env, shared).__enter__()


def measure_lag(ledger: Ledger, view: ReadModel, generation: int) -> Lag:
    head = ledger.recorder.max_notification_id() or 0
    checkpoint = view.checkpoint()
    seconds = 0.0
    if checkpoint < head:
        waiting = ledger.recorder.select_notifications(
            start=checkpoint, limit=1, inclusive_of_start=False
        )
        if waiting:
            event: Any = ledger.mapper.to_domain_event(waiting[0])
            oldest: datetime = event.timestamp
            seconds = max(0.0, (datetime.now(tz=UTC) - oldest).total_seconds())
    return Lag(generation, checkpoint, head, max(0, head - checkpoint), seconds)


class ProjectionWorkers:
    """The live workers of one process: the runner of the current generation (swapped
    when a rebuild moves the pointer) and the expiry worker."""

    def __init__(
        self,
        event_store_url: str,
        read_model_url: str,
        ledger: Ledger,
        *,
        expire_holds: bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(tz=UTC),
        shared: DecodedBatches | None = None,
    ) -> None:
        self.event_store_url = event_store_url
        self.read_model_url = read_model_url
        self.ledger = ledger
        self.pointer = GenerationPointer(read_model_url)
        self.generation = self.pointer.current
        self.expire_holds = expire_holds
        self.clock = clock
        # Where the runner offers what it reads to the process's other readers of the log.
        self.shared = shared
        self._runner: CatchUpRunner | None = None
        # Each worker below runs supervised: restarted with backoff after a failure.
        self.supervisor = Supervisor()
        self._stopping = self.supervisor.stopping
        self._runner_spent = False
        self._lock = threading.Lock()

    @property
    def view(self) -> LedgerView:
        assert self._runner is not None, "workers not started"
        view: LedgerView = self._runner.view
        return view

    def read_model(self) -> ReadModel:
        return self.view

    def start(self) -> "ProjectionWorkers":
        self._runner = start_runner(
            self.event_store_url, self.read_model_url, self.generation, self.shared
        )
        self.supervisor.supervise("projections", self._keep_projecting)
        self.supervisor.supervise("generation_watch", self._watch_generation)
        if self.expire_holds:
            self.supervisor.supervise("expiry", self._expire_due_holds)
        self.supervisor.supervise("log_digest", self._keep_digest)
        log.info("projections.started", generation=self.generation)
        return self

    def stop(self) -> None:
        self.supervisor.stop()
        try:
            with self._lock:
                if self._runner is not None:
                    try:
                        self._runner.__exit__(None, None, None)  # raises its failure
                    finally:
                        self._runner.view.close()  # a replaced one's is left to readers
        finally:
            self.pointer.close()  # after the generation watcher, stopped with the rest

    def lag(self) -> Lag:
        return measure_lag(self.ledger, self.view, self.generation)

    def states(self) -> list[WorkerState]:
        return self.supervisor.states()

    def check(self) -> None:
        """Raise when a worker is down (its supervisor is restarting it)."""
        down = self.supervisor.down()
        if down:
            raise WorkerDownError(
                ", ".join(f"{state.name} down since {state.since:%H:%M:%S}" for state in down)
            )

    def heartbeat(self) -> dict[str, Any]:
        """The lag (or that the store cannot tell it now) and every worker's state."""
        try:
            status: dict[str, Any] = {"store_reachable": True, **asdict(self.lag())}
        except STORE_ERRORS as error:
            fault = store_fault(error)
            if fault is None:
                raise
            status = {"store_reachable": False, "error": fault.code}
        status["workers"] = [
            {**asdict(state), "since": state.since.isoformat()}
            for state in self.supervisor.states()
        ]
        return status

    def _keep_digest(self) -> None:
        checkpoints = DigestCheckpoints(self.read_model_url)
        try:
            keep_digest(self.ledger.recorder, checkpoints, self._stopping, self.shared)
        finally:
            checkpoints.close()

    def _keep_projecting(self) -> None:
        """Watch the runner's thread: its failure is raised here, for the supervisor,
        which calls this again after a pause; a spent runner is then replaced by a new
        one, which resumes from the views' own checkpoint (exactly once)."""
        if self._runner_spent:
            self._swap_to(self.generation)
        self._runner_spent = True
        while not self._stopping.is_set():
            with self._lock:
                runner = self._runner
            if runner is None:
                return
            started = time.monotonic()
            runner.run_forever(timeout=RUNNER_CHECK_SECONDS)
            ended_early = time.monotonic() - started < RUNNER_CHECK_SECONDS / 2
            if ended_early and runner is self._runner and not self._stopping.is_set():
                # Returned before its timeout with no error: its thread ended by itself.
                raise WorkerDownError("the projection runner stopped by itself")
        self._runner_spent = False

    def _watch_generation(self) -> None:
        while not self._stopping.wait(GENERATION_CHECK_SECONDS):
            current = self.pointer.current
            if current != self.generation:
                self._swap_to(current)

    def _swap_to(self, generation: int) -> None:
        new_runner = start_runner(
            self.event_store_url, self.read_model_url, generation, self.shared
        )
        with self._lock:
            old, self._runner, self.generation = self._runner, new_runner, generation
        if old is not None:
            try:
                old.__exit__(None, None, None)
            except Exception as error:  # noqa: BLE001  # the old runner's failure is already handled
                log.info("projections.old_runner_closed", error=repr(error))
        log.info("projections.switched", generation=generation)

    def _expire_due_holds(self) -> None:
        while not self._stopping.wait(EXPIRY_INTERVAL_SECONDS):
            expire_due_holds(self.ledger, self.view, self.clock())
            expire_due_grants(self.ledger, self.view, self.clock())


def expire_due_holds(ledger: Ledger, view: ReadModel, now: datetime) -> list[str]:
    """Expire every hold the view says is past its timeout. Idempotent: a hold already
    expired, posted or voided (the view may lag) is skipped."""
    expired = []
    for transfer_id in view.due_expiries(now, EXPIRY_BATCH_SIZE):
        try:
            ledger.expire_pending(transfer_id)
        except LedgerError as error:
            log.info("expiry.skipped", transfer_id=transfer_id, code=error.code)
            continue
        expired.append(transfer_id)
    return expired


def expire_due_grants(ledger: Ledger, view: ReadModel, now: datetime) -> int:
    """Move the remainder of every grant the view says has expired to breakage, a batch
    per write, paging through them by grant id (the view may not have seen this call's
    own writes yet; the ledger answers a repeated expiry without writing). At most
    GRANT_EXPIRY_ROUNDS_MAX batches per call. Returns how many expiries it wrote."""
    written = 0
    after: str | None = None
    for _ in range(GRANT_EXPIRY_ROUNDS_MAX):
        due = view.due_grant_expiries(now, GRANT_EXPIRY_BATCH_SIZE, after)
        if not due:
            break
        results = ledger.expire_grants(due)
        for item, result in zip(due, results, strict=True):
            if isinstance(result, LedgerError):
                log.info("grant_expiry.skipped", grant_id=item.grant_id, code=result.code)
            elif result is not None and result.created:
                written += 1
        after = due[-1].grant_id
    return written


def rebuild(
    event_store_url: str,
    read_model_url: str,
    on_progress: Callable[[int, int], None] | None = None,
) -> int:
    """Fill a new generation from position zero beside the live one, then switch.

    Resumable: an interrupted rebuild is continued from its own checkpoint."""
    pointer = GenerationPointer(read_model_url)
    current, building = pointer.read()
    generation = building if building is not None else current + 1
    pointer.start_building(generation)
    runner = start_runner(event_store_url, read_model_url, generation)
    try:
        view: LedgerView = runner.view
        while True:
            head = runner.app.recorder.max_notification_id() or 0
            checkpoint = view.checkpoint()
            if on_progress is not None:
                on_progress(checkpoint, head)
            if checkpoint >= head:
                break
            runner.run_forever(timeout=REBUILD_POLL_SECONDS)
    finally:
        runner.__exit__(None, None, None)
    pointer.switch_to(generation)
    return generation


def wait_until(predicate: Callable[[], bool], timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class GenerationReader:
    """The live view generation, for a process that reads views it does not build
    (a ``ReadModelSource`` like ``ProjectionWorkers``)."""

    def __init__(self, read_model_url: str, ledger: Ledger) -> None:
        self.read_model_url = read_model_url
        self.ledger = ledger
        self.pointer = GenerationPointer(read_model_url)
        self._views: dict[int, LedgerView] = {}
        self._generation = self.pointer.current
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()

    def current(self) -> tuple[int, LedgerView]:
        with self._lock:
            if time.monotonic() - self._checked_at > POINTER_CHECK_SECONDS:
                self._generation = self.pointer.current
                self._checked_at = time.monotonic()
            generation = self._generation
            if generation not in self._views:
                self._views[generation] = open_view(self.read_model_url, generation)
            return generation, self._views[generation]

    def read_model(self) -> ReadModel:
        return self.current()[1]

    def lag(self) -> Lag:
        generation, view = self.current()
        return measure_lag(self.ledger, view, generation)

    def close(self) -> None:
        """Close the views of every generation read (their pools) and the pointer's kept
        connection, at the process's shutdown."""
        with self._lock:
            views, self._views = list(self._views.values()), {}
        for view in views:
            view.close()
        self.pointer.close()
