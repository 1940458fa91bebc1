from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="UnitTotalsRead")


@_attrs_define
class UnitTotalsRead:
    """
    Attributes:
        account_count (int):
        balance_sum (int): Sum of every account's balance: always 0
        credits_posted (int):
        debits_posted (int):
        unit (str):
    """

    account_count: int
    balance_sum: int
    credits_posted: int
    debits_posted: int
    unit: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        account_count = self.account_count

        balance_sum = self.balance_sum

        credits_posted = self.credits_posted

        debits_posted = self.debits_posted

        unit = self.unit

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "account_count": account_count,
                "balance_sum": balance_sum,
                "credits_posted": credits_posted,
                "debits_posted": debits_posted,
                "unit": unit,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        account_count = d.pop("account_count")

        balance_sum = d.pop("balance_sum")

        credits_posted = d.pop("credits_posted")

        debits_posted = d.pop("debits_posted")

        unit = d.pop("unit")

        unit_totals_read = cls(
            account_count=account_count,
            balance_sum=balance_sum,
            credits_posted=credits_posted,
            debits_posted=debits_posted,
            unit=unit,
        )

        unit_totals_read.additional_properties = d
        return unit_totals_read

    @property
    def additional_keys(self) -> list[str]:
        return list(self.additional_properties.keys())

    def __getitem__(self, key: str) -> Any:
        return self.additional_properties[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.additional_properties[key] = value

    def __delitem__(self, key: str) -> None:
        del self.additional_properties[key]

    def __contains__(self, key: str) -> bool:
        return key in self.additional_properties
