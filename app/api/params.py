"""Checks on query parameters that the type system alone does not make."""

from datetime import UTC, datetime
from typing import Annotated

from litestar.params import Parameter

from app.api.errors import ApiError
from app.domain.times import TIME_PATTERN, TIME_SYNTAX, TIME_TEXT_LENGTH_MAX, parse_time

# A time in a query (as_of, since, until …): the ledger's one time syntax, shared with
# the command line (app.domain.times); a date alone means midnight UTC.
TimeQuery = Annotated[
    str | None,
    Parameter(
        required=False,
        pattern=TIME_PATTERN,
        max_length=TIME_TEXT_LENGTH_MAX,
        description=f"An instant: {TIME_SYNTAX}",
    ),
]

RequiredTimeQuery = Annotated[
    str,
    Parameter(
        required=True,
        pattern=TIME_PATTERN,
        max_length=TIME_TEXT_LENGTH_MAX,
        description=f"An instant: {TIME_SYNTAX}",
    ),
]


def utc_instant(value: str | datetime | None, name: str) -> datetime | None:
    """An aware instant, in UTC; 422 for text outside the time syntax, a naive time, or
    one UTC cannot represent."""
    if value is None:
        return None
    if isinstance(value, str):
        return parse_time(value, name)
    if value.tzinfo is None:
        raise ApiError(422, "validation_error", f"{name} needs a time zone (RFC 3339)")
    try:
        return value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ApiError(422, "validation_error", f"{name} is out of range") from None
