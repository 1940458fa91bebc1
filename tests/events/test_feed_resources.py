"""The feed's shortcut for a recording's public resource (``recorded_resource``) against
the general path (``transfer_resource`` of ``TransferView.recorded``): the same keys in
the same order, so the same stored text, for any recording."""

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from app.application.views import TransferView
from app.domain.transfer import Transfer
from app.events.projector import public_event, recorded_resource, transfer_resource
from app.events.schema import TRANSFER_RECORDED
from app.events.store import event_body

texts = st.text(min_size=1, max_size=12)
# Times as the store gives them back: UTC, with and without microseconds.
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
) | st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=0))
allocations = st.none() | st.lists(
    st.fixed_dictionaries({"grant_id": st.none() | texts, "amount": st.integers(0, 2**62)}),
    max_size=3,
)
grants = st.none() | st.fixed_dictionaries(
    {
        "expires_at": st.none() | times,
        "effective_at": times,
        "priority": st.integers(0, 100),
        "category": st.sampled_from(["paid", "promotional"]),
    }
)


@st.composite
def recordings(draw: st.DrawFn) -> Transfer.TransferRecorded:
    """A recording as the feed receives it: decoded, built without its constructor."""
    event = object.__new__(Transfer.TransferRecorded)
    object.__setattr__(
        event,
        "__dict__",
        {
            "originator_id": draw(st.uuids()),
            "originator_version": 0,
            "timestamp": draw(times),
            "transfer_id": draw(texts),
            "debit_account_id": draw(texts),
            "credit_account_id": draw(texts),
            "amount": draw(st.integers(1, 2**62)),
            "unit": draw(texts),
            "pending": draw(st.booleans()),
            "timeout_seconds": draw(st.none() | st.integers(0, 10**8)),
            "metadata": draw(st.dictionaries(texts, st.text(max_size=12), max_size=3)),
            "reversal_of": draw(st.none() | texts),
            "grant": draw(grants),
            "allocations": draw(allocations),
        },
    )
    return event


@given(event=recordings(), position=st.integers(1, 2**62))
def test_a_recordings_resource_is_the_general_paths_key_for_key_in_order(
    event: Transfer.TransferRecorded, position: int
) -> None:
    general = transfer_resource(TransferView.recorded(event), position)
    shortcut = recorded_resource(event, position)
    assert shortcut == general
    assert _in_order(shortcut) == _in_order(general)
    stored = [
        event_body(public_event(TRANSFER_RECORDED, event, position, {"transfer": resource}))
        for resource in (shortcut, general)
    ]
    assert stored[0] == stored[1]


def test_a_pending_recording_expires_its_timeout_after_its_time() -> None:
    """One worked example beside the property: what the shortcut says of a hold."""
    event = object.__new__(Transfer.TransferRecorded)
    at = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    object.__setattr__(
        event,
        "__dict__",
        {
            "originator_id": uuid.UUID(int=7),
            "originator_version": 0,
            "timestamp": at,
            "transfer_id": "hold",
            "debit_account_id": "ana",
            "credit_account_id": "shop",
            "amount": 5,
            "unit": "CREDITS",
            "pending": True,
            "timeout_seconds": 90,
            "metadata": {"k": "v"},
            "reversal_of": None,
            "grant": None,
            "allocations": None,
        },
    )
    resource = recorded_resource(event, 3)
    assert resource["status"] == "pending"
    assert resource["amount_posted"] == 0
    assert resource["recorded_at"] == "2026-12-01T07:00:00Z"
    assert resource["expires_at"] == (at + timedelta(seconds=90)).isoformat().replace("+00:00", "Z")
    assert resource["allocations"] == []
    assert resource["position"] == 3


def _in_order(value: object) -> object:
    """``value`` with every dict's keys in order, for an equality that sees the order."""
    if isinstance(value, dict):
        return [(key, _in_order(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_in_order(item) for item in value]
    return value
