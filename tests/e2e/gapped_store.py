"""An event store whose positions have gaps, as KurrentDB's commit positions do.

A SQLite store (with the project's polling subscription) that hands out position
``rowid * STRIDE + OFFSET`` instead of the rowid: 10, 17, 24, ... Everything the
library and the projections see goes through these positions: the ids returned by
``insert_events`` (so the Ledger's outcomes carry them), ``select_notifications``
(start, stop and results), ``max_notification_id`` and, through
``select_notifications``, the subscription. Select it by topic with the environment
key ``LEDGER_APPLICATION_RECORDER_TOPIC`` (read before the unprefixed key).
"""

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final

from eventsourcing.persistence import Notification, StoredEvent
from eventsourcing.sqlite import SQLiteCursor
from eventsourcing.utils import get_topic

from app.persistence.sqlite_subscription import SubscribableSQLiteApplicationRecorder

STRIDE: Final = 7
OFFSET: Final = 3


def position_of(rowid: int) -> int:
    return rowid * STRIDE + OFFSET


def is_position(position: int) -> bool:
    return position > OFFSET and (position - OFFSET) % STRIDE == 0


def _last_rowid_before(position: int, *, inclusive: bool) -> int:
    """The largest rowid whose position is < ``position`` (``<=`` when inclusive)."""
    if inclusive:
        return (position - OFFSET) // STRIDE
    return -((OFFSET - position) // STRIDE) - 1  # ceil((position - OFFSET) / STRIDE) - 1


class GappedSQLiteApplicationRecorder(SubscribableSQLiteApplicationRecorder):
    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        rowids = super()._insert_events(c, stored_events, **kwargs)
        return None if rowids is None else [position_of(rowid) for rowid in rowids]

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        after_rowid = None
        if start is not None:
            after_rowid = max(0, _last_rowid_before(start, inclusive=not inclusive_of_start))
        stop_rowid = None if stop is None else _last_rowid_before(stop, inclusive=True)
        notifications = super().select_notifications(
            start=after_rowid,
            limit=limit,
            stop=stop_rowid,
            topics=topics,
            inclusive_of_start=False,
        )
        return [replace(n, id=position_of(n.id)) for n in notifications]

    def max_notification_id(self) -> int | None:  # type: ignore[override]
        rowid: int | None = super().max_notification_id()
        return None if rowid is None else position_of(rowid)


GAPPED_RECORDER_TOPIC: Final = get_topic(GappedSQLiteApplicationRecorder)
