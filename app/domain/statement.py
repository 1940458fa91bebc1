"""What a statement line says happened, in words a support person reads.

One rule for every reader (views, explain): a posted debit or credit is ``debit`` or
``credit``; a reservation is ``hold_placed``; a hold that ends posts some amount
(``hold_captured``) or none, because it was voided (``hold_released``) or ran out of
time (``hold_expired``: the transfer's fate says which).
"""

from typing import Final, Literal

from app.domain.account import Account
from app.domain.postings import BalanceDelta
from app.domain.transfer import TransferStatus

StatementAction = Literal[
    "debit", "credit", "hold_placed", "hold_captured", "hold_released", "hold_expired"
]

_POSTED: Final[dict[str, StatementAction]] = {
    Account.Debited.__name__: "debit",
    Account.Credited.__name__: "credit",
}
_RESERVED: Final = {Account.DebitReserved.__name__, Account.CreditReserved.__name__}
_SETTLED: Final = {Account.DebitHoldSettled.__name__, Account.CreditHoldSettled.__name__}


def statement_action(
    event_type: str, delta: BalanceDelta, transfer_status: TransferStatus | str | None
) -> StatementAction:
    """``event_type``: the class name of an ``Account.BalanceChanged`` event."""
    if event_type in _POSTED:
        return _POSTED[event_type]
    if event_type in _RESERVED:
        return "hold_placed"
    assert event_type in _SETTLED, f"not a balance change: {event_type}"
    if delta.debits_posted or delta.credits_posted:
        return "hold_captured"
    return "hold_expired" if transfer_status == "expired" else "hold_released"
