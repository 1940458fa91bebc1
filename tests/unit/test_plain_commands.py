"""A plain transfer's command (no hold, grant or metadata), as the HTTP edge builds it in
one step (``RecordTransfer.plain_checked``), is the very command the general way builds:
the same instance state, the same mark, the same refusals in the same order."""

from typing import Final

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.api.schemas import TransferCreate
from app.domain import limits
from app.domain.errors import LedgerError

EXAMPLES: Final = 300
IDS: Final = st.one_of(
    st.sampled_from(["a", "b", "expiry:x", "breakage:y", "x" * limits.ID_LENGTH_MAX]),
    st.from_regex(limits.ID_PATTERN, fullmatch=True),
)
PLAIN_BODIES: Final = st.fixed_dictionaries(
    {
        "id": IDS,
        "debit_account_id": IDS,
        "credit_account_id": IDS,
        "amount": st.integers(limits.AMOUNT_MIN, limits.AMOUNT_MAX),
    },
    optional={"pending": st.just(False), "metadata": st.just({})},
)


def verdict(body: TransferCreate, *, general: bool) -> object:
    """The command's whole state, or the refusal (class, code, message, field)."""
    try:
        command = body.unchecked_command().checked_across_fields() if general else body.command()
    except LedgerError as error:
        return type(error), error.code, str(error), getattr(error, "field", None)
    state = dict(vars(command))
    state["metadata type"] = type(command.metadata)
    return state


@settings(max_examples=EXAMPLES, deadline=None)
@given(PLAIN_BODIES)
@example({"id": "breakage:y", "debit_account_id": "a", "credit_account_id": "a", "amount": 1})
@example({"id": "t", "debit_account_id": "a", "credit_account_id": "a", "amount": 1})
@example({"id": "t", "debit_account_id": "a", "credit_account_id": "b", "amount": 1})
def test_a_plain_body_builds_the_same_command_in_one_step_as_the_general_way(
    raw: dict[str, object],
) -> None:
    body = TransferCreate.model_validate(raw, strict=True)
    one_step = verdict(body, general=False)
    assert one_step == verdict(body, general=True)
    if isinstance(one_step, dict):
        assert one_step["_rules_passed"] is True  # the ledger trusts it: checked once


def test_a_body_with_a_hold_a_grant_or_metadata_is_built_the_general_way() -> None:
    extras: list[dict[str, object]] = [{"pending": True}, {"metadata": {"k": "v"}}, {"grant": {}}]
    for extra in extras:
        body = TransferCreate.model_validate(
            {"id": "t", "debit_account_id": "a", "credit_account_id": "b", "amount": 1, **extra},
            strict=True,
        )
        command = body.command()
        assert command == body.unchecked_command().checked_across_fields()
        assert command.is_checked()
        assert (command.pending, bool(command.metadata), command.grant is not None) == (
            "pending" in extra,
            "metadata" in extra,
            "grant" in extra,
        )
