"""`ledger audit` and `ledger explain` on credit lots (SPEC invariant 7).

The audit is quiet on a healthy ledger full of grants, and names each planted violation:
lots that do not sum to the balance, an allocation after a lot's expiry, allocations that
do not sum to their movement, an expired lot whose remainder never reached breakage.
Explain shows on each line which lots it moved."""

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.application.commands import GrantTerms, OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit.audit import Auditor, AuditReport
from app.audit.explain import explain
from app.audit.log import Instant
from app.audit.lots import BREAKAGE_GRACE_SECONDS
from app.audit.reporting import allocations_text, write_statement
from app.domain.account import Account
from app.domain.values import account_uuid
from tests.conftest import store_env

ISSUANCE = "issuance"
ALICE = "user:alice"
SHOP = "shop"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(store_env(f"sqlite:///{tmp_path / 'events.sqlite'}"))
    ledger.open_account(OpenAccount(ISSUANCE, "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount(ALICE, "CREDITS", overdraft_limit=10))
    ledger.open_account(OpenAccount(SHOP, "CREDITS"))
    yield ledger
    ledger.close()


def grant(ledger: Ledger, grant_id: str, amount: int, **terms: Any) -> None:
    ledger.record_transfer(
        RecordTransfer(grant_id, ISSUANCE, ALICE, amount, grant=GrantTerms(**terms))
    )


def audit(ledger: Ledger) -> AuditReport:
    return Auditor(ledger, Instant()).run()


def kinds(report: AuditReport) -> set[str]:
    return {violation.kind for violation in report.violations}


def forge(ledger: Ledger, event_class: type[Any], **fields: Any) -> None:
    """Append one event to Alice's stream behind the ledger's back (chain kept intact)."""
    account: Any = ledger.repository.get(account_uuid(ALICE))
    account.trigger_event(event_class, **fields)
    ledger.save(account)


def busy_ledger(ledger: Ledger) -> None:
    now = datetime.now(tz=UTC)
    grant(ledger, "promo", 10, category="promotional", expires_at=now + timedelta(hours=1))
    grant(ledger, "pack", 20)
    grant(ledger, "future", 5, effective_at=now + timedelta(hours=1))
    ledger.record_transfer(RecordTransfer("s1", ALICE, SHOP, 12))
    ledger.record_transfer(RecordTransfer("h1", ALICE, SHOP, 6, pending=True))
    ledger.post_pending("h1", 4)
    ledger.reverse_transfer("s1", "r1", amount=5)
    ledger.reverse_transfer("pack", "r2", amount=3)
    ledger.record_transfer(RecordTransfer("s2", ALICE, SHOP, 24))  # into the overdraft
    grant(ledger, "refill", 30)  # fills the overdraft first


def test_a_healthy_ledger_with_grants_passes_the_audit(ledger: Ledger) -> None:
    busy_ledger(ledger)
    report = audit(ledger)
    assert report.ok, report.violations


def test_lots_that_do_not_sum_to_the_balance_are_reported(ledger: Ledger) -> None:
    grant(ledger, "pack", 20)
    forge(
        ledger,
        Account.Credited,
        transfer_id="made-up",
        amount=5,
        returned=[{"grant_id": "pack", "amount": 3}],
        revived=[],
    )
    report = audit(ledger)
    assert "lots_not_balance" in kinds(report)
    assert "allocation_mismatch" not in kinds(report)


def test_an_allocation_from_an_expired_lot_is_reported(ledger: Ledger) -> None:
    grant(ledger, "old", 10, expires_at=datetime.now(tz=UTC) - timedelta(hours=1))
    forge(
        ledger,
        Account.Debited,
        transfer_id="sneaky",
        amount=4,
        allocations=[{"grant_id": "old", "amount": 4}],
    )
    report = audit(ledger)
    [after] = [v for v in report.violations if v.kind == "allocation_after_expiry"]
    assert after.subject == ALICE
    assert "sneaky" in after.detail


def test_the_expiry_check_is_exact_a_spend_at_or_one_second_after_expiry_is_reported(
    ledger: Ledger,
) -> None:
    expires_at = datetime.now(tz=UTC) + timedelta(hours=1)
    grant(ledger, "promo", 30, expires_at=expires_at)
    moments = {
        "just-before": expires_at - timedelta(microseconds=1),
        "at-expiry": expires_at,
        "second-after": expires_at + timedelta(seconds=1),
    }
    for transfer_id, moment in moments.items():
        forge(
            ledger,
            Account.Debited,
            transfer_id=transfer_id,
            amount=1,
            allocations=[{"grant_id": "promo", "amount": 1}],
            timestamp=moment,
        )
    report = audit(ledger)
    after = [v for v in report.violations if v.kind == "allocation_after_expiry"]
    assert [v.detail.split()[0] for v in after] == ["at-expiry", "second-after"]


def test_spends_allowed_up_to_the_expiry_instant_pass_the_exact_audit(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    expires_at = datetime.now(tz=UTC) + timedelta(minutes=1)
    grant(ledger, "promo", 10, expires_at=expires_at)
    # The ledger's clock says one microsecond before the expiry while the wall clock
    # stamps the event: the stamp is read first, so it is earlier still.
    monkeypatch.setattr(ledger, "clock", lambda: expires_at - timedelta(microseconds=1))
    last = ledger.record_transfer(RecordTransfer("last", ALICE, SHOP, 4))
    assert last.transfer.allocations[0].grant_id == "promo"
    assert last.transfer.recorded_at < expires_at
    monkeypatch.setattr(ledger, "clock", lambda: expires_at)
    late = ledger.record_transfer(RecordTransfer("late", ALICE, SHOP, 2))
    assert [a.grant_id for a in late.transfer.allocations] == [None]
    assert audit(ledger).ok, audit(ledger).violations


def test_allocations_that_do_not_sum_to_their_movement_are_reported(ledger: Ledger) -> None:
    grant(ledger, "pack", 10)
    forge(
        ledger,
        Account.Debited,
        transfer_id="odd",
        amount=4,
        allocations=[{"grant_id": "pack", "amount": 3}],
    )
    assert {"allocation_mismatch", "lots_not_balance"} <= kinds(audit(ledger))


def test_an_expired_lot_whose_remainder_never_reached_breakage_is_reported(
    ledger: Ledger,
) -> None:
    long_ago = datetime.now(tz=UTC) - timedelta(seconds=BREAKAGE_GRACE_SECONDS + 60)
    grant(ledger, "forgotten", 10, expires_at=long_ago)
    report = audit(ledger)
    assert kinds(report) == {"expired_not_broken"}
    ledger.expire_grant("forgotten")
    assert audit(ledger).ok


def test_explain_shows_which_lots_each_line_moved(ledger: Ledger) -> None:
    grant(ledger, "promo", 10, category="promotional")
    grant(ledger, "pack", 10)
    ledger.record_transfer(RecordTransfer("s1", ALICE, SHOP, 12))
    ledger.reverse_transfer("s1", "r1", amount=5)
    lines = {line.transfer_id: line for line in explain(ledger, ALICE, None)}
    assert lines["promo"].allocations == [{"grant_id": "promo", "amount": 10}]
    assert lines["s1"].allocations == [
        {"grant_id": "promo", "amount": -10},
        {"grant_id": "pack", "amount": -2},
    ]
    assert lines["r1"].allocations == [
        {"grant_id": "pack", "amount": 2},
        {"grant_id": "promo", "amount": 3},
    ]
    assert allocations_text(lines["s1"].allocations) == "promo -10, pack -2"
    out = io.StringIO()
    write_statement(explain(ledger, ALICE, None), "json", ALICE, Instant(), out)
    assert '"allocations": [{"amount": -10, "grant_id": "promo"}' in out.getvalue()
    csv_out = io.StringIO()
    write_statement(explain(ledger, ALICE, None), "csv", ALICE, Instant(), csv_out)
    assert '""grant_id"": ""pack"", ""amount"": -2' in csv_out.getvalue()
