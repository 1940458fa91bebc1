"""The one time syntax (app.domain.times): what it accepts means exactly the instant
written; what it refuses is refused with the syntax in the message."""

from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.domain.errors import ValidationError
from app.domain.times import TIME_PATTERN, TIME_TEXT_LENGTH_MAX, parse_time

OFFSETS = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
INSTANTS = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2999, 12, 31), timezones=OFFSETS
)


@given(INSTANTS)
def test_an_rfc_3339_instant_with_any_offset_reads_as_the_same_instant(moment: datetime) -> None:
    text = moment.isoformat()
    assert len(text) <= TIME_TEXT_LENGTH_MAX
    parsed = parse_time(text)
    assert parsed == moment
    assert parsed.tzinfo is UTC


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2999, 12, 31)))
def test_a_date_alone_is_midnight_utc(day: date) -> None:
    assert parse_time(day.isoformat()) == datetime.combine(day, time(0), tzinfo=UTC)


def test_z_and_a_space_separator_and_nanoseconds_are_accepted() -> None:
    expected = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert parse_time("2026-03-01T12:00:00.123456789Z") == expected
    assert parse_time("2026-03-01 13:00:00.123456+01:00") == expected


@given(st.from_regex(TIME_PATTERN, fullmatch=True))
def test_every_text_the_declared_pattern_admits_is_an_instant(text: str) -> None:
    # The API schema declares TIME_PATTERN: what a client generates from it must be read.
    assert parse_time(text).tzinfo is UTC


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-01T12:00:00",  # naive: the ledger never guesses a zone
        "2026-03-01T12:00Z",  # RFC 3339 has seconds
        "20260301",
        "yesterday",
        "2026-13-01",
        "2026-02-30T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # before the first representable UTC instant
        "0001-01-01",  # years 0002-9998 only: no offset leaves what UTC represents
        "9999-12-31T00:00:00Z",
        "2100-02-29",  # not a leap year
        "2026-04-31",
        "2026-03-01T12:00:00Z" + "0" * 40,
        "",
    ],
)
def test_anything_else_is_refused_naming_the_field_and_the_syntax(text: str) -> None:
    with pytest.raises(ValidationError) as refused:
        parse_time(text, "as_of")
    assert refused.value.code == "validation_error"
    assert refused.value.detail.startswith("as_of ")
