"""Checks on query parameters that the type system alone does not make."""

from datetime import UTC, datetime

from app.api.errors import ApiError


def utc_instant(value: datetime | None, name: str) -> datetime | None:
    """An aware instant, in UTC; 422 for a naive one or one UTC cannot represent."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ApiError(422, "validation_error", f"{name} needs a time zone (RFC 3339)")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ApiError(422, "validation_error", f"{name} is out of range") from None
