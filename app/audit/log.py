"""Reading the whole log in order, page by page, in constant memory.

Every audit tool starts here and never at the projections: the log is the truth.
"""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from app.application.ledger import Ledger

LOG_PAGE_SIZE: Final = 2000


@dataclass(frozen=True)
class Instant:
    """An audit's cut-off: a position, a time, or the head (both None)."""

    position: int | None = None
    moment: datetime | None = None

    def includes(self, position: int, timestamp: datetime) -> bool:
        if self.position is not None and position > self.position:
            return False
        return self.moment is None or timestamp <= self.moment

    def describe(self) -> str:
        if self.position is not None:
            return f"position {self.position}"
        if self.moment is not None:
            return f"as of {self.moment.isoformat()}"
        return "the head of the log"


def read_log(
    ledger: Ledger,
    *,
    stop_position: int | None = None,
    on_page: Callable[[int, int], None] | None = None,
) -> Iterator[tuple[int, Any]]:
    """(position, event) for every event up to ``stop_position`` (inclusive)."""
    head = ledger.recorder.max_notification_id() or 0
    stop = head if stop_position is None else min(stop_position, head)
    position = 0
    while position < stop:
        notifications = ledger.recorder.select_notifications(
            start=position, limit=LOG_PAGE_SIZE, stop=stop, inclusive_of_start=False
        )
        if not notifications:
            return
        for notification in notifications:
            yield notification.id, ledger.mapper.to_domain_event(notification)
        position = notifications[-1].id
        if on_page is not None:
            on_page(position, stop)
