"""The orjson transcoder: the library's JSON format, read both ways, and a store written
by the library's own transcoder stays readable event for event."""

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import orjson
import pytest
from eventsourcing.persistence import JSONTranscoder, Transcoder
from hypothesis import given
from hypothesis import strategies as st

from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.application.ledger import ACCOUNT_SNAPSHOT_INTERVAL, Ledger
from app.domain.errors import ValidationError
from app.domain.values import account_uuid
from app.persistence.stores import event_store_env
from app.persistence.transcoder import OrjsonTranscoder
from tests.support.waiting import eventually


class LibraryTranscoderLedger(Ledger):
    """The ledger as it was before: the library's json-module transcoder."""

    name = "ledger"

    def construct_transcoder(self) -> Transcoder:
        transcoder = JSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder


def both() -> tuple[JSONTranscoder, OrjsonTranscoder]:
    library, fast = JSONTranscoder(), OrjsonTranscoder()
    for transcoder in (library, fast):
        Ledger.register_transcodings(Ledger.__new__(Ledger), transcoder)
    return library, fast


moments = st.datetimes(timezones=st.just(UTC))
leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | moments
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), values, max_size=6))
def test_each_transcoder_reads_what_the_other_wrote(state: dict[str, Any]) -> None:
    library, fast = both()
    assert fast.decode(library.encode(state)) == state
    assert library.decode(fast.encode(state)) == state
    assert fast.decode(fast.encode(state)) == state


@given(st.dictionaries(st.text(), values, max_size=6))
def test_the_fast_transcoder_writes_the_same_document_as_the_librarys(
    state: dict[str, Any],
) -> None:
    library, fast = both()
    assert orjson.loads(fast.encode(state)) == json.loads(library.encode(state))


# Keys and texts that look like the tags' own: the fast reading of a document whose
# only tags are at its top level must not take them for tags, nor miss a deeper one.
# (A dict of exactly the two tag keys is a tag in the format itself: no state holds one.)
tag_like = st.sampled_from(["_type_", "_data_", '"_type_', '_type_"', "datetime_iso", "t"])
TAG_KEYS = {"_type_", "_data_"}
tricky = st.recursive(
    st.none() | st.integers(0, 9) | tag_like | moments,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(tag_like, inner, max_size=3).filter(lambda d: set(d) != TAG_KEYS)
    ),
    max_leaves=8,
)


@given(
    st.dictionaries(tag_like | st.text(max_size=3), tricky, max_size=5).filter(
        lambda d: set(d) != TAG_KEYS
    ),
    moments,
)
def test_an_event_state_with_its_time_at_the_top_reads_as_the_library_reads_it(
    state: dict[str, Any], moment: datetime
) -> None:
    library, fast = both()
    event_like = {"timestamp": moment, **state}
    written = fast.encode(event_like)
    assert fast.decode(written) == library.decode(written) == event_like


@given(st.dictionaries(st.text().filter(lambda key: key != "timestamp"), values), moments)
def test_an_events_fields_read_tagged_give_its_time_once_untagged(
    state: dict[str, Any], moment: datetime
) -> None:
    _, fast = both()
    written = fast.encode({"timestamp": moment, **state})
    fields = fast.decode_tagged(written)
    assert fast.untag(fields["timestamp"]) == moment
    assert fields == orjson.loads(written)


def test_events_of_one_time_stamp_share_the_time_read() -> None:
    _, fast = both()
    moment = datetime.now(tz=UTC)
    first, second = (fast.decode(fast.encode({"timestamp": moment, "n": n})) for n in (1, 2))
    assert first["timestamp"] == second["timestamp"] == moment
    assert first["timestamp"] is second["timestamp"]


SNAPSHOT_WAIT_SECONDS: Final = 10.0


def write_history(ledger: Ledger) -> None:
    now = datetime.now(tz=UTC)
    ledger.open_account(OpenAccount("issuance", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("alice", "CREDITS", metadata={"tier": "gold", "ü": "ß"}))
    ledger.open_account(OpenAccount("bob", "CREDITS"))
    terms = GrantTerms(expires_at=now + timedelta(days=30), category="promotional")
    ledger.record_transfer(RecordTransfer("grant", "issuance", "alice", 900, grant=terms))
    ledger.record_transfer(RecordTransfer("hold", "alice", "bob", 40, pending=True))
    ledger.post_pending("hold", 30)
    ledger.record_transfer(RecordTransfer("spend", "alice", "bob", 5))
    ledger.reverse_transfer("spend", "refund")
    # Enough events on one account for a snapshot (it holds the lot book).
    spends = [
        RecordTransfer(f"s{index}", "alice", "bob", 1) for index in range(ACCOUNT_SNAPSHOT_INTERVAL)
    ]
    ledger.record_batch(spends, atomic=True)


def test_a_store_written_by_the_library_transcoder_reads_the_same(tmp_path: Path) -> None:
    env = event_store_env(f"sqlite:///{tmp_path / 'old.sqlite'}")
    with LibraryTranscoderLedger(env) as old:
        write_history(old)
        before = {i: old.get_account(i) for i in ("issuance", "alice", "bob")}
        transfers = {i: old.get_transfer(i) for i in ("grant", "hold", "spend", "refund")}
        stored = old.recorder.select_notifications(start=1, limit=10_000)
        snapshots = old.snapshots
        assert snapshots is not None
        # The writer snapshots after it has answered (a snapshot is off the success path).
        assert eventually(
            lambda: bool(list(snapshots.get(account_uuid("alice")))), SNAPSHOT_WAIT_SECONDS
        ), "the history holds a snapshot"
    library, fast = both()
    for notification in stored:
        assert fast.decode(notification.state) == library.decode(notification.state)
    with Ledger(env) as new:
        assert {i: new.get_account(i) for i in before} == before
        assert {i: new.get_transfer(i) for i in transfers} == transfers
        assert new.account_lots("alice").balance == before["alice"].balance
        # And it writes on: the next command reads the old events and snapshot.
        new.record_transfer(RecordTransfer("after", "alice", "bob", 1))
        assert new.get_account("alice").balance == before["alice"].balance - 1


def test_metadata_shaped_like_a_stored_tag_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    """A stored tag is an object of ``_type_`` and ``_data_``: metadata of that shape
    would read back as a time (or not at all), leaving its account or transfer
    unreadable to every later reader; the edge refuses the reserved key instead."""
    tagged = {"_type_": "datetime_iso", "_data_": "2026-01-01T00:00:00+00:00"}
    env = event_store_env(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    with Ledger(env) as ledger:
        ledger.open_account(OpenAccount("issuer", "CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount("alice", "CREDITS"))
        with pytest.raises(ValidationError, match="_type_"):
            ledger.open_account(OpenAccount("bob", "CREDITS", metadata=tagged))
        with pytest.raises(ValidationError, match="_type_"):
            ledger.record_transfer(RecordTransfer("t1", "issuer", "alice", 5, metadata=tagged))
        head = ledger.recorder.max_notification_id()
    with Ledger(env) as reopened:
        assert reopened.recorder.max_notification_id() == head, "nothing was written"
        assert reopened.get_account("alice").metadata == {}
