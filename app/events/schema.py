"""The public event schema: what downstream services see, decoupled from class names.

The stored events are named by Python class paths and shaped for the aggregates; the
public events are named ``<resource>.<what happened>``, carry ``version`` (bumped only
when a type's ``data`` changes incompatibly) and ``data`` shaped as the API shows the
resource. Adding a type is additive; renaming or reshaping one is a new version.
"""

import hashlib
import uuid
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, Field

SCHEMA_VERSION: Final = 1
EVENT_ID_NAMESPACE: Final = uuid.UUID("6f1c3f9e-7d0a-4c55-9a57-3c9d2d0f4b11")


_NAMESPACE_BYTES: Final = EVENT_ID_NAMESPACE.bytes
# What ``UUID(bytes=…, version=5)`` clears and sets: the variant and version bits.
_UUID5_KEPT: Final = ~((0xC000 << 48) | (0xF000 << 64)) & ((1 << 128) - 1)
_UUID5_SET: Final = (0x8000 << 48) | (5 << 76)


def event_id(*parts: object) -> str:
    """Stable ids: derived from what the event is about, never from when it was made.

    ``str(uuid5(EVENT_ID_NAMESPACE, "part:part:…"))``, written out from the hash's
    integer without building the ``UUID`` (the feed projector makes one per public
    event)."""
    name = ":".join(str(part) for part in parts)
    digest = hashlib.sha1(_NAMESPACE_BYTES + name.encode()).digest()  # noqa: S324  # as uuid5
    text = f"{int.from_bytes(digest[:16]) & _UUID5_KEPT | _UUID5_SET:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


ACCOUNT_OPENED: Final = "account.opened"
ACCOUNT_UPDATED: Final = "account.updated"
ACCOUNT_CLOSED: Final = "account.closed"
TRANSFER_RECORDED: Final = "transfer.recorded"
TRANSFER_POSTED: Final = "transfer.posted"
TRANSFER_VOIDED: Final = "transfer.voided"
TRANSFER_EXPIRED: Final = "transfer.expired"
TRANSFER_REVERSED: Final = "transfer.reversed"
GRANT_CREATED: Final = "grant.created"
GRANT_EXPIRED: Final = "grant.expired"
THRESHOLD_CROSSED: Final = "balance.threshold_crossed"
WEBHOOK_DISABLED: Final = "webhook.disabled"

# Every type a consumer may filter on or subscribe to, with what it means.
EVENT_TYPES: Final[dict[str, str]] = {
    ACCOUNT_OPENED: "An account was opened. data: {account}",
    ACCOUNT_UPDATED: "An account's metadata changed. data: {account}",
    ACCOUNT_CLOSED: "An account was closed. data: {account}",
    TRANSFER_RECORDED: "A transfer was recorded, posted or pending (a reversal is one too). "
    "data: {transfer, accounts}",
    TRANSFER_POSTED: "A pending transfer was posted (whole or partly). data: {transfer, accounts}",
    TRANSFER_VOIDED: "A pending transfer was voided. data: {transfer, accounts}",
    TRANSFER_EXPIRED: "A pending transfer expired. data: {transfer, accounts}",
    TRANSFER_REVERSED: "A posted transfer was reversed by a new transfer. "
    "data: {transfer, reversal_id}",
    GRANT_CREATED: "A credit grant (lot) was created. data: {grant, accounts}",
    GRANT_EXPIRED: "A credit grant expired; its remainder went to breakage. "
    "data: {grant, accounts}",
    THRESHOLD_CROSSED: "A balance monitor's threshold was crossed, one way or the other. "
    "data: {monitor, direction, previous_value, value, transfer_id, account}",
    WEBHOOK_DISABLED: "A webhook endpoint was disabled after repeated failed deliveries. "
    "data: {webhook_id, url, failures, last_error}",
}

EventType = Literal[
    "account.opened",
    "account.updated",
    "account.closed",
    "transfer.recorded",
    "transfer.posted",
    "transfer.voided",
    "transfer.expired",
    "transfer.reversed",
    "grant.created",
    "grant.expired",
    "balance.threshold_crossed",
    "webhook.disabled",
]


class PublicEvent(BaseModel):
    """One event of the public feed, identical in the feed, the stream and webhooks."""

    id: str = Field(description="Stable across deliveries and replays: deduplicate on it")
    type: EventType = Field(description="What happened, as `<resource>.<what happened>`")
    version: int = Field(description="Version of this type's `data` shape")
    position: int = Field(
        description="The ledger log position the event reflects (increasing, with gaps); "
        "usable as `min_position` for read-your-writes"
    )
    occurred_at: datetime
    data: dict[str, Any] = Field(
        description="The resource as the API shows it; for money movements, `accounts` "
        "holds each touched account's balances just after this change"
    )


class EventPage(BaseModel):
    items: list[PublicEvent]
    next_cursor: str = Field(
        description="Pass as `after` for the next page (always present: store it and "
        "resume from it after a restart)"
    )
