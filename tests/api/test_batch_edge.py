"""A transfer body becomes the command a Python caller would build from the same values
(empty metadata taken as it is, not sorted into a new dict): field for field, checked or
refused alike, whatever the body."""

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.api.schemas import TransferCreate
from app.application.commands import RecordTransfer
from app.domain.errors import LedgerError
from app.domain.values import canonical_metadata

ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789:-_", min_size=1, max_size=20)
metadata = st.dictionaries(
    st.text(alphabet="abcdefghij", min_size=1, max_size=5), st.text(max_size=5), max_size=4
)
grants = st.none() | st.fixed_dictionaries(
    {"expires_at": st.just("2030-01-01T00:00:00Z"), "priority": st.integers(0, 9)}
)


def by_constructor(body: TransferCreate) -> RecordTransfer:
    return RecordTransfer(
        id=body.id,
        debit_account_id=body.debit_account_id,
        credit_account_id=body.credit_account_id,
        amount=body.amount,
        pending=body.pending,
        timeout_seconds=body.timeout_seconds,
        metadata=canonical_metadata(body.metadata),
        grant=None if body.grant is None else body.grant.terms(),
    )


def fields_and_types(command: RecordTransfer) -> dict[str, tuple[Any, type]]:
    return {name: (value, type(value)) for name, value in vars(command).items()}


@given(
    transfer_id=ids,
    debit=ids,
    credit=ids,
    amount=st.integers(1, 10**12),
    pending=st.booleans(),
    data=metadata,
    grant=grants,
)
def test_a_bodys_command_is_the_constructors_field_for_field(
    transfer_id: str,
    debit: str,
    credit: str,
    amount: int,
    pending: bool,
    data: dict[str, str],
    grant: dict[str, Any] | None,
) -> None:
    body = TransferCreate.model_validate(
        {
            "id": transfer_id,
            "debit_account_id": debit,
            "credit_account_id": credit,
            "amount": amount,
            "pending": pending,
            "metadata": data,
            "grant": grant,
        }
    )
    lean, plain = body.unchecked_command(), by_constructor(body)
    assert lean == plain
    assert fields_and_types(lean) == fields_and_types(plain)
    assert list(vars(lean)) == list(vars(plain))
    assert not lean.is_checked()
    assert checked(lean) == checked(plain)


def checked(command: RecordTransfer) -> tuple[Any, ...]:
    """What the rules across fields make of it: its checked fields, or the refusal."""
    try:
        command.checked_across_fields()
    except LedgerError as error:
        return ("refused", type(error), str(error))
    assert command.is_checked()
    return ("checked", fields_and_types(command))
