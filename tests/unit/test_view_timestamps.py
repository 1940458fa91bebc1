"""The views' time text: fixed width, sorts as time does, and reads back to the instant."""

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from projections.schema import parse_timestamp, timestamp_text

instants = st.datetimes(
    min_value=datetime(1000, 1, 2),  # naive bounds: zones drawn below
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    ),
)


@given(instant=instants)
def test_a_time_text_reads_back_to_its_instant_in_utc(instant: datetime) -> None:
    text = timestamp_text(instant)
    assert len(text) == len("2026-03-01T00:00:00.000000Z")
    assert text.endswith("Z")
    assert text == instant.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    back = parse_timestamp(text)
    assert back == instant
    assert back.utcoffset() == timedelta(0)


@given(first=instants, second=instants)
def test_time_texts_sort_as_their_instants_do(first: datetime, second: datetime) -> None:
    assert (timestamp_text(first) < timestamp_text(second)) == (first < second)
