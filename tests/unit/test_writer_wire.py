"""The wire form between the API workers of ``serve --workers N`` and their writer process
(app/writer/wire.py, decision 0035): every write command the ledger has, and every answer
it gives (outcomes and refusals), crosses it as what it was. A ledger whose commands go
through the wire form and back before its committer, and whose answers do too, answers
exactly as the same ledger without it."""

import itertools
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.application.commands import (
    GrantTerms,
    OpenAccount,
    PostPendingTransfer,
    RecordTransfer,
)
from app.application.committer import Committer, raised_or_given
from app.application.ledger import WRITE_BUILDERS, Ledger, Write
from app.application.views import AccountOutcome, BatchOutcome, DueGrant, TransferOutcome
from app.domain.errors import (
    BatchRejectedError,
    InsufficientFundsError,
    LedgerError,
)
from app.persistence.stores import event_store_env
from app.writer.wire import Frames, WireError, WriterFaultError, frame, portable

START: Final = datetime.now(tz=UTC)  # events are stamped by the wall clock
EXAMPLES: Final = 200


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def across(value: Any) -> Any:
    """``value`` sent as a message and read back."""
    (message,) = Frames().feed(frame([value]))
    return message[0]


def same(before: Any, after: Any) -> bool:
    """Equal values; errors of the same class with the same code, detail and context."""
    if isinstance(before, BaseException):
        return (
            type(after) is type(before)
            and isinstance(before, LedgerError)
            and isinstance(after, LedgerError)
            and (before.code, before.kind, before.detail, before.context)
            == (after.code, after.kind, after.detail, after.context)
            and same(getattr(before, "cause", None), getattr(after, "cause", None))
        )
    if isinstance(before, BatchOutcome):
        return isinstance(after, BatchOutcome) and all(
            same(one, other) for one, other in zip(before.results, after.results, strict=True)
        )
    if isinstance(before, list):
        return all(same(one, other) for one, other in zip(before, after, strict=True))
    return bool(before == after)


class OverTheWire:
    """The ledger's command queue, with every order and answer sent through the wire
    form: the writer builds each write from its order as the writer process does."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.committer: Committer = ledger.committer
        self.names: set[str] = set()
        self.answers: list[tuple[Any, Any]] = []

    def submit(self, command: Write[Any], units: int = 1) -> Any:
        return raised_or_given(self.submit_all([(command, units)]))

    def submit_all(self, commands: Sequence[tuple[Write[Any], int]]) -> list[Any]:
        orders = across([write.order for write, _ in commands])
        for (write, _), order in zip(commands, orders, strict=True):
            assert order == write.order
            self.names.add(order[0])
        rebuilt = [self.ledger.write_for(order) for order in orders]
        answers = self.committer.submit_all([(write, write.units) for write in rebuilt])
        sent = [portable(answer) for answer in answers]
        received = across(sent)
        for before, after in zip(sent, received, strict=True):
            assert same(before, after), (before, after)
            self.answers.append((before, after))
        return list(received)

    async def submit_async(self, command: Write[Any], units: int = 1) -> Any:
        return self.submit(command, units)

    async def submit_all_async(self, commands: Sequence[tuple[Write[Any], int]]) -> list[Any]:
        return self.submit_all(commands)

    def close(self) -> None:
        self.committer.close()


@pytest.fixture
def wired() -> Iterator[tuple[Ledger, OverTheWire, Clock]]:
    clock = Clock()
    ledger = Ledger(event_store_env("memory://"), clock=clock)
    wire = OverTheWire(ledger)
    ledger.use_writer(wire)
    yield ledger, wire, clock
    ledger.close()


def refused(call: Any) -> LedgerError:
    with pytest.raises(LedgerError) as raised:
        call()
    return raised.value


def test_every_write_command_and_every_kind_of_answer_crosses_the_wire_as_it_was(
    wired: tuple[Ledger, OverTheWire, Clock],
) -> None:
    ledger, wire, clock = wired
    opened = ledger.open_account(OpenAccount("bank", "EUR", allow_negative=True))
    assert isinstance(opened, AccountOutcome)
    assert opened.created
    for name in ("alice", "bob", "carol"):
        ledger.open_account(OpenAccount(name, "EUR", metadata={"owner": name}))
    assert not ledger.open_account(OpenAccount("bob", "EUR", metadata={"owner": "bob"})).created
    ledger.update_account("carol", {"owner": None, "tier": "gold"})
    ledger.close_account("carol")
    grant = ledger.record_transfer(
        RecordTransfer(
            "grant-1",
            "bank",
            "alice",
            100,
            metadata={"why": "promo"},
            grant=GrantTerms(expires_at=START + timedelta(days=1), priority=7),
        )
    )
    assert isinstance(grant, TransferOutcome)
    assert grant.transfer.grant is not None
    ledger.record_transfer(RecordTransfer("fund", "bank", "bob", 500))
    hold = ledger.record_transfer(RecordTransfer("hold-1", "bob", "alice", 50, pending=True))
    assert hold.transfer.status == "pending"
    ledger.post_pending("hold-1", 20)
    ledger.record_transfer(RecordTransfer("hold-2", "bob", "alice", 5, pending=True))
    ledger.void_pending("hold-2")
    ledger.record_transfer(
        RecordTransfer("hold-3", "bob", "alice", 5, pending=True, timeout_seconds=60)
    )
    atomic = ledger.record_batch(
        [RecordTransfer(f"a{n}", "bob", "alice", 1) for n in range(3)], atomic=True
    )
    assert len(atomic.results) == 3
    items = ledger.record_batch(
        [RecordTransfer("i1", "bob", "alice", 1), RecordTransfer("i2", "alice", "bob", 10**9)],
        atomic=False,
    )
    assert isinstance(items.results[1], InsufficientFundsError)
    rejected = refused(
        lambda: ledger.record_batch(
            [RecordTransfer("r1", "bob", "alice", 1), RecordTransfer("r2", "alice", "bob", 10**9)],
            atomic=True,
        )
    )
    assert isinstance(rejected, BatchRejectedError)
    assert rejected.index == 1
    assert refused(
        lambda: ledger.record_transfer(RecordTransfer("x", "nobody", "bob", 1))
    ).code == ("account_not_found")
    assert refused(
        lambda: ledger.record_transfer(RecordTransfer("fund", "bank", "bob", 7))
    ).code == ("idempotency_conflict")
    assert refused(lambda: ledger.post_pending("fund")).code == "transfer_not_pending"
    ledger.reverse_transfer("fund", "fund-back", {"why": "refund"}, amount=3)
    assert refused(lambda: ledger.expire_grant("grant-1")).code == "grant_not_yet_expired"
    clock.now = START + timedelta(days=2)
    assert ledger.expire_pending("hold-3").transfer.status == "expired"
    expired = ledger.expire_grants([DueGrant("grant-1", "alice")])
    assert isinstance(expired[0], TransferOutcome)
    assert ledger.expire_grant("grant-1") is not None  # the expiry already written, answered
    assert wire.names == WRITE_BUILDERS  # every kind of write went through the wire
    kinds = {type(after) for _, after in wire.answers}
    assert {AccountOutcome, TransferOutcome, BatchOutcome, list}.issubset(kinds)
    # The grant, the posted part of a hold, the atomic batch, one item; the grant expired.
    assert ledger.get_account("alice").balance == 100 + 20 + 3 + 1 - 100


GRANTS: Final = st.none() | st.builds(
    GrantTerms,
    expires_at=st.none() | st.just(START + timedelta(days=3)),
    effective_at=st.none() | st.just(START),
    priority=st.integers(-5, 200),
)
TEXTS: Final = st.text(min_size=1, max_size=20)
TRANSFERS: Final = st.builds(
    RecordTransfer,
    id=TEXTS,
    debit_account_id=TEXTS,
    credit_account_id=TEXTS,
    amount=st.integers(),
    pending=st.booleans(),
    timeout_seconds=st.none() | st.integers(0, 10**6),
    metadata=st.dictionaries(TEXTS, TEXTS, max_size=4),
    grant=GRANTS,
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(TRANSFERS, st.booleans())
def test_a_transfer_command_crosses_as_it_was_marked_checked_or_not(
    command: RecordTransfer, check: bool
) -> None:
    if check:
        try:
            command = command.checked()
        except LedgerError:
            return  # a command the edge refuses never travels
    after = across(command)
    assert after == command
    assert after.is_checked() == command.is_checked()
    assert (after.grant is not None and after.grant.is_checked()) == (
        command.grant is not None and command.grant.is_checked()
    )
    # Its mappings stay read-only once marked, as the edge left them.
    assert type(after.metadata) is type(command.metadata)


def ledger_errors() -> list[type[LedgerError]]:
    found: list[type[LedgerError]] = []
    pending: list[type[LedgerError]] = [LedgerError]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("error_class", ledger_errors(), ids=lambda cls: cls.__name__)
def test_every_domain_error_crosses_with_its_code_detail_and_context(
    error_class: type[LedgerError],
) -> None:
    if error_class is BatchRejectedError:
        error: LedgerError = BatchRejectedError(4, InsufficientFundsError("short", account_id="a"))
    else:
        error = error_class("what happened", account_id="a", field="amount")
    assert same(error, across(error))


def test_an_error_that_is_not_the_ledgers_crosses_as_a_writer_fault() -> None:
    sent = portable(KeyError("a bug"))
    assert isinstance(sent, WriterFaultError)
    after = across(sent)
    assert isinstance(after, WriterFaultError)
    assert "KeyError('a bug')" in str(after)
    assert portable(PostPendingTransfer("t")) == PostPendingTransfer("t")


def _text(value: str) -> bytes:
    """Pickle's SHORT_BINUNICODE of ``value``."""
    encoded = value.encode()
    return b"\x8c" + bytes([len(encoded)]) + encoded


def _global(module: str, name: str) -> bytes:
    """Pickle opcodes that put ``module``'s ``name`` on the stack (STACK_GLOBAL)."""
    return _text(module) + _text(name) + b"\x93"


def _call_frame(function: bytes, arguments: bytes) -> bytes:
    """A frame whose list holds ``function`` called with the tuple ``arguments``, as a
    hostile peer would write it by hand (protocol 4: a dotted name is resolved through
    the named module's globals)."""
    body = b"\x80\x04]" + function + arguments + b"Ra."
    return len(body).to_bytes(4, "big") + body


@pytest.mark.parametrize(
    ("function", "arguments"),
    [
        pytest.param(_global("builtins", "print"), b")", id="a builtin"),
        pytest.param(_global("app.cli", "os.getpid"), b")", id="a dotted name in app"),
        pytest.param(_global("app.application.commands", "os.getpid"), b")", id="dotted"),
        pytest.param(_global("app.cli", "main"), b")", id="an app function"),
        pytest.param(
            _global("app.application.ledger", "Ledger"), b"}\x85", id="an app class outside"
        ),
        pytest.param(_global("uuid", "UUID"), _text("zz") + b"\x85", id="an allowed type refusing"),
        pytest.param(b"\x82\x01", b")", id="an unregistered extension code"),
        pytest.param(
            _global("app.application.commands", "_rebuilt"),
            _global("app.writer.wire", "WriterFaultError") + b"}\x89\x87",
            id="the command rebuilder given a non-command",
        ),
    ],
)
def test_a_frame_naming_a_callable_outside_the_wire_form_is_refused(
    function: bytes, arguments: bytes
) -> None:
    with pytest.raises(WireError):
        Frames().feed(_call_frame(function, arguments))


def test_the_hand_made_frames_of_the_refusal_test_are_read_when_they_name_a_value() -> None:
    """The frames above are well formed: the same opcodes naming an allowed class load."""
    message = Frames().feed(
        _call_frame(
            _global("app.application.commands", "PostPendingTransfer"), _text("t") + b"\x85"
        )
    )
    assert message == [[PostPendingTransfer("t")]]


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=30))
def test_messages_split_anywhere_in_the_byte_stream_are_read_whole_and_in_order(
    cuts: list[int],
) -> None:
    messages = [[(n, 1.5, [("close_account", f"account-{n}")])] for n in range(5)]
    stream = b"".join(frame(message) for message in messages)
    frames = Frames()
    read: list[Any] = []
    start = 0
    for cut in itertools.cycle(cuts):
        if start >= len(stream):
            break
        read.extend(frames.feed(stream[start : start + cut]))
        start += cut
    assert read == messages
