"""Request and response shapes of the webhook and monitor endpoints (API v1)."""

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from app.domain import limits
from app.events.lag import EventsLag
from app.events.monitors import Monitor
from app.events.schema import EVENT_TYPES
from app.webhooks.store import Delivery, Endpoint

URL_LENGTH_MAX = 2000
DESCRIPTION_LENGTH_MAX = 500


# The whole rule for a webhook URL: http or https, a host name or IPv4 address (no
# credentials, no IPv6 literal), a port 0-65535, then printable ASCII only (no white
# space). app.api.openapi declares it as the field's pattern (a json_schema_extra here
# would collect the field's examples once more on every schema built).
_HOST_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?"
_PORT = r"([0-9]{1,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
WEBHOOK_URL_PATTERN = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://{_HOST_LABEL}(\.{_HOST_LABEL})*(:{_PORT})?([/?#][!-~]*)?$"
)
_WEBHOOK_URL = re.compile(WEBHOOK_URL_PATTERN)


def _http_url(url: str) -> str:
    if not _WEBHOOK_URL.fullmatch(url):
        raise ValueError(
            "must be an absolute http:// or https:// URL with a host name or IPv4 address, "
            "an optional port, no credentials and no white space"
        )
    return url


WebhookUrl = Annotated[
    StrictStr,
    Field(min_length=1, max_length=URL_LENGTH_MAX, examples=["https://example.com/hooks/ledger"]),
    AfterValidator(_http_url),
]
EventTypes = Annotated[
    list[StrictStr],
    Field(
        max_length=len(EVENT_TYPES),
        description="Event types to deliver (empty: all)",
        examples=[["transfer.recorded", "balance.threshold_crossed"]],
    ),
]
Description = Annotated[StrictStr, Field(max_length=DESCRIPTION_LENGTH_MAX)]
Identifier = Annotated[
    StrictStr,
    Field(min_length=1, max_length=limits.ID_LENGTH_MAX, pattern=r"^[A-Za-z0-9._:-]+$"),
]


def _instant(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookCreate(Strict):
    url: WebhookUrl
    types: EventTypes = Field(default_factory=list)
    description: Description = ""


class WebhookUpdate(Strict):
    url: WebhookUrl | None = None
    types: EventTypes | None = None
    description: Description | None = None
    enabled: StrictBool | None = Field(
        default=None, description="true re-enables a disabled endpoint (failures reset)"
    )


class WebhookRead(BaseModel):
    id: str
    url: str
    types: list[str]
    description: str
    status: Literal["enabled", "disabled"]
    created_at: datetime
    updated_at: datetime
    failures: int = Field(description="Consecutive failed attempts (0 after a success)")
    next_attempt_at: datetime | None
    last_error: str | None
    cursor: str = Field(description="Feed cursor up to which every event was delivered")

    @classmethod
    def of(cls, endpoint: Endpoint) -> "WebhookRead":
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            types=list(endpoint.types),
            description=endpoint.description,
            status=endpoint.status,
            created_at=datetime.fromtimestamp(endpoint.created_at, tz=UTC),
            updated_at=datetime.fromtimestamp(endpoint.updated_at, tz=UTC),
            failures=endpoint.failures,
            next_attempt_at=_instant(endpoint.next_attempt_at),
            last_error=endpoint.last_error,
            cursor=str(endpoint.cursor),
        )


class WebhookCreated(WebhookRead):
    secret: str = Field(
        description="The signing secret (Standard Webhooks `whsec_…`), shown only this once"
    )


class WebhookReplay(Strict):
    after_position: Annotated[StrictInt, Field(ge=0, le=2**63 - 1)] = Field(
        description="Deliver again every matching event whose position is after this"
    )


class DeliveryRead(BaseModel):
    event_id: str
    event_type: str
    position: int
    status: Literal["delivered", "failing", "abandoned"]
    attempts: int
    response_status: int | None
    latency_ms: float | None
    last_error: str | None
    last_attempt_at: datetime
    next_attempt_at: datetime | None

    @classmethod
    def of(cls, delivery: Delivery) -> "DeliveryRead":
        return cls(
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            position=delivery.position,
            status=delivery.status,  # type: ignore[arg-type]
            attempts=delivery.attempts,
            response_status=delivery.response_status,
            latency_ms=delivery.latency_ms,
            last_error=delivery.last_error,
            last_attempt_at=datetime.fromtimestamp(delivery.last_attempt_at, tz=UTC),
            next_attempt_at=_instant(delivery.next_attempt_at),
        )


class EventsReadiness(BaseModel):
    """The feed's and webhook deliveries' state (a failing receiver is not our outage:
    these figures never make the service not ready)."""

    feed_lag_positions: int
    webhook_lag_events: int
    webhook_attempts_failed: int
    webhook_endpoints_failing: int
    webhook_endpoints_disabled: int

    @classmethod
    def of(cls, lag: EventsLag) -> "EventsReadiness":
        return cls(
            feed_lag_positions=lag.feed_positions,
            webhook_lag_events=lag.webhook_events,
            webhook_attempts_failed=lag.failed,
            webhook_endpoints_failing=lag.endpoints_failing,
            webhook_endpoints_disabled=lag.endpoints_disabled,
        )


Threshold = Annotated[StrictInt, Field(ge=-(2**63), le=2**63 - 1)]


class MonitorCreate(Strict):
    account_id: Identifier
    field: Literal["balance", "available"] = "balance"
    below: Threshold | None = Field(default=None, description="Fires when the value drops below")
    above: Threshold | None = Field(default=None, description="Fires when the value rises above")
    description: Description = ""


class MonitorRead(BaseModel):
    id: str
    account_id: str
    field: Literal["balance", "available"]
    below: int | None
    above: int | None
    description: str
    created_at: datetime
    condition_holds: bool | None = Field(
        description="Whether the value is past the threshold now (null until the first "
        "change the monitor sees)"
    )

    @classmethod
    def of(cls, monitor: Monitor) -> "MonitorRead":
        return cls(
            id=monitor.id,
            account_id=monitor.account_id,
            field=monitor.field,  # type: ignore[arg-type]
            below=monitor.threshold if monitor.operator == "below" else None,
            above=monitor.threshold if monitor.operator == "above" else None,
            description=monitor.description,
            created_at=datetime.fromtimestamp(monitor.created_at, tz=UTC),
            condition_holds=monitor.holds,
        )
