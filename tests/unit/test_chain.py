"""Every stream is a hash chain: the write path links events, and any edit shows."""

import contextlib
import dataclasses
import enum
import hashlib
import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
import pytest
from eventsourcing.application import Repository
from hypothesis import given
from hypothesis import strategies as st

from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain import chain
from app.domain.chain import GENESIS, expected_chain, first_broken_link
from app.domain.lots import LotBook
from app.domain.values import account_uuid, transfer_uuid
from app.persistence.stores import event_store_env


@contextmanager
def recorded_ledger() -> Iterator[Ledger]:
    with Ledger(event_store_env("memory://")) as ledger:
        ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
        ledger.open_account(OpenAccount("alice", "CREDITS"))
        for number in range(5):
            ledger.record_transfer(RecordTransfer(f"t{number}", "bank", "alice", number + 1))
        yield ledger


def alice_events() -> list[Any]:
    with recorded_ledger() as ledger:
        return list(ledger.events.get(account_uuid("alice")))


def test_each_event_links_to_the_one_before_it() -> None:
    events = alice_events()
    assert len(events) == 6
    assert events[0].chain == expected_chain(GENESIS, events[0])
    for previous, event in itertools.pairwise(events):
        assert event.chain == expected_chain(previous.chain, event)
    assert first_broken_link(events) is None


def test_an_edited_amount_breaks_its_own_link() -> None:
    events = alice_events()
    events[3] = dataclasses.replace(events[3], amount=999)
    assert first_broken_link(events) == 3


def test_re_chaining_an_edit_breaks_the_next_link() -> None:
    events = alice_events()
    forged = dataclasses.replace(events[3], amount=999)
    events[3] = dataclasses.replace(
        forged,
        chain=expected_chain(events[2].chain, forged),
    )
    assert first_broken_link(events) == 4


def test_a_removed_event_breaks_the_chain() -> None:
    events = alice_events()
    del events[2]
    assert first_broken_link(events) == 3


def test_the_aggregate_remembers_the_head_of_its_chain() -> None:
    with recorded_ledger() as ledger:
        events: list[Any] = list(ledger.events.get(account_uuid("alice")))
        account: Any = ledger.repository.get(account_uuid("alice"))
    assert account.chain == events[-1].chain


# The digest's two encoders (orjson, json.dumps for the rest) write the same bytes ---------

JSON_TEXT_KEYS = st.text(max_size=8)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.text()
    | st.datetimes(timezones=st.just(UTC)),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(JSON_TEXT_KEYS, children, max_size=4)
    ),
    max_leaves=12,
)
LINK_INPUTS = given(
    # Any text, and links as the write path finds them (hex digests)
    previous=st.text(max_size=70) | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    version=st.integers(min_value=0, max_value=2**40),
    timestamp=st.datetimes(timezones=st.just(UTC)),
    fields=st.dictionaries(JSON_TEXT_KEYS, JSON_VALUES, max_size=6),
)


@LINK_INPUTS
def test_a_link_is_the_sha256_of_json_dumps_whichever_encoder_wrote_it(
    previous: str, version: int, timestamp: datetime, fields: dict[str, Any]
) -> None:
    originator_id = account_uuid("alice")
    content = [previous, "Account.Debited", originator_id.hex, version, timestamp.isoformat()]
    reference = json.dumps(
        [*content, fields], sort_keys=True, separators=(",", ":"), default=datetime.isoformat
    ).encode()
    digest = chain.chain_digest(
        previous, "Account.Debited", originator_id, version, timestamp, fields
    )
    assert digest == hashlib.sha256(reference).hexdigest()


@LINK_INPUTS
def test_the_write_paths_link_is_the_digests_and_keeps_the_bytes_it_hashed(
    previous: str, version: int, timestamp: datetime, fields: dict[str, Any]
) -> None:
    originator_id = account_uuid("alice")
    args = (previous, "Account.Debited", originator_id, version, timestamp, fields)
    link, encoded = chain._link(*args)
    assert link == chain.chain_digest(*args)
    # With the event's name given as JSON text, plain heads are written directly.
    assert chain._link(*args, quoted_type='"Account.Debited"') == (link, encoded)
    if encoded is None:
        return  # something the store writes otherwise (a time): stored apart
    assert not _holds_a_time(fields)
    assert json.loads(encoded) == json.loads(json.dumps(fields))
    content = [previous, "Account.Debited", originator_id.hex, version, timestamp.isoformat()]
    hashed = orjson.dumps(content)[:-1] + b"," + encoded + b"]"
    assert hashlib.sha256(hashed).hexdigest() == link


def _holds_a_time(value: Any) -> bool:
    if isinstance(value, datetime):
        return True
    if isinstance(value, dict):
        return any(_holds_a_time(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_a_time(item) for item in value)
    return False


def test_links_written_with_json_dumps_alone_keep_verifying(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with contextlib.ExitStack() as stack:
        with monkeypatch.context() as before_orjson:
            # What the write path did before: every link's bytes from json.dumps.
            before_orjson.setattr(chain, "_canonical_json", _json_dumps_bytes)
            before_orjson.setattr(chain, "_link", _json_dumps_link)
            ledger = stack.enter_context(recorded_ledger())
        ledger.record_transfer(
            RecordTransfer("after", "bank", "alice", 9, metadata={"note": "café\x7f☕"})
        )
        events: list[Any] = list(ledger.events.get(account_uuid("alice")))
    assert len(events) == 7
    assert first_broken_link(events) is None
    assert first_broken_link([*events[:2], dataclasses.replace(events[2], amount=99)]) == 2


def _json_dumps_link(*content: Any, quoted_type: str | None = None) -> tuple[str, None]:
    return chain.chain_digest(*content), None


def _json_dumps_bytes(content: list[Any]) -> bytes:
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), default=datetime.isoformat
    ).encode()


# The lean trigger path builds what the library's own fold builds ---------------------------


@contextmanager
def busy_ledger() -> Iterator[Ledger]:
    with recorded_ledger() as ledger:
        ledger.open_account(OpenAccount("shop", "CREDITS", metadata={"tier": "a"}))
        ledger.update_account("shop", {"tier": "b", "region": "eu"})
        grant = GrantTerms(expires_at=datetime(2999, 1, 1, tzinfo=UTC), priority=10)
        ledger.record_transfer(RecordTransfer("promo", "bank", "alice", 50, grant=grant))
        ledger.record_transfer(RecordTransfer("spend", "alice", "shop", 60))
        ledger.record_transfer(RecordTransfer("hold", "alice", "shop", 5, pending=True))
        ledger.post_pending("hold", 3)
        ledger.record_transfer(RecordTransfer("hold2", "alice", "shop", 2, pending=True))
        ledger.void_pending("hold2")
        ledger.reverse_transfer("spend", "refund", amount=20)
        ledger.open_account(OpenAccount("idle", "CREDITS"))
        ledger.close_account("idle")
        yield ledger


def comparable(aggregate: Any) -> dict[str, Any]:
    state = {k: v for k, v in vars(aggregate).items() if k != "_pending_events"}
    if isinstance(state.get("lots"), LotBook):
        state["lots"] = list(state["lots"])
    return state


@pytest.mark.parametrize(
    "stream",
    [
        account_uuid("alice"),
        account_uuid("bank"),
        account_uuid("shop"),
        account_uuid("idle"),
        transfer_uuid("hold"),
        transfer_uuid("hold2"),
        transfer_uuid("spend"),
        transfer_uuid("promo"),
    ],
)
def test_aggregates_built_by_commands_equal_the_librarys_fold_of_their_events(
    stream: UUID,
) -> None:
    with busy_ledger() as ledger:
        built = ledger.load_aggregate(stream)  # the writer's own, built by the commands
        assert built is not None
        folded: Any = Repository(event_store=ledger.events).get(stream)  # the library's mutate
    assert comparable(built) == comparable(folded)


MOMENT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class Side(enum.Enum):
    DEBIT = "debit"


@pytest.mark.parametrize("text", ["plain", "caf\u00e9", "\x7f"])
def test_ids_and_enumerations_hash_alike_whichever_encoder_writes_the_link(text: str) -> None:
    """orjson writes ids and enumerations natively; the json.dumps fallback (taken for
    text past ASCII) must write them the same, not refuse them."""
    stream = account_uuid("alice")
    fields = {"id": stream, "kind": Side.DEBIT, "note": text}
    reference = json.dumps(
        [GENESIS, "X", stream.hex, 0, MOMENT.isoformat(), fields],
        sort_keys=True,
        separators=(",", ":"),
        default=lambda value: str(value) if isinstance(value, UUID) else value.value,
    ).encode()
    digest = chain.chain_digest(GENESIS, "X", stream, 0, MOMENT, fields)
    assert digest == hashlib.sha256(reference).hexdigest()


@dataclasses.dataclass
class _Terms:
    days: int


@pytest.mark.parametrize("text", ["plain", "caf\u00e9"])
def test_a_dataclass_in_a_field_is_refused_by_either_encoder(text: str) -> None:
    with pytest.raises(TypeError, match="cannot hash _Terms"):
        chain.chain_digest(
            GENESIS, "X", account_uuid("a"), 0, MOMENT, {"terms": _Terms(1), "note": text}
        )
