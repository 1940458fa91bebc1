from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.entry_read_action import EntryReadAction
from ..models.entry_read_kind import EntryReadKind
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.allocation_read import AllocationRead
    from ..models.entry_read_metadata import EntryReadMetadata


T = TypeVar("T", bound="EntryRead")


@_attrs_define
class EntryRead:
    """
    Attributes:
        action (EntryReadAction): What happened, in words a support person reads
        amount (int):
        available (int):
        available_change (int): How this line moved the available amount
        balance (int):
        balance_change (int): How this line moved the balance
        counterparty_id (None | str):
        credits_pending (int):
        credits_posted (int):
        debits_pending (int):
        debits_posted (int):
        kind (EntryReadKind): The log's event type, e.g. Debited
        metadata (EntryReadMetadata):
        position (int):
        recorded_at (datetime.datetime):
        transfer_id (str):
        allocations (list[AllocationRead] | Unset): The credit lots this line moved, signed like amount
    """

    action: EntryReadAction
    amount: int
    available: int
    available_change: int
    balance: int
    balance_change: int
    counterparty_id: None | str
    credits_pending: int
    credits_posted: int
    debits_pending: int
    debits_posted: int
    kind: EntryReadKind
    metadata: EntryReadMetadata
    position: int
    recorded_at: datetime.datetime
    transfer_id: str
    allocations: list[AllocationRead] | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        action = self.action.value

        amount = self.amount

        available = self.available

        available_change = self.available_change

        balance = self.balance

        balance_change = self.balance_change

        counterparty_id: None | str
        counterparty_id = self.counterparty_id

        credits_pending = self.credits_pending

        credits_posted = self.credits_posted

        debits_pending = self.debits_pending

        debits_posted = self.debits_posted

        kind = self.kind.value

        metadata = self.metadata.to_dict()

        position = self.position

        recorded_at = self.recorded_at.isoformat()

        transfer_id = self.transfer_id

        allocations: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.allocations, Unset):
            allocations = []
            for allocations_item_data in self.allocations:
                allocations_item = allocations_item_data.to_dict()
                allocations.append(allocations_item)

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "action": action,
                "amount": amount,
                "available": available,
                "available_change": available_change,
                "balance": balance,
                "balance_change": balance_change,
                "counterparty_id": counterparty_id,
                "credits_pending": credits_pending,
                "credits_posted": credits_posted,
                "debits_pending": debits_pending,
                "debits_posted": debits_posted,
                "kind": kind,
                "metadata": metadata,
                "position": position,
                "recorded_at": recorded_at,
                "transfer_id": transfer_id,
            }
        )
        if allocations is not UNSET:
            field_dict["allocations"] = allocations

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.allocation_read import AllocationRead
        from ..models.entry_read_metadata import EntryReadMetadata

        d = dict(src_dict)
        action = EntryReadAction(d.pop("action"))

        amount = d.pop("amount")

        available = d.pop("available")

        available_change = d.pop("available_change")

        balance = d.pop("balance")

        balance_change = d.pop("balance_change")

        def _parse_counterparty_id(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        counterparty_id = _parse_counterparty_id(d.pop("counterparty_id"))

        credits_pending = d.pop("credits_pending")

        credits_posted = d.pop("credits_posted")

        debits_pending = d.pop("debits_pending")

        debits_posted = d.pop("debits_posted")

        kind = EntryReadKind(d.pop("kind"))

        metadata = EntryReadMetadata.from_dict(d.pop("metadata"))

        position = d.pop("position")

        recorded_at = datetime.datetime.fromisoformat(d.pop("recorded_at"))

        transfer_id = d.pop("transfer_id")

        _allocations = d.pop("allocations", UNSET)
        allocations: list[AllocationRead] | Unset = UNSET
        if _allocations is not UNSET:
            allocations = []
            for allocations_item_data in _allocations:
                allocations_item = AllocationRead.from_dict(allocations_item_data)

                allocations.append(allocations_item)

        entry_read = cls(
            action=action,
            amount=amount,
            available=available,
            available_change=available_change,
            balance=balance,
            balance_change=balance_change,
            counterparty_id=counterparty_id,
            credits_pending=credits_pending,
            credits_posted=credits_posted,
            debits_pending=debits_pending,
            debits_posted=debits_posted,
            kind=kind,
            metadata=metadata,
            position=position,
            recorded_at=recorded_at,
            transfer_id=transfer_id,
            allocations=allocations,
        )

        entry_read.additional_properties = d
        return entry_read

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
