"""The audit of credit lots (SPEC invariant 7), folded from the log on its own.

Deliberately independent of app/domain/lots.py (the write path's planner): it keeps
plain numbers per lot from what the events recorded and checks, after every event:

- ``lots_not_balance``: an account's lots (its general lot included) sum to its balance;
- ``allocation_mismatch``: a movement's allocations sum to its amount;
- ``allocation_after_expiry``: nothing was spent or reserved from a lot at or after its
  expiry (only the ledger's own expiry and breakage transfers take from an expired lot).
  Exact, without tolerance: a command's events are stamped before its checks read the
  clock (``Ledger._run_command``), so a spend the write path allowed (its clock before the
  expiry) is stamped before the expiry too.

and at the end, ``expired_not_broken``: every lot whose expiry is older than
``BREAKAGE_GRACE_SECONDS`` has had its free remainder moved to breakage.

Memory: the live lots of each account (bounded by ``LIVE_LOTS_MAX``) and their terms.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final
from uuid import UUID

from app.domain.account import Account
from app.domain.values import is_breakage_transfer_id

# The expiry worker runs within seconds; a lot expired longer ago than this with credit
# still in it means the expiry never ran.
BREAKAGE_GRACE_SECONDS: Final = 300.0


@dataclass
class _Lot:
    remaining: int
    reserved: int
    expires_at: datetime | None


@dataclass
class _Account:
    account_id: str
    balance: int = 0
    general: int = 0
    lots: dict[str, _Lot] = field(default_factory=dict)
    # Terms of every grant seen, for lots that come back after leaving (reversals).
    expiries: dict[str, datetime | None] = field(default_factory=dict)

    def lots_total(self) -> int:
        return self.general + sum(lot.remaining for lot in self.lots.values())


Report = Callable[[str, str, str, int], None]


class LotAudit:
    def __init__(self, report: Report) -> None:
        self.report = report
        self.accounts: dict[UUID, _Account] = {}

    def apply(self, position: int, event: Any) -> None:
        if isinstance(event, Account.Opened):
            self.accounts[event.originator_id] = _Account(event.account_id)
            return
        if not isinstance(event, Account.BalanceChanged):
            return
        account = self.accounts.get(event.originator_id)
        if account is None:
            return  # a stream without its opening: the main audit reports it
        self._fold(account, position, event)
        if account.lots_total() != account.balance:
            self.report(
                "lots_not_balance",
                account.account_id,
                f"lots sum to {account.lots_total()}, balance is {account.balance} "
                f"after {event.transfer_id}",
                position,
            )

    def check_breakage(self, now: datetime) -> None:
        due = now - timedelta(seconds=BREAKAGE_GRACE_SECONDS)
        for account in self.accounts.values():
            for grant_id, lot in account.lots.items():
                free = lot.remaining - lot.reserved
                if lot.expires_at is not None and lot.expires_at <= due and free > 0:
                    self.report(
                        "expired_not_broken",
                        account.account_id,
                        f"grant {grant_id} expired at {lot.expires_at.isoformat()} with "
                        f"{free} still in it (never moved to breakage)",
                        -1,
                    )

    # Folding ------------------------------------------------------------------------------

    def _fold(self, account: _Account, position: int, event: Any) -> None:
        if isinstance(event, Account.Credited):
            account.balance += event.amount
            self._credit(account, event)
        elif isinstance(event, Account.Debited):
            account.balance -= event.amount
            moves = self._moves(account, position, event, event.allocations, event.amount)
            for grant_id, amount in moves:
                self._change(account, grant_id, -amount, 0)
            self._check_expiry(account, position, event, moves)
        elif isinstance(event, Account.DebitReserved):
            moves = self._moves(account, position, event, event.allocations, event.amount)
            for grant_id, amount in moves:
                self._change(account, grant_id, 0, amount)
            self._check_expiry(account, position, event, moves)
        elif isinstance(event, Account.DebitHoldSettled):
            account.balance -= event.posted_amount
            consumed = self._moves(account, position, event, event.consumed, event.posted_amount)
            released = self._moves(
                account,
                position,
                event,
                event.released,
                event.reserved_amount - event.posted_amount,
            )
            for grant_id, amount in consumed:
                self._change(account, grant_id, -amount, -amount)
            for grant_id, amount in released:
                self._change(account, grant_id, 0, -amount)
        elif isinstance(event, Account.CreditHoldSettled):
            account.balance += event.posted_amount
            account.general += event.posted_amount

    def _credit(self, account: _Account, event: Account.Credited) -> None:
        if event.grant is not None:
            filled = int(event.grant["filled"])
            account.general += filled
            expires_at = event.grant["expires_at"]
            account.expiries[event.transfer_id] = expires_at
            if event.amount - filled:
                account.lots[event.transfer_id] = _Lot(event.amount - filled, 0, expires_at)
            return
        if event.returned is None:
            account.general += event.amount
            return
        for revived in event.revived or []:
            account.expiries[revived["grant_id"]] = revived["expires_at"]
        for record in event.returned:
            grant_id, amount = record["grant_id"], int(record["amount"])
            if grant_id is None:
                account.general += amount
            elif grant_id in account.lots:
                account.lots[grant_id].remaining += amount
            else:
                account.lots[grant_id] = _Lot(amount, 0, account.expiries.get(grant_id))

    def _moves(
        self,
        account: _Account,
        position: int,
        event: Any,
        records: list[dict[str, Any]] | None,
        amount: int,
    ) -> list[tuple[str | None, int]]:
        if records is None:  # version 1: all from the general lot
            return [(None, amount)] if amount else []
        moves = [(r["grant_id"], int(r["amount"])) for r in records]
        if sum(part for _, part in moves) != amount:
            self.report(
                "allocation_mismatch",
                account.account_id,
                f"{event.transfer_id}: allocations sum to "
                f"{sum(part for _, part in moves)}, the movement is {amount}",
                position,
            )
        return moves

    def _change(
        self, account: _Account, grant_id: str | None, remaining: int, reserved: int
    ) -> None:
        if grant_id is None:
            account.general += remaining
            return
        lot = account.lots.get(grant_id)
        if lot is None:
            lot = account.lots[grant_id] = _Lot(0, 0, account.expiries.get(grant_id))
        lot.remaining += remaining
        lot.reserved += reserved
        if lot.remaining == 0 and lot.reserved == 0:
            del account.lots[grant_id]

    def _check_expiry(
        self,
        account: _Account,
        position: int,
        event: Any,
        moves: list[tuple[str | None, int]],
    ) -> None:
        if is_breakage_transfer_id(event.transfer_id):
            return
        for grant_id, amount in moves:
            if grant_id is None:
                continue
            expires_at = account.expiries.get(grant_id)
            if expires_at is not None and event.timestamp >= expires_at:
                self.report(
                    "allocation_after_expiry",
                    account.account_id,
                    f"{event.transfer_id} took {amount} from grant {grant_id} at "
                    f"{event.timestamp.isoformat()}, after it expired at {expires_at.isoformat()}",
                    position,
                )
