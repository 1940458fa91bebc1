"""The one time syntax of the ledger, for the API's query parameters and the command line.

An instant is RFC 3339 with its offset (``2026-03-01T12:00:00Z``,
``2026-03-01T13:00:00+01:00``), or a bare date, which means midnight UTC at its start
(``2026-03-01`` = ``2026-03-01T00:00:00Z``). A time without an offset is refused: the
ledger never guesses a time zone.
"""

import re
from datetime import UTC, datetime
from typing import Final

from app.domain.errors import ValidationError

# Year 0001-9999, month 01-12, day 01-31 (a day past its month's end is refused on parsing).
DATE_PATTERN: Final = (
    r"(\d{3}[1-9]|\d{2}[1-9]0|\d[1-9]00|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
)
DATE_TIME_PATTERN: Final = (
    DATE_PATTERN
    + r"[Tt ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)"
)
# Declared in the API schema as the query parameters' pattern.
TIME_PATTERN: Final = rf"^({DATE_PATTERN}|{DATE_TIME_PATTERN})$"
TIME_SYNTAX: Final = (
    "RFC 3339 with an offset (2026-03-01T12:00:00Z, 2026-03-01T13:00:00+01:00) "
    "or a date (2026-03-01, meaning midnight UTC)"
)
TIME_TEXT_LENGTH_MAX: Final = 40
_TIME: Final = re.compile(TIME_PATTERN)


def parse_time(text: str, field: str = "time") -> datetime:
    """An aware UTC instant from the ledger's time syntax, or a ValidationError naming
    ``field`` and the syntax."""
    if len(text) > TIME_TEXT_LENGTH_MAX or not _TIME.fullmatch(text):
        raise ValidationError(f"{field} {text!r} is not a time: use {TIME_SYNTAX}", field=field)
    try:
        if len(text) == len("2026-03-01"):
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        # Fractions past microseconds are cut, never rounded up past the named instant.
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationError(
            f"{field} {text!r} is not a valid instant (out of range)", field=field
        ) from None
