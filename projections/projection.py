"""The ledger projection: every event of the log, applied to the views exactly once."""

import threading
from collections.abc import Sequence
from typing import Any, ClassVar, Final

from eventsourcing.persistence import Tracking
from eventsourcing.projection import Projection, ProjectionRunner

from projections.views import LedgerViewMixin

PROJECTION_BATCH_MAX: Final = 500


class LedgerProjection(Projection[Any]):
    """Tracks every event (no topic filter), so that any position a write returns is
    one the view will reach: read-your-writes can wait on it."""

    name = "ledger_views"
    topics: ClassVar[tuple[str, ...]] = ()  # type: ignore[misc]

    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        view: LedgerViewMixin = self.view
        view.apply_event(domain_event, tracking)

    def process_batch(self, batch: Sequence[tuple[Any, Tracking]]) -> None:
        view: LedgerViewMixin = self.view
        view.apply_events(batch)


class BatchingProjectionRunner(ProjectionRunner[Any, Any]):
    """The library's runner, applying in one transaction the events that the
    subscription has already pulled (up to PROJECTION_BATCH_MAX) instead of one
    transaction per event. A catch-up of a long log is then bound by the SQL, not by
    commits; a live worker still applies each new event as soon as it arrives."""

    @staticmethod
    def _process_events_loop(
        subscription: Any,
        projection: Any,
        is_stopping: threading.Event,
        runner: Any,
    ) -> None:
        batch: list[tuple[Any, Tracking]] = []
        try:
            for domain_event, tracking in subscription:
                batch.append((domain_event, tracking))
                if len(batch) >= PROJECTION_BATCH_MAX or not _more_pulled(subscription):
                    projection.process_batch(batch)
                    batch = []
        except BaseException as error:  # noqa: BLE001  # handed to the runner, as the library does
            owner = runner()
            if owner is not None:
                owner._thread_error = error
        finally:
            is_stopping.set()


def _more_pulled(subscription: Any) -> bool:
    """Whether the subscription holds more notifications already pulled from the store
    (the library's pull-based subscriptions buffer them; others never say so)."""
    inner = getattr(subscription, "subscription", None)
    notifications = getattr(inner, "_notifications", None)
    index = getattr(inner, "_notifications_index", None)
    if notifications is None or index is None:
        return False
    if index < len(notifications):
        return True
    queue = getattr(inner, "_notifications_queue", None)
    return queue is not None and not queue.empty()
