"""The ledger projection: every event of the log, applied to the views exactly once."""

from typing import Any, ClassVar

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection

from projections.views import LedgerViewMixin


class LedgerProjection(Projection[Any]):
    """Tracks every event (no topic filter), so that any position a write returns is
    one the view will reach: read-your-writes can wait on it."""

    name = "ledger_views"
    topics: ClassVar[tuple[str, ...]] = ()  # type: ignore[misc]

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        view: LedgerViewMixin = self.view
        view.apply_event(domain_event, tracking)
