"""Supervised workers: a thread per worker, restarted with backoff after any failure.

A worker is a callable that runs until the supervisor's ``stopping`` event is set and
then returns. Raising, or returning while not asked to stop, is a failure: it is
logged once (no traceback flood), counted, and the worker is started again after a
pause that doubles up to a cap and resets once the worker has run healthily for a
while. A store that fills up or goes away therefore costs the projections, the expiry
and the deliveries a pause, never their life; ``/v1/ready`` and ``/metrics`` say which
worker is down, since when, and how often it failed.
"""

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final

import structlog

log = structlog.get_logger(__name__)

BACKOFF_INITIAL_SECONDS: Final = 0.2
BACKOFF_MAX_SECONDS: Final = 30.0
# A worker that ran this long without failing starts its next backoff from the bottom.
HEALTHY_AFTER_SECONDS: Final = 60.0
STOP_TIMEOUT_SECONDS: Final = 30.0
# A restarted worker counts as up again once it has run this long without failing.
RECOVERED_AFTER_SECONDS: Final = 2.0
ERROR_TEXT_LENGTH_MAX: Final = 300


def utc_now() -> datetime:
    return datetime.now(tz=UTC)


@dataclass(frozen=True)
class WorkerState:
    name: str
    up: bool
    # When the worker last went up or down.
    since: datetime
    failures: int = 0
    last_error: str | None = None


class WorkerExitedError(RuntimeError):
    """A worker returned although it was not asked to stop."""


@dataclass
class _Record:
    state: WorkerState
    # monotonic time of the restart after the last failure (None: not restarted yet)
    restarted_at: float | None = None


class Supervisor:
    def __init__(
        self,
        *,
        backoff_initial_seconds: float = BACKOFF_INITIAL_SECONDS,
        backoff_max_seconds: float = BACKOFF_MAX_SECONDS,
        recovered_after_seconds: float = RECOVERED_AFTER_SECONDS,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.stopping = threading.Event()
        self.backoff_initial_seconds = backoff_initial_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.recovered_after_seconds = recovered_after_seconds
        self.clock = clock
        self._records: dict[str, _Record] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def supervise(self, name: str, run: Callable[[], None]) -> None:
        with self._lock:
            if name in self._records:
                raise ValueError(f"a worker named {name!r} is already supervised")
            self._records[name] = _Record(WorkerState(name=name, up=True, since=self.clock()))
        thread = threading.Thread(
            target=self._keep_running, args=(name, run), name=f"worker-{name}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def stop(self, timeout_seconds: float = STOP_TIMEOUT_SECONDS) -> None:
        self.stopping.set()
        deadline = time.monotonic() + timeout_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def states(self) -> list[WorkerState]:
        """Each worker's state. A restarted worker counts as down until it has run
        ``recovered_after_seconds`` without failing again."""
        now = time.monotonic()
        with self._lock:
            for record in self._records.values():
                restarted = record.restarted_at
                if (
                    not record.state.up
                    and restarted is not None
                    and now - restarted >= self.recovered_after_seconds
                ):
                    record.state = replace(record.state, up=True, since=self.clock())
                    record.restarted_at = None
                    log.info("worker.recovered", worker=record.state.name)
            return sorted((r.state for r in self._records.values()), key=lambda s: s.name)

    def down(self) -> list[WorkerState]:
        return [state for state in self.states() if not state.up]

    def _keep_running(self, name: str, run: Callable[[], None]) -> None:
        pause = self.backoff_initial_seconds
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                run()
            except Exception as error:  # noqa: BLE001  # a worker thread's boundary: logged, restarted
                failure: Exception = error
            else:
                failure = WorkerExitedError(f"worker {name} returned without being stopped")
            if self.stopping.is_set():
                return
            if time.monotonic() - started > HEALTHY_AFTER_SECONDS:
                pause = self.backoff_initial_seconds
            self._record_failure(name, failure, pause)
            if self.stopping.wait(pause):
                return
            pause = min(self.backoff_max_seconds, pause * 2)
            with self._lock:
                self._records[name].restarted_at = time.monotonic()
            log.info("worker.restarting", worker=name)

    def _record_failure(self, name: str, error: Exception, pause: float) -> None:
        text = f"{type(error).__name__}: {error}"[:ERROR_TEXT_LENGTH_MAX]
        with self._lock:
            record = self._records[name]
            state = record.state
            record.state = replace(
                state,
                up=False,
                since=self.clock() if state.up else state.since,
                failures=state.failures + 1,
                last_error=text,
            )
            record.restarted_at = None
            failures = record.state.failures
        log.warning(
            "worker.failed", worker=name, error=text, failures=failures, restart_in_seconds=pause
        )
