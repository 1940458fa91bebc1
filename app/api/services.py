"""What the API needs, wired once at start-up (the composition root builds it)."""

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from app.application.ledger import Ledger
from app.application.queries import Queries
from app.application.read_model import Lag, ReadModel
from app.events.service import EventServices
from app.persistence.keys import KeyStore
from app.settings import Settings
from app.supervisor import WorkerState


class Workers(Protocol):
    """The projection workers of a process that runs them (``ProjectionWorkers``)."""

    def stop(self) -> None: ...

    def states(self) -> list[WorkerState]: ...


@dataclass
class Services:
    settings: Settings
    ledger: Ledger
    keys: KeyStore
    queries: Queries
    workers: Workers | None = None
    events: EventServices | None = field(default=None)

    def lag(self) -> Lag:
        return self.queries.lag()

    def view(self) -> ReadModel:
        """The read model as it is now (no waiting: use ``queries`` for a read policy)."""
        return self.queries.source.read_model()

    def worker_states(self) -> list[WorkerState]:
        """The supervised workers of this process (none in an API-only process)."""
        states = [] if self.workers is None else self.workers.states()
        if self.events is not None and self.events.workers is not None:
            states += self.events.workers.supervisor.states()
        return states

    def reach(self, position: int | None) -> ReadModel:
        """The read model once it has applied ``position`` (the query service's wait)."""
        return self.queries.reach(position)

    def head(self) -> int:
        return self.queries.head()

    def now(self) -> datetime:
        return datetime.now(tz=UTC)
