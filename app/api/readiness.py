"""``/v1/ready``: an answer within a second, whatever the store does.

Measuring the lag asks the store (its head) and the views (their checkpoint); either
may hang or fail. The measurement runs in one background thread at a time: a probe
waits for it at most ``READY_TIMEOUT_SECONDS``, and a probe arriving while a slow one
is still out waits on that same measurement instead of starting another, so a hung
store never piles up threads.
"""

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Final, Generic, TypeVar

import structlog
from litestar import Response

from app.api.event_schemas import EventsReadiness
from app.api.schemas import Readiness, WorkerStatus
from app.api.services import Services
from app.persistence.faults import store_fault
from app.supervisor import WorkerState

log = structlog.get_logger(__name__)

READY_TIMEOUT_SECONDS: Final = 0.8
T = TypeVar("T")


class SingleFlight(Generic[T]):
    """Runs ``call`` in a thread; concurrent callers share the call in flight."""

    def __init__(self, call: Callable[[], T]) -> None:
        self.call = call
        self._lock = threading.Lock()
        self._in_flight: Future[T] | None = None

    def result(self, timeout_seconds: float) -> T:
        with self._lock:
            future = self._in_flight
            if future is None or future.done():
                future = Future()
                self._in_flight = future
                threading.Thread(
                    target=self._run, args=(future,), name="ready-probe", daemon=True
                ).start()
        return future.result(timeout=timeout_seconds)

    def _run(self, future: "Future[T]") -> None:
        try:
            future.set_result(self.call())
        except BaseException as error:  # noqa: BLE001  # handed to whoever waits on it
            future.set_exception(error)


def worker_statuses(states: list[WorkerState]) -> list[WorkerStatus]:
    return [
        WorkerStatus(
            name=state.name,
            up=state.up,
            since=state.since,
            failures=state.failures,
            last_error=state.last_error,
        )
        for state in states
    ]


class ReadinessProbe:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._lag = SingleFlight(services.lag)
        events = services.events
        self._events_lag = None if events is None else SingleFlight(events.lag)

    def answer(self) -> Response[Readiness]:
        states = self.services.worker_states()
        workers = worker_statuses(states)
        down = [state for state in states if not state.up]
        try:
            lag = self._lag.result(READY_TIMEOUT_SECONDS)
        except FutureTimeout:
            return _not_ready(workers, "the store did not answer within the probe's bound")
        except Exception as error:  # noqa: BLE001  # a probe answers, whatever broke
            fault = store_fault(error)
            code = "unexpected_error" if fault is None else fault.code
            log.warning("ready.store_unreachable", code=code, error=repr(error))
            return _not_ready(workers, f"the store cannot be used now ({code})")
        fresh = lag.seconds <= self.services.settings.ready_lag_seconds_max
        reason = None
        if down:
            reason = "; ".join(
                f"worker {state.name} down since {state.since.isoformat()}: {state.last_error}"
                for state in down
            )
        elif not fresh:
            reason = f"the views lag {lag.seconds:.1f}s behind the log"
        ready = reason is None
        body = Readiness(
            status="ready" if ready else "not_ready",
            store_reachable=True,
            generation=lag.generation,
            checkpoint=lag.checkpoint,
            head=lag.head,
            lag_positions=lag.positions,
            lag_seconds=round(lag.seconds, 3),
            workers=workers,
            reason=reason,
            events=self._events(),
        )
        return Response(body, status_code=200 if ready else 503)

    def _events(self) -> EventsReadiness | None:
        """The feed's and deliveries' figures, when they can be had within the bound
        (they never decide readiness: a failing receiver is not our outage)."""
        if self._events_lag is None:
            return None
        try:
            return EventsReadiness.of(self._events_lag.result(READY_TIMEOUT_SECONDS))
        except Exception as error:  # noqa: BLE001  # a probe answers, whatever broke
            log.warning("ready.events_unavailable", error=repr(error))
            return None


def _not_ready(workers: list[WorkerStatus], reason: str) -> Response[Readiness]:
    body = Readiness(
        status="not_ready",
        store_reachable=False,
        generation=0,
        checkpoint=0,
        head=0,
        lag_positions=0,
        lag_seconds=0.0,
        workers=workers,
        reason=reason,
    )
    return Response(body, status_code=503)
