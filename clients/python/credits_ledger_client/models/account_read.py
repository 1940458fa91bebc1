from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.account_read_status import AccountReadStatus
from ..models.account_type import AccountType

if TYPE_CHECKING:
    from ..models.account_read_metadata import AccountReadMetadata


T = TypeVar("T", bound="AccountRead")


@_attrs_define
class AccountRead:
    """
    Attributes:
        account_type (AccountType):
        allow_negative (bool):
        available (int):
        balance (int):
        credits_pending (int):
        credits_posted (int):
        debits_pending (int):
        debits_posted (int):
        id (str):
        metadata (AccountReadMetadata):
        overdraft_limit (int):
        position (int): The log position this answer reflects
        status (AccountReadStatus):
        unit (str):
    """

    account_type: AccountType
    allow_negative: bool
    available: int
    balance: int
    credits_pending: int
    credits_posted: int
    debits_pending: int
    debits_posted: int
    id: str
    metadata: AccountReadMetadata
    overdraft_limit: int
    position: int
    status: AccountReadStatus
    unit: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        account_type = self.account_type.value

        allow_negative = self.allow_negative

        available = self.available

        balance = self.balance

        credits_pending = self.credits_pending

        credits_posted = self.credits_posted

        debits_pending = self.debits_pending

        debits_posted = self.debits_posted

        id = self.id

        metadata = self.metadata.to_dict()

        overdraft_limit = self.overdraft_limit

        position = self.position

        status = self.status.value

        unit = self.unit

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "account_type": account_type,
                "allow_negative": allow_negative,
                "available": available,
                "balance": balance,
                "credits_pending": credits_pending,
                "credits_posted": credits_posted,
                "debits_pending": debits_pending,
                "debits_posted": debits_posted,
                "id": id,
                "metadata": metadata,
                "overdraft_limit": overdraft_limit,
                "position": position,
                "status": status,
                "unit": unit,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.account_read_metadata import AccountReadMetadata

        d = dict(src_dict)
        account_type = AccountType(d.pop("account_type"))

        allow_negative = d.pop("allow_negative")

        available = d.pop("available")

        balance = d.pop("balance")

        credits_pending = d.pop("credits_pending")

        credits_posted = d.pop("credits_posted")

        debits_pending = d.pop("debits_pending")

        debits_posted = d.pop("debits_posted")

        id = d.pop("id")

        metadata = AccountReadMetadata.from_dict(d.pop("metadata"))

        overdraft_limit = d.pop("overdraft_limit")

        position = d.pop("position")

        status = AccountReadStatus(d.pop("status"))

        unit = d.pop("unit")

        account_read = cls(
            account_type=account_type,
            allow_negative=allow_negative,
            available=available,
            balance=balance,
            credits_pending=credits_pending,
            credits_posted=credits_posted,
            debits_pending=debits_pending,
            debits_posted=debits_posted,
            id=id,
            metadata=metadata,
            overdraft_limit=overdraft_limit,
            position=position,
            status=status,
            unit=unit,
        )

        account_read.additional_properties = d
        return account_read

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
