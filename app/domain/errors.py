"""Domain errors: each has a stable machine-readable ``code`` that clients can branch on.

Codes are part of the public contract (API problem documents, CLI messages):
they may be added, never renamed.
"""

from typing import Any, ClassVar


class LedgerError(Exception):
    """Base of every rejection the ledger makes. Nothing is written when one is raised."""

    code: ClassVar[str] = "ledger_error"
    # The HTTP layer maps these; the domain only says what kind of rejection it is.
    kind: ClassVar[str] = "unprocessable"

    def __init__(self, detail: str, **context: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.context = context


class ValidationError(LedgerError):
    code = "validation_error"
    kind = "invalid"


class AmountOutOfRangeError(ValidationError):
    code = "amount_out_of_range"


class SameAccountError(ValidationError):
    code = "same_account"


class TimeRangeError(ValidationError):
    """A range whose end is not after its start (history since/until, a grant's
    effective_at/expires_at): each time alone is valid, together they are not."""

    code = "invalid_time_range"


class TooManyIntervalsError(ValidationError):
    """A balance history would have more points than one answer carries."""

    code = "too_many_intervals"


class BatchTooLargeError(ValidationError):
    code = "batch_too_large"
    kind = "too_large"


class AccountNotFoundError(LedgerError):
    code = "account_not_found"
    kind = "not_found"


class TransferNotFoundError(LedgerError):
    code = "transfer_not_found"
    kind = "not_found"


class IdempotencyConflictError(LedgerError):
    """The id was used before with a different body."""

    code = "idempotency_conflict"
    kind = "conflict"


class ConcurrencyConflictError(LedgerError):
    """Retries were exhausted under contention; the command may be sent again safely."""

    code = "concurrency_conflict"
    kind = "conflict"


class UnitMismatchError(LedgerError):
    code = "unit_mismatch"


class AccountClosedError(LedgerError):
    code = "account_closed"


class AccountHasPendingTransfersError(LedgerError):
    code = "account_has_pending_transfers"


class InsufficientFundsError(LedgerError):
    code = "insufficient_funds"


class OverdraftLimitExceededError(LedgerError):
    code = "overdraft_limit_exceeded"


class BalanceOverflowError(LedgerError):
    code = "balance_overflow"


class TransferNotPendingError(LedgerError):
    code = "transfer_not_pending"


class TransferAlreadyPostedError(LedgerError):
    code = "transfer_already_posted"


class TransferAlreadyVoidedError(LedgerError):
    code = "transfer_already_voided"


class TransferExpiredError(LedgerError):
    code = "transfer_expired"


class TransferNotYetExpiredError(LedgerError):
    code = "transfer_not_yet_expired"


class PostAmountExceedsPendingError(LedgerError):
    code = "post_amount_exceeds_pending"


class TransferNotReversibleError(LedgerError):
    code = "transfer_not_reversible"


class TransferAlreadyReversedError(LedgerError):
    code = "transfer_already_reversed"


class StoreUnavailableError(LedgerError):
    """The store could not be reached, or did not answer within its bound: nothing was
    written. Sending the same command again later is safe."""

    code = "store_unavailable"
    kind = "unavailable"


class OutcomeUnknownError(LedgerError):
    """The store took the write but its answer was lost (a deadline passed, the
    connection broke): it may or may not have been recorded. Unlike every other
    LedgerError this one may have written; resending the same id is safe, because ids
    are idempotency keys."""

    code = "outcome_unknown"
    kind = "unavailable"


class StorageFullError(LedgerError):
    """The store has no space left: nothing was written."""

    code = "storage_full"
    kind = "storage_full"


class BatchRejectedError(LedgerError):
    """An atomic batch failed as a whole because one of its items was rejected."""

    def __init__(self, index: int, cause: LedgerError) -> None:
        super().__init__(
            f"batch item {index} rejected ({cause.code}): {cause.detail}",
            index=index,
            item_code=cause.code,
        )
        self.index = index
        self.cause = cause
        self.code = cause.code  # type: ignore[misc]  # the batch fails with its item's code
        self.kind = cause.kind  # type: ignore[misc]

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as what it is made of (an exception pickles its message alone)."""
        return (type(self), (self.index, self.cause))


def error_kinds() -> dict[str, str]:
    """Every stable code and the kind of rejection it is."""
    kinds: dict[str, str] = {}
    pending: list[type[LedgerError]] = [LedgerError]
    while pending:
        cls = pending.pop()
        kinds[cls.code] = cls.kind
        pending.extend(cls.__subclasses__())
    del kinds[LedgerError.code]
    return kinds


def all_error_codes() -> set[str]:
    """Every stable code, for documentation and the contract tests."""
    return set(error_kinds())


class GrantConsumedError(LedgerError):
    """A grant's reversal found nothing left in its lot."""

    code = "grant_consumed"


class GrantExpiredError(LedgerError):
    """A grant's reversal came after the lot expired (its remainder belongs to breakage)."""

    code = "grant_expired"


class GrantReservedError(LedgerError):
    """What is left of the grant is held by pending transfers."""

    code = "grant_reserved"


class GrantRemainingExceededError(LedgerError):
    """A partial reversal of a grant asked for more than is left in its lot."""

    code = "grant_remaining_exceeded"


class LiveLotLimitExceededError(LedgerError):
    """The account holds the most live grant lots it may (``lots.LIVE_LOTS_MAX``)."""

    code = "live_lot_limit_exceeded"


class GrantNotYetExpiredError(LedgerError):
    code = "grant_not_yet_expired"


# The write path under load (the committer's answers). They say nothing about the
# command itself, so they are not rejections: the client may send it again (503 with
# Retry-After). A write whose outcome is unknown answers OutcomeUnknownError (above).


class OverloadedError(LedgerError):
    """The write queue is full: refused at once, nothing queued, nothing written."""

    code = "overloaded"
    kind = "unavailable"


class WriteTimeoutError(LedgerError):
    """The deadline passed before the command was written, and it never will be (still
    queued, or waiting to run again after a conflict): nothing was written."""

    code = "write_timeout"
    kind = "unavailable"


class PositionOutOfRangeError(ValidationError):
    """A read asked for a log position the log has not reached."""

    code = "position_out_of_range"


class PositionNotReachedError(LedgerError):
    """The views did not reach the asked position within the read's bounded wait."""

    code = "position_not_reached"
    kind = "conflict"


class AsOfInFutureError(ValidationError):
    code = "as_of_in_future"


class ConflictingParametersError(ValidationError):
    """Parameters that exclude each other were given together (as_of and at_position)."""

    code = "conflicting_parameters"
