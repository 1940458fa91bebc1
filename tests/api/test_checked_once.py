"""A request's command is checked once, at the HTTP edge: the body model checks each
field while parsing, the domain's rules across fields run once, and the ledger trusts the
command it is handed. The verbs on an existing transfer or account (post, void, reverse,
PATCH) check the path's id once, where the command is built. A command built in Python
(or plain arguments) is still checked by the ledger, once, with the domain's codes; a copy
of an edge-built command is too."""

from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

import pytest

from app.api.schemas import TransferCreate
from app.api.services import Services
from app.application import commands
from app.application.commands import (
    OpenAccount,
    PostPendingTransfer,
    RecordTransfer,
    UpdateAccountMetadata,
)
from app.domain.errors import LedgerError
from tests.api.helpers import Client, assert_problem, ok, open_account, open_issuer, transfer_body

# The domain's checks of single fields (the Python edge's part of the rule set) and its
# rules across fields (run by both edges), as app.application.commands calls them.
FIELD_CHECKS: Final = (
    "check_id",
    "check_unit",
    "check_amount",
    "check_overdraft_limit",
    "check_timeout_seconds",
    "check_metadata",
    "check_metadata_changes",
    "check_grant_terms",
)
ACROSS_FIELDS: Final = (
    "refuse_pending_grant",
    "check_grant_window",
    "refuse_timeout_unless_pending",
    "refuse_ledger_transfer_id",
    "refuse_same_account",
)
GRANT: Final = {"expires_at": "2027-01-01", "effective_at": "2026-01-01", "priority": 3}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    counted: Counter[str] = Counter()

    def counting(name: str, rule: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            counted[name] += 1
            return rule(*args)

        return call

    for name in FIELD_CHECKS + ACROSS_FIELDS:
        monkeypatch.setattr(commands, name, counting(name, getattr(commands, name)))
    return counted


@pytest.fixture
def funded(client: Client) -> Client:
    open_issuer(client)
    open_account(client, "alice")
    open_account(client, "bob")
    ok(
        client.post("/v1/transfers", json=transfer_body("fund", "system:issuance", "alice", 100)),
        201,
    )
    return client


def across_fields_once_each(grant: bool) -> Counter[str]:
    return Counter({name: 1 for name in ACROSS_FIELDS if grant or name != "check_grant_window"})


def test_a_recorded_transfer_runs_the_rules_across_fields_once_and_no_field_check_again(
    funded: Client, calls: Counter[str]
) -> None:
    body = transfer_body("t1", "alice", "bob", 5, metadata={"z": "1", "a": "2"})
    recorded = ok(funded.post("/v1/transfers", json=body), 201)
    assert calls == across_fields_once_each(grant=False)
    assert list(recorded["metadata"]) == ["a", "z"], "metadata recorded sorted, as before"


def test_a_grant_over_http_runs_its_window_rule_once_too(
    funded: Client, calls: Counter[str]
) -> None:
    body = transfer_body("g1", "system:issuance", "bob", 5, grant=GRANT)
    ok(funded.post("/v1/transfers", json=body), 201)
    assert calls == across_fields_once_each(grant=True)


def test_an_opened_account_runs_no_field_check_again(client: Client, calls: Counter[str]) -> None:
    open_account(client, "carol", metadata={"tier": "gold"})
    assert calls == Counter()


def test_a_batch_runs_the_rules_across_fields_once_per_item(
    funded: Client, calls: Counter[str]
) -> None:
    items = [transfer_body(f"b{i}", "alice", "bob", 1) for i in range(3)]
    ok(funded.post("/v1/transfers/batch", json={"atomic": True, "transfers": items}))
    assert calls == Counter(dict.fromkeys(across_fields_once_each(grant=False), 3))


def test_a_body_refused_by_a_rule_across_fields_is_answered_with_the_domain_code_without_the_ledger(
    funded: Client, calls: Counter[str], services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted: list[object] = []
    monkeypatch.setattr(services.ledger, "_transfer_write", submitted.append)
    response = funded.post("/v1/transfers", json=transfer_body("s", "alice", "alice", 1))
    assert_problem(response, 422, "same_account")
    assert calls["refuse_same_account"] == 1
    assert submitted == [], "refused at the edge: the ledger never saw it"


def test_a_python_callers_command_is_checked_once_by_the_ledger_field_by_field(
    services: Services, calls: Counter[str]
) -> None:
    ledger = services.ledger
    ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
    assert calls["check_id"] == 1
    assert calls["check_unit"] == 1
    calls.clear()
    ledger.open_account(OpenAccount("dave", "CREDITS"))
    ledger.record_transfer(RecordTransfer("p1", "bank", "dave", 7, metadata={"k": "v"}))
    field_checks = {name: calls[name] for name in FIELD_CHECKS if calls[name]}
    assert field_checks == {
        "check_id": 1 + 3,  # the account's id; the transfer's three ids
        "check_unit": 1,
        "check_overdraft_limit": 1,
        "check_metadata": 2,
        "check_amount": 1,
    }
    across = Counter({name: calls[name] for name in ACROSS_FIELDS if calls[name]})
    assert across == across_fields_once_each(grant=False)


@pytest.mark.parametrize(
    ("command", "code"),
    [
        (RecordTransfer("x", "bank", "bank", 1), "same_account"),
        (RecordTransfer("x", "bank", "erin", 0), "amount_out_of_range"),
        (RecordTransfer("x", "bank", "erin", 1, timeout_seconds=60), "validation_error"),
        (RecordTransfer("breakage:x", "bank", "erin", 1), "validation_error"),
        (RecordTransfer("x", "bank", "erin", True), "validation_error"),
    ],
)
def test_an_invalid_command_built_in_python_is_refused_with_the_domain_code(
    services: Services, command: RecordTransfer, code: str
) -> None:
    services.ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
    services.ledger.open_account(OpenAccount("erin", "CREDITS"))
    with pytest.raises(LedgerError) as refused:
        services.ledger.record_transfer(command)
    assert refused.value.code == code


def test_a_copy_of_an_edge_built_command_is_not_trusted(services: Services) -> None:
    services.ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
    edge_built = TransferCreate.model_validate(transfer_body("c", "bank", "erin", 1)).command()
    assert edge_built.is_checked()
    changed = replace(edge_built, credit_account_id="bank")
    assert not changed.is_checked()
    with pytest.raises(LedgerError) as refused:
        services.ledger.record_transfer(changed)
    assert refused.value.code == "same_account"


# The verbs on an existing transfer or account --------------------------------------


@pytest.fixture
def holding(funded: Client) -> Client:
    for hold_id in ("h1", "h2"):
        body = transfer_body(hold_id, "alice", "bob", 10, pending=True, timeout_seconds=60)
        ok(funded.post("/v1/transfers", json=body), 201)
    return funded


def test_a_post_over_http_checks_its_path_id_once_and_its_amount_never_again(
    holding: Client, calls: Counter[str]
) -> None:
    posted = ok(holding.post("/v1/transfers/h1/post", json={"amount": 4}))
    assert posted["status"] == "posted"
    assert calls == Counter({"check_id": 1})
    calls.clear()
    ok(holding.post("/v1/transfers/h2/post"))  # no body: the whole hold
    assert calls == Counter({"check_id": 1})


def test_a_void_over_http_checks_its_path_id_once(holding: Client, calls: Counter[str]) -> None:
    voided = ok(holding.post("/v1/transfers/h1/void", json={}))
    assert voided["status"] == "voided"
    assert calls == Counter({"check_id": 1})


def test_a_reversal_over_http_checks_its_path_id_and_the_ledgers_prefixes_once(
    funded: Client, calls: Counter[str]
) -> None:
    body = {"id": "r1", "metadata": {"why": "refund"}, "amount": 3}
    reversal = ok(funded.post("/v1/transfers/fund/reverse", json=body), 201)
    assert reversal["reversal_of"] == "fund"
    assert calls == Counter({"check_id": 1, "refuse_ledger_transfer_id": 1})


def test_a_metadata_patch_over_http_checks_its_path_id_once_and_no_change_again(
    funded: Client, calls: Counter[str]
) -> None:
    patched = ok(funded.patch("/v1/accounts/alice", json={"metadata": {"tier": "b", "x": None}}))
    assert patched["metadata"] == {"tier": "b"}
    assert calls == Counter({"check_id": 1})


def test_a_bad_path_id_is_refused_at_the_edge_with_the_domains_code(
    holding: Client, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted: list[object] = []
    monkeypatch.setattr(services.ledger, "_submit_async", submitted.append)
    bad = "x" * 200
    assert_problem(holding.post(f"/v1/transfers/{bad}/post"), 422, "validation_error")
    assert_problem(holding.post(f"/v1/transfers/{bad}/void"), 422, "validation_error")
    reverse = holding.post(f"/v1/transfers/{bad}/reverse", json={"id": "r"})
    assert_problem(reverse, 422, "validation_error")
    patch = holding.patch(f"/v1/accounts/{bad}", json={"metadata": {"k": "v"}})
    assert_problem(patch, 422, "validation_error")
    ledgers_own = holding.post("/v1/transfers/fund/reverse", json={"id": "breakage:r"})
    assert_problem(ledgers_own, 422, "validation_error")
    assert submitted == [], "refused at the edge: the ledger never saw them"


def test_plain_arguments_from_python_are_checked_once_by_the_ledger(
    services: Services, calls: Counter[str]
) -> None:
    ledger = services.ledger
    ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("dave", "CREDITS"))
    ledger.record_transfer(RecordTransfer("p1", "bank", "dave", 7))
    for hold_id in ("h1", "h2"):
        ledger.record_transfer(RecordTransfer(hold_id, "dave", "bank", 1, pending=True))
    calls.clear()
    ledger.post_pending("h1", 1)
    assert calls == Counter({"check_id": 1, "check_amount": 1})
    calls.clear()
    ledger.void_pending("h2")
    assert calls == Counter({"check_id": 1})
    calls.clear()
    ledger.reverse_transfer("p1", "r1", {"why": "refund"}, amount=2)
    assert calls == Counter(
        {"check_id": 2, "refuse_ledger_transfer_id": 1, "check_metadata": 1, "check_amount": 1}
    )
    calls.clear()
    ledger.update_account("dave", {"tier": "b"})
    assert calls == Counter({"check_id": 1, "check_metadata_changes": 1})


@pytest.mark.parametrize(
    ("verb", "code"),
    [
        (lambda ledger: ledger.post_pending("h 1"), "validation_error"),
        (lambda ledger: ledger.post_pending("h1", 0), "amount_out_of_range"),
        (lambda ledger: ledger.post_pending("h1", True), "validation_error"),
        (lambda ledger: ledger.void_pending(""), "validation_error"),
        (lambda ledger: ledger.reverse_transfer("p1", "breakage:r"), "validation_error"),
        (lambda ledger: ledger.reverse_transfer("p1", "r", {"k": 1}), "validation_error"),
        (lambda ledger: ledger.reverse_transfer("p1", "r", amount=-1), "amount_out_of_range"),
        (lambda ledger: ledger.update_account("dave", {"": "x"}), "validation_error"),
        (lambda ledger: ledger.update_account("dave", {"k": 5}), "validation_error"),
        (lambda ledger: ledger.update_account("dave", ["k"]), "validation_error"),
        (
            lambda ledger: ledger.update_account("dave", {f"k{n}": "v" for n in range(33)}),
            "validation_error",
        ),
        (lambda ledger: ledger.update_account("nobody", {"k": "v"}), "account_not_found"),
    ],
)
def test_bad_plain_arguments_from_python_are_refused_with_the_domain_code_and_change_nothing(
    services: Services, verb: Callable[[Any], object], code: str
) -> None:
    ledger = services.ledger
    ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("dave", "CREDITS"))
    ledger.record_transfer(RecordTransfer("p1", "bank", "dave", 7))
    ledger.record_transfer(RecordTransfer("h1", "dave", "bank", 1, pending=True))
    head = ledger.recorder.max_notification_id()
    with pytest.raises(LedgerError) as refused:
        verb(ledger)
    assert refused.value.code == code
    assert ledger.recorder.max_notification_id() == head


def test_a_copy_of_an_edge_built_verb_is_checked_again() -> None:
    """The ledger calls ``checked()`` on every command it is handed: a marked one passes
    as it is, a changed copy is judged field by field."""
    edge_built = PostPendingTransfer("h1", 1).checked_beyond_body()
    assert edge_built.checked() is edge_built
    with pytest.raises(LedgerError) as refused:
        replace(edge_built, amount=0).checked()
    assert refused.value.code == "amount_out_of_range"
    update = UpdateAccountMetadata("dave", {"k": "v"}).checked_beyond_body()
    assert update.checked() is update
    with pytest.raises(LedgerError) as refused:
        replace(update, changes={"": "v"}).checked()
    assert refused.value.code == "validation_error"


def test_metadata_shaped_like_a_stored_tag_is_refused_on_every_route_and_nothing_is_written(
    funded: Client,
) -> None:
    """Metadata ``{"_type_": …, "_data_": …}`` is what a tagged value looks like in a
    stored event: recorded, it read back as a time, and every reader of the log (the
    projection workers included) failed on it. The body's own validation refuses it."""
    tagged = {"_type_": "datetime_iso", "_data_": "2026-01-01T00:00:00+00:00"}
    before = ok(funded.get("/v1/accounts/alice"))
    refused = [
        funded.post("/v1/transfers", json=transfer_body("t9", "alice", "bob", 5, metadata=tagged)),
        funded.post(
            "/v1/transfers/batch",
            json={
                "atomic": True,
                "transfers": [transfer_body("t10", "alice", "bob", 5, metadata=tagged)],
            },
        ),
        funded.post("/v1/accounts", json={"id": "carol", "unit": "CREDITS", "metadata": tagged}),
        funded.patch("/v1/accounts/alice", json={"metadata": tagged}),
    ]
    for response in refused:
        assert "_type_" in assert_problem(response, 422, "validation_error")["detail"]
    after = ok(funded.get("/v1/accounts/alice"))
    assert (after["metadata"], after["position"]) == (before["metadata"], before["position"])
    for missing in ("/v1/transfers/t9", "/v1/transfers/t10", "/v1/accounts/carol"):
        assert funded.get(missing).status_code == 404
