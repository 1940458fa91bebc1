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

# The pattern is the whole rule (the API schema declares it, so a client's generator
# only makes instants the ledger reads): years 0002-9998, so that no offset takes an
# instant past what UTC can represent; only days each month has (29 February in leap years);
# ASCII digits only ([0-9], not \d, which also takes other scripts' digits).
_YEAR: Final = (
    r"(000[2-9]|00[1-9][0-9]|0[1-9][0-9][0-9]|[1-8][0-9]{3}|9[0-8][0-9][0-9]|99[0-8][0-9]|999[0-8])"
)
_LEAP_YEAR: Final = r"([0-9][0-9](0[48]|[2468][048]|[13579][26])|([2468][048]|[13579][26]|0[48])00)"
DATE_PATTERN: Final = (
    rf"({_YEAR}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)"
    rf"|02-(0[1-9]|1[0-9]|2[0-8]))|{_LEAP_YEAR}-02-29)"
)
DATE_TIME_PATTERN: Final = (
    DATE_PATTERN
    + r"[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
    + r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
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
        # Fractions past microseconds are cut, never rounded up past the named instant;
        # RFC 3339 allows a lower-case t and z, which fromisoformat does not read.
        return datetime.fromisoformat(text.upper()).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationError(
            f"{field} {text!r} is not a valid instant (out of range)", field=field
        ) from None
