"""Stream ids as text (``StreamTexts``: the feed's ``str(UUID)``, the views' ``hex``):
the text the id's own method writes, whether written out or looked up, and bounded."""

import uuid
from operator import attrgetter

from hypothesis import given
from hypothesis import strategies as st

from app.events.projector import account_text
from app.persistence.decoding import StreamTexts
from projections.projection import account_hex


@given(st.lists(st.uuids(), max_size=20))
def test_a_stream_id_s_text_is_its_str_the_first_time_and_after(ids: list[uuid.UUID]) -> None:
    texts = StreamTexts()
    for _ in range(2):  # written out, then looked up
        assert [texts.of(stream_id) for stream_id in ids] == [str(i) for i in ids]


def test_an_equal_id_of_another_object_finds_the_same_text() -> None:
    texts = StreamTexts()
    stream_id = uuid.uuid4()
    first = texts.of(stream_id)
    assert texts.of(uuid.UUID(str(stream_id))) is first
    assert len(texts) == 1


def test_past_its_bound_it_drops_what_it_kept_and_goes_on_right() -> None:
    texts = StreamTexts(kept_max=3)
    ids = [uuid.uuid4() for _ in range(4)]
    assert [texts.of(stream_id) for stream_id in ids[:3]] == [str(i) for i in ids[:3]]
    assert len(texts) == 3
    assert texts.of(ids[3]) == str(ids[3])
    assert len(texts) == 1  # the three dropped, the fourth kept
    assert texts.of(ids[0]) == str(ids[0])
    assert len(texts) == 2


@given(st.lists(st.uuids(), max_size=20))
def test_written_by_another_method_it_is_that_method_s_text(ids: list[uuid.UUID]) -> None:
    texts = StreamTexts(attrgetter("hex"))
    for _ in range(2):
        assert [texts.of(stream_id) for stream_id in ids] == [i.hex for i in ids]


@given(st.uuids())
def test_the_views_account_key_is_the_id_s_hex(stream_id: uuid.UUID) -> None:
    assert account_hex(stream_id) == stream_id.hex
    assert account_hex(uuid.UUID(str(stream_id))) == stream_id.hex


@given(st.uuids())
def test_the_feeds_account_key_is_the_id_s_str_kept_across_calls(stream_id: uuid.UUID) -> None:
    """One text per account for every batch of every projector: the same object back
    for an equal id (a ``StreamTexts`` made per batch, or per call, would write it anew)."""
    first = account_text(stream_id)
    assert first == str(stream_id)
    assert account_text(uuid.UUID(str(stream_id))) is first
