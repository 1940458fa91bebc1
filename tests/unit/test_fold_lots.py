"""The views' shortcut for the lots of a balance change (``_lots_of``: a debit or credit
of the general lot alone answered at once) against the general rule
(``_lots_in_general``), for any balance change."""

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.domain.account import Account
from projections.projection import _lots_in_general, _lots_of

grant_ids = st.none() | st.text(min_size=1, max_size=6)
records = st.none() | st.lists(
    st.fixed_dictionaries({"grant_id": grant_ids, "amount": st.integers(0, 10**6)}), max_size=3
)
grants = st.none() | st.fixed_dictionaries({"filled": st.integers(0, 10)})
kinds = st.sampled_from(
    [
        Account.Debited,
        Account.Credited,
        Account.DebitReserved,
        Account.CreditReserved,
        Account.DebitHoldSettled,
        Account.CreditHoldSettled,
    ]
)


@st.composite
def balance_changes(draw: st.DrawFn) -> Account.BalanceChanged:
    """A balance change as the views receive it: decoded, built without its constructor,
    with every field any kind's lots are read from."""
    kind: type[Account.BalanceChanged] = draw(kinds)
    event = object.__new__(kind)
    state: dict[str, Any] = {
        "transfer_id": draw(st.text(min_size=1, max_size=6)),
        "amount": draw(st.integers(1, 10**6)),
        "allocations": draw(records),
        "grant": draw(grants),
        "returned": draw(records),
        "consumed": draw(records),
        "released": draw(records),
    }
    object.__setattr__(event, "__dict__", state)
    return event


@given(event=balance_changes())
def test_a_balance_changes_lots_are_the_general_rules(event: Account.BalanceChanged) -> None:
    assert _lots_of(event) == _lots_in_general(event)


def test_a_debit_of_a_grants_lot_moves_it_and_shows_it_on_its_line() -> None:
    """A worked example beside the property: the shortcut does not swallow a grant."""
    event = object.__new__(Account.Debited)
    object.__setattr__(
        event,
        "__dict__",
        {"transfer_id": "t", "amount": 5, "allocations": [{"grant_id": "g", "amount": 5}]},
    )
    assert _lots_of(event) == (True, [{"grant_id": "g", "amount": -5}])
