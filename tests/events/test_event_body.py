"""A public event's stored text is the standard library's compact JSON, byte for byte,
whichever encoder wrote it: webhooks sign these bytes and the stream sends them, so
events projected before and after the switch to orjson read the same."""

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.events.database import Database
from app.events.projector import FeedProjector
from app.events.store import FeedStore, event_body
from tests.conftest import store_env

# What a public event holds: text (any character), integers (64-bit and beyond),
# booleans and null, in objects and lists; never a float (its schema has none).
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def standard(event: Any) -> str:
    return json.dumps(event, separators=(",", ":"))


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_any_event_is_stored_as_the_standard_librarys_compact_json(event: dict[str, Any]) -> None:
    assert event_body(event) == standard(event)


def test_text_orjson_writes_differently_takes_the_standard_path() -> None:
    for awkward in ("caf\u00e9", "\u007f", "\U0001f600", "line\nbreak\u0001", 2**64):
        event = {"id": "e1", "data": {"value": awkward}}
        assert event_body(event) == standard(event)
    assert "\\u00e9" in event_body({"name": "caf\u00e9"})  # escaped, as always


def test_projected_events_are_stored_exactly_as_before(tmp_path: Path) -> None:
    ledger = Ledger(store_env(f"sqlite:///{tmp_path / 'log.sqlite'}"))
    try:
        ledger.open_account(OpenAccount(id="issuer", unit="CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount(id="cafe", unit="CREDITS", metadata={"k": "caf\u00e9"}))
        ledger.record_transfer(
            RecordTransfer(id="t1", debit_account_id="issuer", credit_account_id="cafe", amount=3)
        )
        store = FeedStore(Database(f"sqlite:///{tmp_path / 'feed.sqlite'}"))
        FeedProjector(ledger, store).catch_up()
        rows = store.page(0, 100)
        assert len(rows) >= 3
        for row in rows:
            assert row.body == standard(json.loads(row.body))
            assert row.event() == json.loads(row.body)
        store.database.close()
    finally:
        ledger.close()
