"""The public event feed: a page at a time (long-poll) or as Server-Sent Events."""

from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import Parameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from app.api.auth import requires
from app.api.consistency import refuse_unknown_parameters
from app.api.errors import ApiError
from app.api.services import Services
from app.domain.values import check_id
from app.events.feed import (
    FEED_LIMIT_DEFAULT,
    WAIT_SECONDS_MAX,
    FeedInputError,
    FeedQuery,
    format_cursor,
    parse_cursor,
    parse_types,
)
from app.events.schema import EventPage, PublicEvent
from app.events.service import EventServices
from app.events.store import FEED_PAGE_LIMIT_MAX

After = Annotated[
    str | None,
    Parameter(
        required=False,
        description="Cursor: `next_cursor` of the previous page, or an SSE event's id "
        "(omit to start at the beginning)",
    ),
]
Types = Annotated[
    str | None,
    Parameter(required=False, description="Comma-separated event types (default: all)"),
]
AccountFilter = Annotated[
    str | None, Parameter(required=False, description="Only events that concern this account")
]


def events_of(services: Services) -> EventServices:
    if services.events is None:
        raise ApiError(503, "events_unavailable", "the event feed is not configured here")
    return services.events


def feed_query(
    after: str | None, types: str | None, account_id: str | None, limit: int
) -> FeedQuery:
    try:
        return FeedQuery(
            after=parse_cursor(after),
            types=parse_types(types),
            account_id=None if account_id is None else check_id(account_id, "account_id"),
            limit=limit,
        )
    except FeedInputError as error:
        raise ApiError(error.status, error.code, error.detail) from None


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]  # noqa: RUF012
    before_request = refuse_unknown_parameters  # type: ignore[assignment]

    @get(
        "/",
        guards=[requires("read")],
        summary="The event feed, in position order, with cursor pagination and long-poll",
    )
    async def feed(
        self,
        services: NamedDependency[Services],
        after: After = None,
        types: Types = None,
        account_id: AccountFilter = None,
        limit: Annotated[int, Parameter(ge=1, le=FEED_PAGE_LIMIT_MAX)] = FEED_LIMIT_DEFAULT,
        wait_seconds: Annotated[
            float,
            Parameter(
                ge=0,
                le=WAIT_SECONDS_MAX,
                description="When nothing is new, wait up to this long for an event",
            ),
        ] = 0.0,
    ) -> EventPage:
        events = events_of(services)
        query = feed_query(after, types, account_id, limit)
        rows = await events.feed.wait_page(query, wait_seconds)
        next_sequence = rows[-1].sequence if rows else query.after
        return EventPage(
            items=[PublicEvent.model_validate_json(row.body) for row in rows],
            next_cursor=format_cursor(next_sequence),
        )

    @get(
        "/stream",
        guards=[requires("read")],
        summary="The event feed as Server-Sent Events (resume with Last-Event-ID)",
        response_description="text/event-stream: `id` is the cursor, `event` the type, "
        "`data` the event as JSON; comment lines keep the connection alive",
    )
    async def stream(
        self,
        services: NamedDependency[Services],
        request: Request[Any, Any, Any],
        after: After = None,
        types: Types = None,
        account_id: AccountFilter = None,
    ) -> ServerSentEvent:
        events = events_of(services)
        resume_from = request.headers.get("last-event-id") or after
        query = feed_query(resume_from, types, account_id, FEED_LIMIT_DEFAULT)
        if not events.stream_slots.take():
            raise ApiError(
                503,
                "too_many_streams",
                f"{events.stream_slots.capacity} event streams are open already; "
                "use the feed with wait_seconds, or retry later",
            )
        return ServerSentEvent(_messages(events, query), headers={"Cache-Control": "no-store"})


async def _messages(
    events: EventServices, query: FeedQuery
) -> AsyncIterator[ServerSentEventMessage]:
    try:
        yield ServerSentEventMessage(comment="connected", retry=1000)
        async for row in events.feed.follow(query, events.keepalive_seconds):
            if row is None:
                yield ServerSentEventMessage(comment="keep-alive")
                continue
            yield ServerSentEventMessage(
                id=format_cursor(row.sequence), event=row.event_type, data=row.body
            )
    finally:
        events.stream_slots.give_back()
