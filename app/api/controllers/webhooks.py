"""Webhook endpoints (admin): create (secret shown once), list, read, update, delete,
their deliveries, and replay from a position."""

from typing import Annotated

from litestar import Controller, delete, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

from app.api.auth import requires
from app.api.consistency import refuse_unknown_parameters
from app.api.controllers.events import events_of
from app.api.errors import ApiError
from app.api.event_schemas import (
    DeliveryRead,
    WebhookCreate,
    WebhookCreated,
    WebhookRead,
    WebhookReplay,
    WebhookUpdate,
)
from app.api.schemas import Page
from app.api.services import Services
from app.events.feed import FeedInputError, check_types
from app.webhooks.store import DELIVERIES_PAGE_LIMIT_MAX, WEBHOOK_PAGE_LIMIT_MAX, Endpoint

WEBHOOK_ID_LENGTH_MAX = 64
DELIVERIES_LIMIT_DEFAULT = 100


def known_types(types: list[str] | None) -> list[str] | None:
    if types is None:
        return None
    try:
        return list(check_types(list(dict.fromkeys(types))))
    except FeedInputError as error:
        raise ApiError(error.status, error.code, error.detail) from None


def found(endpoint: Endpoint | None, webhook_id: str) -> Endpoint:
    if endpoint is None:
        raise ApiError(404, "webhook_not_found", f"webhook {webhook_id[:64]} does not exist")
    return endpoint


class WebhookController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]  # noqa: RUF012
    before_request = refuse_unknown_parameters  # type: ignore[assignment]
    guards = [requires("admin")]  # noqa: RUF012

    @post("/", sync_to_thread=True, status_code=201, summary="Add an endpoint")
    def create(
        self, data: JSONBody[WebhookCreate], services: NamedDependency[Services]
    ) -> WebhookCreated:
        types = known_types(data.types) or []
        endpoint, secret = events_of(services).webhooks.create(data.url, types, data.description)
        return WebhookCreated(**WebhookRead.of(endpoint).model_dump(), secret=secret)

    @get("/", sync_to_thread=True, summary="List endpoints (by id)")
    def page(
        self,
        services: NamedDependency[Services],
        cursor: Annotated[str | None, Parameter(required=False, max_length=64)] = None,
        limit: Annotated[int, Parameter(ge=1, le=WEBHOOK_PAGE_LIMIT_MAX)] = WEBHOOK_PAGE_LIMIT_MAX,
    ) -> Page[WebhookRead]:
        endpoints = events_of(services).webhooks.page(cursor or "", limit)
        return Page(
            items=[WebhookRead.of(endpoint) for endpoint in endpoints],
            next_cursor=endpoints[-1].id if len(endpoints) == limit else None,
        )

    @get("/{webhook_id:str}", sync_to_thread=True, summary="One endpoint")
    def read(self, webhook_id: FromPath[str], services: NamedDependency[Services]) -> WebhookRead:
        return WebhookRead.of(found(events_of(services).webhooks.get(webhook_id), webhook_id))

    @patch(
        "/{webhook_id:str}",
        sync_to_thread=True,
        summary="Change url, types, description; enable again",
    )
    def update(
        self,
        webhook_id: FromPath[str],
        data: JSONBody[WebhookUpdate],
        services: NamedDependency[Services],
    ) -> WebhookRead:
        webhooks = events_of(services).webhooks
        found(webhooks.get(webhook_id), webhook_id)
        endpoint = webhooks.update(
            webhook_id,
            url=data.url,
            types=known_types(data.types),
            description=data.description,
            enabled=data.enabled,
        )
        return WebhookRead.of(found(endpoint, webhook_id))

    @delete("/{webhook_id:str}", sync_to_thread=True, status_code=204, summary="Remove")
    def remove(self, webhook_id: FromPath[str], services: NamedDependency[Services]) -> None:
        if not events_of(services).webhooks.delete(webhook_id):
            raise ApiError(404, "webhook_not_found", f"webhook {webhook_id[:64]} does not exist")

    @get("/{webhook_id:str}/deliveries", sync_to_thread=True, summary="Deliveries, newest first")
    def deliveries(
        self,
        webhook_id: FromPath[str],
        services: NamedDependency[Services],
        cursor: Annotated[str | None, Parameter(required=False, max_length=20)] = None,
        limit: Annotated[
            int, Parameter(ge=1, le=DELIVERIES_PAGE_LIMIT_MAX)
        ] = DELIVERIES_LIMIT_DEFAULT,
    ) -> Page[DeliveryRead]:
        webhooks = events_of(services).webhooks
        found(webhooks.get(webhook_id), webhook_id)
        if cursor is not None and not (cursor.isascii() and cursor.isdigit()):
            raise ApiError(400, "invalid_cursor", "cursor is not one this API handed out")
        rows = webhooks.deliveries(webhook_id, None if cursor is None else int(cursor), limit)
        return Page(
            items=[DeliveryRead.of(row) for row in rows],
            next_cursor=str(rows[-1].sequence) if len(rows) == limit else None,
        )

    @post(
        "/{webhook_id:str}/replay",
        sync_to_thread=True,
        status_code=200,
        summary="Deliver again every matching event after a position",
    )
    def replay(
        self,
        webhook_id: FromPath[str],
        data: JSONBody[WebhookReplay],
        services: NamedDependency[Services],
    ) -> WebhookRead:
        events = events_of(services)
        found(events.webhooks.get(webhook_id), webhook_id)
        cursor = events.feed_store.last_sequence_at_or_before(data.after_position)
        return WebhookRead.of(found(events.webhooks.replay(webhook_id, cursor), webhook_id))
