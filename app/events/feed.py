"""Reading the feed: filters, cursors, long-poll and the Server-Sent Events stream.

Every wait is bounded and asynchronous (the database is asked in a worker thread,
the waiting itself holds no thread), so a thousand idle long-polls cost no threads.
"""

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

import anyio.to_thread

from app.events.schema import EVENT_TYPES
from app.events.store import FEED_PAGE_LIMIT_MAX, FeedRow, FeedStore

FEED_LIMIT_DEFAULT: Final = 100
WAIT_SECONDS_MAX: Final = 30.0
WAIT_POLL_SECONDS: Final = 0.05
TYPES_PARAMETER_LENGTH_MAX: Final = 1000
CURSOR_DIGITS_MAX: Final = 18
STREAM_KEEPALIVE_SECONDS: Final = 15.0
STREAM_PAGE_LIMIT: Final = 500


class FeedInputError(ValueError):
    """A filter or cursor the feed cannot take; ``code`` is the API's problem code."""

    def __init__(self, code: str, detail: str, status: int = 422) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status


def parse_types(types: str | None) -> tuple[str, ...]:
    """``a,b`` → the known event types asked for (none: every type)."""
    if types is None or not types.strip():
        return ()
    if len(types) > TYPES_PARAMETER_LENGTH_MAX:
        raise FeedInputError(
            "filter_too_large", f"types is longer than {TYPES_PARAMETER_LENGTH_MAX} characters"
        )
    asked = tuple(dict.fromkeys(part.strip() for part in types.split(",") if part.strip()))
    return check_types(asked)


def check_types(asked: Sequence[str]) -> tuple[str, ...]:
    if len(asked) > len(EVENT_TYPES):
        raise FeedInputError(
            "filter_too_large", f"at most {len(EVENT_TYPES)} event types may be named"
        )
    unknown = [name for name in asked if name not in EVENT_TYPES]
    if unknown:
        raise FeedInputError(
            "unknown_event_type",
            f"unknown event type(s): {', '.join(sorted(unknown)[:5])}; "
            f"known: {', '.join(EVENT_TYPES)}",
        )
    return tuple(asked)


def parse_cursor(cursor: str | None) -> int:
    """Cursors are opaque to clients; here they are the feed sequence in decimal."""
    if cursor is None or cursor == "":
        return 0
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > CURSOR_DIGITS_MAX:
        raise FeedInputError("invalid_cursor", "cursor is not one this API handed out", 400)
    return int(cursor)


def format_cursor(sequence: int) -> str:
    return str(sequence)


@dataclass(frozen=True)
class FeedQuery:
    after: int
    types: tuple[str, ...] = ()
    account_id: str | None = None
    limit: int = FEED_LIMIT_DEFAULT


class StreamSlots:
    """A bound on open streams: taking a slot never waits; past the bound it says no."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._open = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self._open >= self.capacity:
                return False
            self._open += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            assert self._open > 0
            self._open -= 1

    @property
    def open(self) -> int:
        return self._open


class Feed:
    def __init__(self, store: FeedStore, wait_seconds_max: float = WAIT_SECONDS_MAX) -> None:
        self.store = store
        self.wait_seconds_max = min(wait_seconds_max, WAIT_SECONDS_MAX)
        # Set when the server shuts down: waits answer at once and streams end.
        self.closing = threading.Event()

    def page(self, query: FeedQuery) -> list[FeedRow]:
        assert 0 < query.limit <= FEED_PAGE_LIMIT_MAX
        return self.store.page(query.after, query.limit, query.types, query.account_id)

    async def wait_page(self, query: FeedQuery, wait_seconds: float) -> list[FeedRow]:
        """The next page; when there is none yet, wait up to ``wait_seconds`` for one
        (at most the configured bound)."""
        return await self._wait_rows(query, min(wait_seconds, self.wait_seconds_max))

    async def _wait_rows(self, query: FeedQuery, wait_seconds: float) -> list[FeedRow]:
        deadline = asyncio.get_running_loop().time() + wait_seconds
        last_seen = -1
        while True:
            head = (await anyio.to_thread.run_sync(self.store.head)).sequence
            if head != last_seen:
                # Only look again when the feed moved: idle waiters cost one tiny read.
                rows = await anyio.to_thread.run_sync(self.page, query)
                if rows:
                    return rows
                last_seen = head
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self.closing.is_set():
                return []
            await asyncio.sleep(min(WAIT_POLL_SECONDS, remaining))

    async def follow(
        self, query: FeedQuery, keepalive_seconds: float = STREAM_KEEPALIVE_SECONDS
    ) -> AsyncIterator[FeedRow | None]:
        """Every matching event from ``query.after`` on, until the server shuts down;
        None when a keep-alive is due (nothing arrived for ``keepalive_seconds``)."""
        after = query.after
        while not self.closing.is_set():
            page_query = FeedQuery(after, query.types, query.account_id, STREAM_PAGE_LIMIT)
            rows = await self._wait_rows(page_query, keepalive_seconds)
            if not rows:
                yield None
                continue
            for row in rows:
                yield row
            after = rows[-1].sequence
