"""Model-based test: random command sequences against the Ledger and a tiny reference model.

The reference model below is a few dicts implementing the SPEC's rules directly (floors,
closed accounts, units, idempotency, holds, reversals, batches). A hypothesis state machine
sends the same random commands to both and, after every step, compares:

- success versus the exact error ``code`` (and batch item index) the model predicts, and on
  success the returned account/transfer values and positions;
- that a rejected command (or an idempotent replay) wrote nothing: every account and
  transfer view and the head of the log are unchanged;
- invariants 1-4: per unit the balances sum to 0; each account equals the model and a
  from-scratch fold of its own stream; nothing is below its floor; each transfer id has
  exactly one debit posting and one credit posting in the account streams, whatever was
  replayed.

On SQLite each example also ends by reading everything back through a second, fresh
Ledger on the same file (nothing cached), and batches of 8+ new ids take the ledger's
one-query prefetch path.

Time: the Ledger's injected clock is the real clock plus ``offset`` seconds, while event
timestamps (``recorded_at``) come from the real clock. Offsets are multiples of 1,000 s and
timeouts are 500 s off a multiple of 1,000, so "is this hold due" never depends on how fast
the test runs: a hold is due exactly when ``offset >= timeout_seconds``.
"""

import itertools
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Final, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.application.views import (
    AccountOutcome,
    AccountView,
    BatchOutcome,
    TransferOutcome,
    TransferView,
)
from app.domain.account import Account
from app.domain.errors import (
    AccountNotFoundError,
    BatchRejectedError,
    LedgerError,
    TransferNotFoundError,
)
from app.domain.values import account_uuid
from app.persistence.stores import event_store_env

T = TypeVar("T")

COUNTER_MAX: Final = 2**63 - 1
TIMEOUT_MAX: Final = 366 * 24 * 3600

UNITS: Final = ("CREDITS", "USD")
SYSTEM_ACCOUNTS: Final = {"CREDITS": "sys:credits", "USD": "sys:usd"}
USER_ACCOUNTS: Final = ("acc:a", "acc:b", "acc:c", "acc:d")
ACCOUNT_IDS: Final = (*USER_ACCOUNTS, *SYSTEM_ACCOUNTS.values())
GHOST_ACCOUNT: Final = "acc:ghost"  # never opened
GHOST_TRANSFER: Final = "t-ghost"  # never recorded
# 500 s off a multiple of 1,000 (see the module docstring); the last is the maximum allowed.
VALID_TIMEOUTS: Final = (1500, 3500, 99_500, TIMEOUT_MAX - 900)
CLOCK_STEP: Final = 1000

settings.register_profile(
    "ledger-model",
    deadline=None,
    max_examples=75,
    stateful_step_count=40,
    suppress_health_check=[HealthCheck.too_slow],
)
MEMORY_SETTINGS: Final = settings.get_profile("ledger-model")
SQLITE_SETTINGS: Final = settings(MEMORY_SETTINGS, max_examples=15)


# The reference model ---------------------------------------------------------------------


class Rejected(Exception):  # noqa: N818  # the model's name for a refusal
    def __init__(self, code: str, index: int | None = None) -> None:
        super().__init__(code if index is None else f"{code} at item {index}")
        self.code = code
        self.index = index


@dataclass
class ModelAccount:
    """Field names match AccountView, so the two compare field by field."""

    id: str
    unit: str
    allow_negative: bool
    overdraft_limit: int
    metadata: dict[str, str]
    status: str = "open"
    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    @property
    def available(self) -> int:
        return self.credits_posted - self.debits_posted - self.debits_pending


@dataclass
class ModelTransfer:
    """Field names match TransferView (minus times), so the two compare field by field."""

    id: str
    debit_account_id: str
    credit_account_id: str
    amount: int
    unit: str
    pending: bool
    timeout_seconds: int | None
    metadata: dict[str, str]
    reversal_of: str | None
    status: str
    amount_posted: int
    reversed_by: str | None = None

    def body(self) -> tuple[object, ...]:
        return (
            self.debit_account_id,
            self.credit_account_id,
            self.amount,
            self.pending,
            self.timeout_seconds,
            self.metadata,
            self.reversal_of,
        )


def body_of(command: RecordTransfer, reversal_of: str | None) -> tuple[object, ...]:
    return (
        command.debit_account_id,
        command.credit_account_id,
        command.amount,
        command.pending,
        command.timeout_seconds,
        dict(sorted(command.metadata.items())),
        reversal_of,
    )


TransferResult = tuple[ModelTransfer, bool]  # (the transfer afterwards, created)


class Model:
    def __init__(self) -> None:
        self.accounts: dict[str, ModelAccount] = {}
        self.transfers: dict[str, ModelTransfer] = {}
        self.offset = 0  # the clock's lead over real time, in seconds

    def copy(self) -> "Model":
        """A copy to try a command on: fresh records, since commands mutate records in
        place (their metadata dicts are never mutated, so those may be shared)."""
        twin = Model()
        twin.accounts = {key: replace(value) for key, value in self.accounts.items()}
        twin.transfers = {key: replace(value) for key, value in self.transfers.items()}
        twin.offset = self.offset
        return twin

    # Accounts

    def open(self, command: OpenAccount) -> tuple[ModelAccount, bool]:
        if command.overdraft_limit < 0:
            raise Rejected("validation_error")
        existing = self.accounts.get(command.id)
        wanted = (command.unit, command.allow_negative, command.overdraft_limit, command.metadata)
        if existing is not None:
            if wanted != (
                existing.unit,
                existing.allow_negative,
                existing.overdraft_limit,
                existing.metadata,
            ):
                raise Rejected("idempotency_conflict")
            return replace(existing), False
        account = ModelAccount(
            command.id,
            command.unit,
            command.allow_negative,
            command.overdraft_limit,
            dict(command.metadata),
        )
        self.accounts[command.id] = account
        return replace(account), True

    def close(self, account_id: str) -> ModelAccount:
        account = self._account(account_id)
        if account.status == "open":
            if account.debits_pending or account.credits_pending:
                raise Rejected("account_has_pending_transfers")
            account.status = "closed"
        return replace(account)

    def _account(self, account_id: str) -> ModelAccount:
        if account_id not in self.accounts:
            raise Rejected("account_not_found")
        return self.accounts[account_id]

    # Transfers

    @staticmethod
    def validate(command: RecordTransfer) -> None:
        """What RecordTransfer.checked() refuses, in its order."""
        if command.timeout_seconds is not None and (
            not command.pending or not 1 <= command.timeout_seconds <= TIMEOUT_MAX
        ):
            raise Rejected("validation_error")
        if not 1 <= command.amount <= COUNTER_MAX:
            raise Rejected("amount_out_of_range")
        if command.debit_account_id == command.credit_account_id:
            raise Rejected("same_account")

    def record(self, command: RecordTransfer) -> TransferResult:
        self.validate(command)
        return self._apply(command, None)

    def _apply(self, command: RecordTransfer, reversal_of: str | None) -> TransferResult:
        existing = self.transfers.get(command.id)
        if existing is not None:
            if existing.body() != body_of(command, reversal_of):
                raise Rejected("idempotency_conflict")
            return replace(existing), False
        debit = self._account(command.debit_account_id)
        credit = self._account(command.credit_account_id)
        if debit.unit != credit.unit:
            raise Rejected("unit_mismatch")
        amount = command.amount
        # Debit side: open, headroom (posted + pending), floor. Then the credit side.
        if debit.status != "open":
            raise Rejected("account_closed")
        if debit.debits_posted + debit.debits_pending + amount > COUNTER_MAX:
            raise Rejected("balance_overflow")
        if not debit.allow_negative and debit.available - amount < -debit.overdraft_limit:
            raise Rejected(
                "overdraft_limit_exceeded" if debit.overdraft_limit else "insufficient_funds"
            )
        if credit.status != "open":
            raise Rejected("account_closed")
        if credit.credits_posted + credit.credits_pending + amount > COUNTER_MAX:
            raise Rejected("balance_overflow")
        if command.pending:
            debit.debits_pending += amount
            credit.credits_pending += amount
        else:
            debit.debits_posted += amount
            credit.credits_posted += amount
        transfer = ModelTransfer(
            id=command.id,
            debit_account_id=command.debit_account_id,
            credit_account_id=command.credit_account_id,
            amount=amount,
            unit=debit.unit,
            pending=command.pending,
            timeout_seconds=command.timeout_seconds,
            metadata=dict(sorted(command.metadata.items())),
            reversal_of=reversal_of,
            status="pending" if command.pending else "posted",
            amount_posted=0 if command.pending else amount,
        )
        self.transfers[command.id] = transfer
        return replace(transfer), True

    def batch(self, commands: list[RecordTransfer], *, atomic: bool) -> list[TransferResult | str]:
        if not commands:
            raise Rejected("validation_error")
        results: list[TransferResult | str] = []
        if atomic:
            # Every item is validated before any is applied; the first refusal wins.
            # (The caller throws this model copy away when we raise.)
            for index, command in enumerate(commands):
                try:
                    self.validate(command)
                except Rejected as rejected:
                    raise Rejected(rejected.code, index) from None
            for index, command in enumerate(commands):
                try:
                    results.append(self._apply(command, None))
                except Rejected as rejected:
                    raise Rejected(rejected.code, index) from None
            return results
        for command in commands:
            try:
                results.append(self.record(command))
            except Rejected as rejected:
                results.append(rejected.code)
        return results

    # Holds

    def _transfer(self, transfer_id: str) -> ModelTransfer:
        if transfer_id not in self.transfers:
            raise Rejected("transfer_not_found")
        return self.transfers[transfer_id]

    def is_due(self, transfer: ModelTransfer) -> bool:
        return (
            transfer.status == "pending"
            and transfer.timeout_seconds is not None
            and self.offset >= transfer.timeout_seconds
        )

    @staticmethod
    def _check_pending(transfer: ModelTransfer) -> None:
        if transfer.status == "pending":
            return
        if not transfer.pending:
            raise Rejected("transfer_not_pending")
        raise Rejected(
            {
                "posted": "transfer_already_posted",
                "voided": "transfer_already_voided",
                "expired": "transfer_expired",
            }[transfer.status]
        )

    def _check_still_pending(self, transfer: ModelTransfer) -> None:
        self._check_pending(transfer)
        if self.is_due(transfer):
            raise Rejected("transfer_expired")

    def _settle(self, transfer: ModelTransfer, posted: int, status: str) -> None:
        debit = self.accounts[transfer.debit_account_id]
        credit = self.accounts[transfer.credit_account_id]
        debit.debits_pending -= transfer.amount
        debit.debits_posted += posted
        credit.credits_pending -= transfer.amount
        credit.credits_posted += posted
        transfer.status = status
        transfer.amount_posted = posted

    def post(self, transfer_id: str, amount: int | None) -> ModelTransfer:
        if amount is not None and not 1 <= amount <= COUNTER_MAX:
            raise Rejected("amount_out_of_range")
        transfer = self._transfer(transfer_id)
        if transfer.pending and transfer.status == "posted":  # a retry of the post
            if amount is not None and amount != transfer.amount_posted:
                raise Rejected("idempotency_conflict")
            return replace(transfer)
        self._check_still_pending(transfer)
        posted = transfer.amount if amount is None else amount
        if posted > transfer.amount:
            raise Rejected("post_amount_exceeds_pending")
        self._settle(transfer, posted, "posted")
        return replace(transfer)

    def void(self, transfer_id: str) -> ModelTransfer:
        transfer = self._transfer(transfer_id)
        if transfer.status == "voided":  # a retry of the void
            return replace(transfer)
        self._check_still_pending(transfer)
        self._settle(transfer, 0, "voided")
        return replace(transfer)

    def expire(self, transfer_id: str) -> ModelTransfer:
        transfer = self._transfer(transfer_id)
        if transfer.status != "expired":  # expiring an expired hold again is a no-op
            self._check_pending(transfer)
            if not self.is_due(transfer):
                raise Rejected("transfer_not_yet_expired")
            self._settle(transfer, 0, "expired")
        return replace(transfer)

    # Reversals

    def reverse(
        self, transfer_id: str, reversal_id: str, metadata: dict[str, str] | None
    ) -> TransferResult:
        original = self._transfer(transfer_id)
        command = RecordTransfer(
            id=reversal_id,
            debit_account_id=original.credit_account_id,
            credit_account_id=original.debit_account_id,
            amount=original.amount_posted,
            metadata=metadata or {},
        )
        if reversal_id in self.transfers:  # a replay (or a clash) of the reversal's id
            return self._apply(command, transfer_id)
        if original.status != "posted":
            raise Rejected("transfer_not_reversible")
        if original.reversed_by is not None:
            raise Rejected("transfer_already_reversed")
        result = self._apply(command, transfer_id)
        original.reversed_by = reversal_id
        return result


# Comparing the ledger with the model -----------------------------------------------------

ACCOUNT_FIELDS: Final = tuple(f.name for f in fields(ModelAccount))
TRANSFER_FIELDS: Final = tuple(f.name for f in fields(ModelTransfer))


def assert_account_matches(view: AccountView, expected: ModelAccount) -> None:
    actual = {name: getattr(view, name) for name in ACCOUNT_FIELDS}
    assert actual == vars(expected), f"ledger {actual} != model {expected}"


def assert_transfer_matches(view: TransferView, expected: ModelTransfer) -> None:
    actual = {name: getattr(view, name) for name in TRANSFER_FIELDS}
    assert actual == vars(expected), f"ledger {actual} != model {expected}"
    if view.pending and view.timeout_seconds is not None:
        assert view.expires_at == view.recorded_at + timedelta(seconds=view.timeout_seconds)
    else:
        assert view.expires_at is None


@dataclass(frozen=True)
class Observation:
    """Everything a command could change, as the ledger reports it."""

    head: int
    accounts: dict[str, AccountView | None]
    transfers: dict[str, TransferView | None]


class Refused(Exception):  # noqa: N818
    """Both sides refused the command identically (already checked)."""


class OffsetClock:
    def __init__(self) -> None:
        self.offset = 0
        self.started = datetime.now(tz=UTC)

    def __call__(self) -> datetime:
        now = datetime.now(tz=UTC)
        # The model's "due" rule holds only while every hold is younger than the margin.
        assert now - self.started < timedelta(seconds=CLOCK_STEP // 2), "example ran too long"
        return now + timedelta(seconds=self.offset)


# Strategies --------------------------------------------------------------------------------

# hypothesis has no weights: repeating a choice in sampled_from makes it more likely.
AMOUNTS: Final = st.sampled_from(["small"] * 8 + ["huge", "invalid"]).flatmap(
    lambda kind: {
        "small": st.integers(1, 40),
        "huge": st.sampled_from([2**62, COUNTER_MAX]),  # balance overflow territory
        "invalid": st.sampled_from([0, -3, COUNTER_MAX + 1]),
    }[kind]
)
TIMEOUTS: Final = st.sampled_from(
    [None, None, *VALID_TIMEOUTS, *VALID_TIMEOUTS, 0, TIMEOUT_MAX + 1]
)
METADATA: Final = st.sampled_from([{}, {}, {"order": "42"}, {"b": "2", "a": "1"}])
ACCOUNT_CHOICES: Final = st.sampled_from([*ACCOUNT_IDS, GHOST_ACCOUNT])
ACCOUNT_OPTIONS: Final = st.tuples(
    st.sampled_from(UNITS),
    st.sampled_from([False, False, False, True]),  # allow_negative
    st.sampled_from([0, 0, 10, 100, -1]),  # overdraft_limit (-1 is invalid)
    METADATA,
)


def draw_body(data: st.DataObject, model: Model) -> RecordTransfer:
    """A transfer with a placeholder id: mostly between open accounts of one unit (so that
    money really moves), sometimes anything at all, including invalid values."""
    kind = data.draw(st.sampled_from(["fund"] * 3 + ["spend"] * 4 + ["anything"]), label="kind")
    if kind == "anything" or not model.accounts:
        debit = data.draw(ACCOUNT_CHOICES, label="debit")
        credit = data.draw(ACCOUNT_CHOICES, label="credit")
    else:
        users = sorted(set(model.accounts) - set(SYSTEM_ACCOUNTS.values()))
        credit = data.draw(st.sampled_from(users or sorted(model.accounts)), label="credit")
        unit = model.accounts[credit].unit
        same_unit = sorted(i for i, a in model.accounts.items() if a.unit == unit and i != credit)
        if kind == "fund" or not same_unit:
            debit = SYSTEM_ACCOUNTS[unit]
        else:
            debit = data.draw(st.sampled_from(same_unit), label="debit")
    pending = data.draw(st.booleans(), label="pending")
    timeout = data.draw(TIMEOUTS, label="timeout") if pending else None
    if not pending and data.draw(st.integers(0, 19), label="misplaced timeout") == 0:
        timeout = VALID_TIMEOUTS[0]  # a timeout on a posted transfer is invalid
    return RecordTransfer(
        id="placeholder",
        debit_account_id=debit,
        credit_account_id=credit,
        amount=data.draw(AMOUNTS, label="amount"),
        pending=pending,
        timeout_seconds=timeout,
        metadata=data.draw(METADATA, label="metadata"),
    )


# The state machine -------------------------------------------------------------------------


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = OffsetClock()
        self.ledger = Ledger(event_store_env(self.store_url()), clock=self.clock)
        self.model = Model()
        self.fresh_ids = itertools.count()
        # Facts only the ledger knows, checked for stability once learned.
        self.record_positions: dict[str, int] = {}
        self.recorded_at: dict[str, datetime] = {}
        self.head_before = self.head_after = 0  # the log's head around the last command
        self.last_observation: Observation | None = None
        self.rejected_ids: list[str] = []  # ids of refused transfers

    def store_url(self) -> str:
        return "memory://"

    def teardown(self) -> None:
        self.ledger.close()

    def new_transfer_id(self) -> str:
        return f"t{next(self.fresh_ids)}"

    # Running one command on both sides

    def observe(self) -> Observation:
        accounts: dict[str, AccountView | None] = {}
        for account_id in (*ACCOUNT_IDS, GHOST_ACCOUNT):
            try:
                accounts[account_id] = self.ledger.get_account(account_id)
            except AccountNotFoundError:
                accounts[account_id] = None
        transfers: dict[str, TransferView | None] = {}
        for transfer_id in [*self.model.transfers, GHOST_TRANSFER]:
            try:
                transfers[transfer_id] = self.ledger.get_transfer(transfer_id)
            except TransferNotFoundError:
                transfers[transfer_id] = None
        head = self.ledger.recorder.max_notification_id() or 0
        # Only commands change the ledger, and each one observes it again afterwards.
        self.last_observation = Observation(head, accounts, transfers)
        return self.last_observation

    def run(self, predict: Callable[[Model], T], act: Callable[[], object]) -> tuple[T, object]:
        """Run a command on a copy of the model and on the ledger; they must agree on
        success or the exact refusal. Returns (model result, ledger result) on success,
        after checking the write/no-write contract; raises ``Refused`` on agreed refusal."""
        before = self.last_observation or self.observe()
        trial = self.model.copy()
        expected: T | Rejected
        try:
            expected = predict(trial)
        except Rejected as rejected:
            expected = rejected
        refusal: LedgerError | None = None
        actual: object = None
        try:
            actual = act()
        except LedgerError as error:
            refusal = error
        if refusal is not None:
            self.check_refusal(refusal, expected, before)
            raise Refused from refusal
        assert not isinstance(expected, Rejected), f"model expected {expected}; got {actual!r}"
        old, self.model = self.model, trial
        changed = (trial.accounts, trial.transfers) != (old.accounts, old.transfers)
        after = self.observe()
        if changed:
            assert after.head > before.head, "a command that changed state wrote nothing"
        else:
            assert after == before, "a no-op command (replay) changed something"
        for account_id, view in after.accounts.items():
            previous = before.accounts[account_id]
            if previous is not None and view is not None:
                touched = trial.accounts[account_id] != old.accounts[account_id]
                assert view.version is not None  # a stream read knows its version
                assert previous.version is not None
                assert (view.version > previous.version) == touched, f"{account_id} version"
                assert view.version >= previous.version
        self.head_before, self.head_after = before.head, after.head
        return expected, actual

    def check_refusal(self, error: LedgerError, expected: object, before: Observation) -> None:
        assert isinstance(expected, Rejected), (
            f"ledger refused ({error.code}: {error.detail}); the model expected {expected!r}"
        )
        assert error.code == expected.code, f"ledger {error.code!r}, model {expected}"
        if expected.index is not None:
            assert isinstance(error, BatchRejectedError)
            assert error.index == expected.index, f"{error.detail}; model {expected}"
        assert self.observe() == before, f"refused command ({error.code}) changed something"

    def check_position(self, position: int, *, wrote: bool) -> None:
        if wrote:
            assert position == self.head_after, (position, self.head_after)
        else:
            assert 0 < position <= self.head_before

    def check_transfer_outcome(
        self, outcome: object, expected: ModelTransfer, created: bool, *, replay: bool
    ) -> None:
        """``replay``: a record/reverse command that found its id already recorded."""
        assert isinstance(outcome, TransferOutcome), outcome
        assert outcome.created == created
        assert_transfer_matches(outcome.transfer, expected)
        self.remember(outcome.transfer)
        if created:
            # A new transfer answers the position of its own record, inside this write
            # (the same position a replay answers later).
            recorded = self.ledger.transfer_position(expected.id)
            assert outcome.position == recorded, (outcome.position, recorded)
            assert self.head_before < recorded <= self.head_after
            self.record_positions[expected.id] = recorded
        elif replay:
            # A replay answers with the position of the original record (within a batch,
            # possibly an earlier item of the same batch).
            assert outcome.position == self.record_positions[expected.id]
        else:
            self.check_position(outcome.position, wrote=self.head_after > self.head_before)

    def remember(self, view: TransferView) -> None:
        assert view.recorded_at.tzinfo is not None
        assert self.recorded_at.setdefault(view.id, view.recorded_at) == view.recorded_at

    def pick_transfer(
        self,
        data: st.DataObject,
        prefer: Callable[[ModelTransfer], bool] | None = None,
        *,
        ghost: bool = True,
    ) -> str:
        """A recorded transfer's id (preferably one ``prefer`` likes), or an unknown one."""
        known = sorted(self.model.transfers)
        preferred = [t for t in known if prefer is not None and prefer(self.model.transfers[t])]
        if preferred and data.draw(st.integers(0, 3), label="prefer") > 0:
            return data.draw(st.sampled_from(preferred), label="transfer")
        candidates = [*known, GHOST_TRANSFER] if ghost else known
        return data.draw(st.sampled_from(candidates), label="transfer")

    # Rules: accounts

    def open(self, command: OpenAccount) -> None:
        try:
            (expected, created), outcome = self.run(
                lambda m: m.open(command), lambda: self.ledger.open_account(command)
            )
        except Refused:
            return
        assert isinstance(outcome, AccountOutcome)
        assert outcome.created == created
        assert_account_matches(outcome.account, expected)
        self.check_position(outcome.position, wrote=created)

    @initialize(data=st.data())
    def open_accounts(self, data: st.DataObject) -> None:
        """The system (issuing) accounts, and most user accounts to start with."""
        for unit, account_id in SYSTEM_ACCOUNTS.items():
            self.open(OpenAccount(account_id, unit, allow_negative=True))
        for account_id in USER_ACCOUNTS:
            if data.draw(st.integers(0, 3), label=f"open {account_id}"):
                unit, allow_negative, overdraft_limit, metadata = data.draw(ACCOUNT_OPTIONS)
                self.open(
                    OpenAccount(account_id, unit, allow_negative, max(0, overdraft_limit), metadata)
                )

    @rule(account_id=st.sampled_from(ACCOUNT_IDS), options=ACCOUNT_OPTIONS, data=st.data())
    def open_account(
        self,
        account_id: str,
        options: tuple[str, bool, int, dict[str, str]],
        data: st.DataObject,
    ) -> None:
        existing = self.model.accounts.get(account_id)
        if existing is not None and data.draw(st.booleans(), label="same body"):
            options = (
                existing.unit,
                existing.allow_negative,
                existing.overdraft_limit,
                existing.metadata,
            )
        self.open(OpenAccount(account_id, *options))

    # Closing ends an account's activity: run it only one time in four.
    @rule(account_id=st.sampled_from([*ACCOUNT_IDS, GHOST_ACCOUNT]), dice=st.integers(0, 3))
    def close_account(self, account_id: str, dice: int) -> None:
        if dice:
            return
        try:
            expected, outcome = self.run(
                lambda m: m.close(account_id), lambda: self.ledger.close_account(account_id)
            )
        except Refused:
            return
        assert isinstance(outcome, AccountOutcome)
        assert not outcome.created
        assert_account_matches(outcome.account, expected)
        self.check_position(outcome.position, wrote=self.head_after > self.head_before)

    # Rules: transfers

    def record(self, command: RecordTransfer) -> None:
        try:
            (expected, created), outcome = self.run(
                lambda m: m.record(command), lambda: self.ledger.record_transfer(command)
            )
        except Refused:
            if command.id not in self.model.transfers:
                self.rejected_ids.append(command.id)
            return
        self.check_transfer_outcome(outcome, expected, created, replay=not created)

    @rule(data=st.data())
    def record_transfer(self, data: st.DataObject) -> None:
        # Now and then an id whose transfer was refused: a refusal records nothing, so the
        # id is still free.
        unused = [i for i in self.rejected_ids if i not in self.model.transfers]
        if unused and data.draw(st.integers(0, 4), label="reuse a refused id") == 0:
            transfer_id = data.draw(st.sampled_from(unused), label="refused id")
        else:
            transfer_id = self.new_transfer_id()
        self.record(replace(draw_body(data, self.model), id=transfer_id))

    @precondition(lambda self: bool(self.model.transfers))
    @rule(data=st.data())
    def replay_same_body(self, data: st.DataObject) -> None:
        transfer = self.model.transfers[self.pick_transfer(data, ghost=False)]
        command = RecordTransfer(
            id=transfer.id,
            debit_account_id=transfer.debit_account_id,
            credit_account_id=transfer.credit_account_id,
            amount=transfer.amount,
            pending=transfer.pending,
            timeout_seconds=transfer.timeout_seconds,
            metadata=dict(reversed(transfer.metadata.items())),  # key order must not matter
        )
        if transfer.reversal_of is not None and data.draw(st.booleans(), label="via reverse"):
            self.reverse(transfer.reversal_of, transfer.id, transfer.metadata or None)
        else:  # for a reversal, a plain record of its id is a different body
            self.record(command)

    @precondition(lambda self: bool(self.model.transfers))
    @rule(data=st.data(), change=st.sampled_from(["amount", "metadata", "swap", "pending"]))
    def replay_different_body(self, data: st.DataObject, change: str) -> None:
        transfer = self.model.transfers[self.pick_transfer(data, ghost=False)]
        command = RecordTransfer(
            id=transfer.id,
            debit_account_id=transfer.debit_account_id,
            credit_account_id=transfer.credit_account_id,
            amount=transfer.amount,
            pending=transfer.pending,
            timeout_seconds=transfer.timeout_seconds,
            metadata=transfer.metadata,
        )
        if change == "amount":
            command = replace(command, amount=command.amount % 40 + 1)
        elif change == "metadata":
            command = replace(command, metadata={**command.metadata, "extra": "x"})
        elif change == "swap":
            command = replace(
                command,
                debit_account_id=command.credit_account_id,
                credit_account_id=command.debit_account_id,
            )
        else:
            timeout = None if command.pending else data.draw(st.sampled_from(VALID_TIMEOUTS))
            command = replace(command, pending=not command.pending, timeout_seconds=timeout)
        self.record(command)

    # Rules: holds and time

    @precondition(lambda self: bool(self.model.transfers))
    @rule(data=st.data(), how=st.sampled_from(["whole", "exact", "partial", "too much", "zero"]))
    def post_pending(self, data: st.DataObject, how: str) -> None:
        transfer_id = self.pick_transfer(data, prefer=lambda t: t.status == "pending")
        held = self.model.transfers[transfer_id].amount if transfer_id != GHOST_TRANSFER else 5
        amount: int | None = {
            "whole": None,
            "exact": held,
            "partial": data.draw(st.integers(1, max(1, min(held, 40))), label="partial"),
            "too much": held + data.draw(st.integers(1, 3), label="excess"),
            "zero": 0,
        }[how]
        self.settle(
            lambda m: m.post(transfer_id, amount),
            lambda: self.ledger.post_pending(transfer_id, amount),
        )

    @precondition(lambda self: bool(self.model.transfers))
    @rule(data=st.data())
    def void_pending(self, data: st.DataObject) -> None:
        transfer_id = self.pick_transfer(data, prefer=lambda t: t.status == "pending")
        self.settle(lambda m: m.void(transfer_id), lambda: self.ledger.void_pending(transfer_id))

    @precondition(lambda self: bool(self.model.transfers))
    @rule(data=st.data())
    def expire_pending(self, data: st.DataObject) -> None:
        # Often a hold whose time has come, but also ones too early, settled or unknown.
        transfer_id = self.pick_transfer(data, prefer=self.model.is_due)
        self.settle(
            lambda m: m.expire(transfer_id), lambda: self.ledger.expire_pending(transfer_id)
        )

    def settle(self, predict: Callable[[Model], ModelTransfer], act: Callable[[], object]) -> None:
        try:
            expected, outcome = self.run(predict, act)
        except Refused:
            return
        self.check_transfer_outcome(outcome, expected, False, replay=False)

    @rule(data=st.data())
    def advance_clock(self, data: st.DataObject) -> None:
        timeouts = sorted(
            t.timeout_seconds
            for t in self.model.transfers.values()
            if t.status == "pending" and t.timeout_seconds is not None
        )
        if bool(timeouts) and data.draw(st.booleans(), label="past a timeout"):
            # Just past one pending hold's timeout (and so past every shorter one).
            target = data.draw(st.sampled_from(timeouts), label="timeout") + CLOCK_STEP // 2
            offset = max(self.model.offset, target)
        else:
            offset = self.model.offset + CLOCK_STEP * data.draw(st.integers(1, 3), label="steps")
        assert offset % CLOCK_STEP == 0
        self.model.offset = self.clock.offset = offset

    # Rules: reversals and batches

    def reverse(self, transfer_id: str, reversal_id: str, metadata: dict[str, str] | None) -> None:
        try:
            (expected, created), outcome = self.run(
                lambda m: m.reverse(transfer_id, reversal_id, metadata),
                lambda: self.ledger.reverse_transfer(transfer_id, reversal_id, metadata),
            )
        except Refused:
            return
        self.check_transfer_outcome(outcome, expected, created, replay=not created)

    @precondition(lambda self: bool(self.model.transfers))
    @rule(
        data=st.data(),
        which_id=st.sampled_from(["fresh", "fresh", "existing", "same"]),
        metadata=st.sampled_from([None, {"reason": "refund"}]),
    )
    def reverse_transfer(
        self, data: st.DataObject, which_id: str, metadata: dict[str, str] | None
    ) -> None:
        transfer_id = self.pick_transfer(data, prefer=lambda t: t.status == "posted")
        if which_id == "fresh" or not self.model.transfers:
            reversal_id = self.new_transfer_id()
        elif which_id == "same":
            reversal_id = transfer_id
        else:
            reversal_id = self.pick_transfer(data, ghost=False)
        self.reverse(transfer_id, reversal_id, metadata)

    # Sizes of 8 and more new ids take the ledger's prefetch path (one existence query).
    @rule(
        data=st.data(),
        atomic=st.booleans(),
        size=st.sampled_from([1, 2, 2, 3, 3, 4, 0, 9, 12]),
    )
    def record_batch(self, data: st.DataObject, atomic: bool, size: int) -> None:
        commands: list[RecordTransfer] = []
        for _ in range(size):
            choices = ["fresh"] * (3 if size < 8 else 12)
            choices += ["same as earlier", "reuse earlier id"] if commands else []
            choices += ["existing"] if self.model.transfers else []
            how = data.draw(st.sampled_from(choices), label="item id")
            if how == "same as earlier":
                commands.append(data.draw(st.sampled_from(commands), label="duplicate"))
                continue
            body = draw_body(data, self.model)
            if how == "fresh":
                item_id = self.new_transfer_id()
            elif how == "reuse earlier id":
                item_id = data.draw(st.sampled_from(commands), label="earlier").id
            else:
                item_id = self.pick_transfer(data, ghost=False)
            commands.append(replace(body, id=item_id))
        try:
            expected, outcome = self.run(
                lambda m: m.batch(commands, atomic=atomic),
                lambda: self.ledger.record_batch(commands, atomic=atomic),
            )
        except Refused:
            return
        assert isinstance(outcome, BatchOutcome)
        assert len(outcome.results) == len(expected)
        for predicted, actual in zip(expected, outcome.results, strict=True):
            if isinstance(predicted, str):
                assert isinstance(actual, LedgerError), f"model {predicted}, ledger {actual}"
                assert actual.code == predicted
            else:
                transfer, created = predicted
                self.check_transfer_outcome(actual, transfer, created, replay=not created)

    # Invariants

    @invariant()
    def ledger_matches_model(self) -> None:
        # The ledger as read right after the last command (nothing has changed it since).
        observed = self.last_observation or self.observe()
        views: dict[str, AccountView] = {}
        for account_id, view in observed.accounts.items():
            expected = self.model.accounts.get(account_id)
            if expected is None:
                assert view is None, f"{account_id} exists in the ledger, not in the model"
                continue
            assert view is not None, f"{account_id} is missing from the ledger"
            assert_account_matches(view, expected)
            # Invariant 2: the cached account equals a from-scratch fold of its stream.
            assert view.version is not None
            assert self.ledger.get_account_at_version(account_id, view.version) == view
            # Invariant 3: nothing below its floor.
            if not view.allow_negative:
                assert view.available >= -view.overdraft_limit, view
            views[account_id] = view
        # Invariant 1: per unit, the balances sum to zero.
        totals: dict[str, int] = defaultdict(int)
        for view in views.values():
            totals[view.unit] += view.balance
        assert all(total == 0 for total in totals.values()), dict(totals)
        for transfer_id, expected_transfer in self.model.transfers.items():
            transfer_view = observed.transfers[transfer_id]
            assert transfer_view is not None, f"transfer {transfer_id} is missing"
            assert_transfer_matches(transfer_view, expected_transfer)
            self.remember(transfer_view)
        assert observed.transfers[GHOST_TRANSFER] is None

    @invariant()
    def each_transfer_moves_money_once(self) -> None:
        """Invariants 2 and 4 from the account streams themselves: every transfer id has one
        debit posting and one credit posting, whose effects match the transfer's state."""
        openings: dict[str, list[str]] = defaultdict(list)
        effects: dict[tuple[str, str], tuple[int, int, int, int]] = defaultdict(
            lambda: (0, 0, 0, 0)
        )
        for account_id in self.model.accounts:
            for stored in self.ledger.repository.event_store.get(account_uuid(account_id)):
                if not isinstance(stored, Account.BalanceChanged):
                    continue
                if isinstance(stored, Account.Debited | Account.DebitReserved):
                    openings[stored.transfer_id].append(f"debit {account_id}")
                if isinstance(stored, Account.Credited | Account.CreditReserved):
                    openings[stored.transfer_id].append(f"credit {account_id}")
                delta = stored.delta()
                dp, cp, dq, cq = effects[stored.transfer_id, account_id]
                effects[stored.transfer_id, account_id] = (
                    dp + delta.debits_posted,
                    cp + delta.credits_posted,
                    dq + delta.debits_pending,
                    cq + delta.credits_pending,
                )
        assert set(openings) == set(self.model.transfers), "postings for unknown transfers"
        expected_effects: dict[tuple[str, str], tuple[int, int, int, int]] = {}
        for transfer in self.model.transfers.values():
            debit, credit = transfer.debit_account_id, transfer.credit_account_id
            assert sorted(openings[transfer.id]) == [f"credit {credit}", f"debit {debit}"]
            held = transfer.amount if transfer.status == "pending" else 0
            expected_effects[transfer.id, debit] = (transfer.amount_posted, 0, held, 0)
            expected_effects[transfer.id, credit] = (0, transfer.amount_posted, 0, held)
        assert dict(effects) == expected_effects


class SQLiteLedgerMachine(LedgerMachine):
    def __init__(self) -> None:
        self.directory = tempfile.TemporaryDirectory(prefix="ledger-model-")
        super().__init__()

    def store_url(self) -> str:
        return f"sqlite:///{self.directory.name}/events.sqlite"

    def teardown(self) -> None:
        try:
            # A second process's view: a fresh Ledger on the same file folds every stream
            # from the log alone and must agree with the model.
            fresh = Ledger(event_store_env(self.store_url()), clock=self.clock)
            try:
                for account_id, account in self.model.accounts.items():
                    assert_account_matches(fresh.get_account(account_id), account)
                for transfer_id, transfer in self.model.transfers.items():
                    assert_transfer_matches(fresh.get_transfer(transfer_id), transfer)
            finally:
                fresh.close()
        finally:
            super().teardown()
            self.directory.cleanup()


def test_ledger_matches_model_in_memory() -> None:
    run_state_machine_as_test(LedgerMachine, settings=MEMORY_SETTINGS)


def test_ledger_matches_model_on_sqlite() -> None:
    run_state_machine_as_test(SQLiteLedgerMachine, settings=SQLITE_SETTINGS)
