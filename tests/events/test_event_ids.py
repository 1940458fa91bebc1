"""Public event ids are ``uuid5(EVENT_ID_NAMESPACE, "part:part:…")`` as text, whatever
builds them: ids already delivered to consumers must never change."""

import uuid

from hypothesis import given
from hypothesis import strategies as st

from app.events.schema import EVENT_ID_NAMESPACE, TRANSFER_RECORDED, event_id

parts = st.one_of(st.text(), st.uuids(), st.integers(-(2**70), 2**70))


@given(st.lists(parts, max_size=5))
def test_an_event_id_is_the_uuid5_of_its_parts_joined(given_parts: list[object]) -> None:
    name = ":".join(str(part) for part in given_parts)
    assert event_id(*given_parts) == str(uuid.uuid5(EVENT_ID_NAMESPACE, name))


def test_a_known_event_keeps_its_id() -> None:
    stream = uuid.UUID("0f9e5a1c-3c2b-4d8e-9a6f-1b2c3d4e5f60")
    # As written by the standard library's uuid5 when the feed began.
    assert event_id(TRANSFER_RECORDED, stream, 1) == "217855cd-f602-5274-829f-ccb92a2ae9d2"
