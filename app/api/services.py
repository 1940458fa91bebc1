"""What the API needs, wired once at start-up (the composition root builds it)."""

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from app.api.errors import ApiError
from app.application.ledger import Ledger
from app.events.service import EventServices
from app.persistence.keys import KeyStore
from app.settings import Settings
from app.supervisor import WorkerState
from projections.runner import (
    GenerationPointer,
    Lag,
    ProjectionWorkers,
    measure_lag,
    open_view,
)
from projections.views import LedgerViewMixin

POINTER_CHECK_SECONDS: Final = 1.0


class ViewSource:
    """The live view generation, for a process that reads views it does not build."""

    def __init__(self, read_model_url: str) -> None:
        self.read_model_url = read_model_url
        self.pointer = GenerationPointer(read_model_url)
        self._views: dict[int, LedgerViewMixin] = {}
        self._generation = self.pointer.current
        self._checked_at = time.monotonic()
        self._lock = threading.Lock()

    def current(self) -> tuple[int, LedgerViewMixin]:
        with self._lock:
            if time.monotonic() - self._checked_at > POINTER_CHECK_SECONDS:
                self._generation = self.pointer.current
                self._checked_at = time.monotonic()
            generation = self._generation
            if generation not in self._views:
                self._views[generation] = open_view(self.read_model_url, generation)
            return generation, self._views[generation]


@dataclass
class Services:
    settings: Settings
    ledger: Ledger
    keys: KeyStore
    workers: ProjectionWorkers | None = None
    source: ViewSource | None = field(default=None)
    events: EventServices | None = field(default=None)

    def view(self) -> LedgerViewMixin:
        if self.workers is not None:
            return self.workers.view
        assert self.source is not None
        return self.source.current()[1]

    def lag(self) -> Lag:
        if self.workers is not None:
            return self.workers.lag()
        assert self.source is not None
        generation, view = self.source.current()
        return measure_lag(self.ledger, view, generation)

    def worker_states(self) -> list[WorkerState]:
        """The supervised workers of this process (none in an API-only process)."""
        states = [] if self.workers is None else self.workers.supervisor.states()
        if self.events is not None and self.events.workers is not None:
            states += self.events.workers.supervisor.states()
        return states

    def head(self) -> int:
        return self.ledger.recorder.max_notification_id() or 0

    def reach(self, position: int | None) -> LedgerViewMixin:
        """The view, once it has applied ``position`` (read-your-writes), bounded."""
        view = self.view()
        if position is None:
            return view
        if position > self.head():
            raise ApiError(
                422,
                "position_out_of_range",
                f"position {position} is beyond the head of the log ({self.head()})",
            )
        if not view.wait_for(position, self.settings.read_wait_seconds):
            raise ApiError(
                409,
                "position_not_reached",
                f"the views have not reached position {position} within "
                f"{self.settings.read_wait_seconds}s (at {view.checkpoint()}); retry shortly",
            )
        return view

    def now(self) -> datetime:
        return datetime.now(tz=UTC)
