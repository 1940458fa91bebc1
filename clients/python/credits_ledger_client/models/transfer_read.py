from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.transfer_read_status import TransferReadStatus
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.allocation_read import AllocationRead
    from ..models.grant_read import GrantRead
    from ..models.transfer_read_metadata import TransferReadMetadata


T = TypeVar("T", bound="TransferRead")


@_attrs_define
class TransferRead:
    """
    Attributes:
        amount (int):
        amount_posted (int):
        credit_account_id (str):
        debit_account_id (str):
        expires_at (datetime.datetime | None):
        id (str):
        metadata (TransferReadMetadata):
        pending (bool):
        position (int):
        recorded_at (datetime.datetime):
        reversal_of (None | str):
        reversed_by (None | str):
        status (TransferReadStatus):
        timeout_seconds (int | None):
        unit (str):
        allocations (list[AllocationRead] | Unset): The debit account's lots this transfer took from
        grant (GrantRead | None | Unset):
    """

    amount: int
    amount_posted: int
    credit_account_id: str
    debit_account_id: str
    expires_at: datetime.datetime | None
    id: str
    metadata: TransferReadMetadata
    pending: bool
    position: int
    recorded_at: datetime.datetime
    reversal_of: None | str
    reversed_by: None | str
    status: TransferReadStatus
    timeout_seconds: int | None
    unit: str
    allocations: list[AllocationRead] | Unset = UNSET
    grant: GrantRead | None | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.grant_read import GrantRead

        amount = self.amount

        amount_posted = self.amount_posted

        credit_account_id = self.credit_account_id

        debit_account_id = self.debit_account_id

        expires_at: None | str
        if isinstance(self.expires_at, datetime.datetime):
            expires_at = self.expires_at.isoformat()
        else:
            expires_at = self.expires_at

        id = self.id

        metadata = self.metadata.to_dict()

        pending = self.pending

        position = self.position

        recorded_at = self.recorded_at.isoformat()

        reversal_of: None | str
        reversal_of = self.reversal_of

        reversed_by: None | str
        reversed_by = self.reversed_by

        status = self.status.value

        timeout_seconds: int | None
        timeout_seconds = self.timeout_seconds

        unit = self.unit

        allocations: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.allocations, Unset):
            allocations = []
            for allocations_item_data in self.allocations:
                allocations_item = allocations_item_data.to_dict()
                allocations.append(allocations_item)

        grant: dict[str, Any] | None | Unset
        if isinstance(self.grant, Unset):
            grant = UNSET
        elif isinstance(self.grant, GrantRead):
            grant = self.grant.to_dict()
        else:
            grant = self.grant

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "amount": amount,
                "amount_posted": amount_posted,
                "credit_account_id": credit_account_id,
                "debit_account_id": debit_account_id,
                "expires_at": expires_at,
                "id": id,
                "metadata": metadata,
                "pending": pending,
                "position": position,
                "recorded_at": recorded_at,
                "reversal_of": reversal_of,
                "reversed_by": reversed_by,
                "status": status,
                "timeout_seconds": timeout_seconds,
                "unit": unit,
            }
        )
        if allocations is not UNSET:
            field_dict["allocations"] = allocations
        if grant is not UNSET:
            field_dict["grant"] = grant

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.allocation_read import AllocationRead
        from ..models.grant_read import GrantRead
        from ..models.transfer_read_metadata import TransferReadMetadata

        d = dict(src_dict)
        amount = d.pop("amount")

        amount_posted = d.pop("amount_posted")

        credit_account_id = d.pop("credit_account_id")

        debit_account_id = d.pop("debit_account_id")

        def _parse_expires_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                expires_at_type_0 = datetime.datetime.fromisoformat(data)

                return expires_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        expires_at = _parse_expires_at(d.pop("expires_at"))

        id = d.pop("id")

        metadata = TransferReadMetadata.from_dict(d.pop("metadata"))

        pending = d.pop("pending")

        position = d.pop("position")

        recorded_at = datetime.datetime.fromisoformat(d.pop("recorded_at"))

        def _parse_reversal_of(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        reversal_of = _parse_reversal_of(d.pop("reversal_of"))

        def _parse_reversed_by(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        reversed_by = _parse_reversed_by(d.pop("reversed_by"))

        status = TransferReadStatus(d.pop("status"))

        def _parse_timeout_seconds(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        timeout_seconds = _parse_timeout_seconds(d.pop("timeout_seconds"))

        unit = d.pop("unit")

        _allocations = d.pop("allocations", UNSET)
        allocations: list[AllocationRead] | Unset = UNSET
        if _allocations is not UNSET:
            allocations = []
            for allocations_item_data in _allocations:
                allocations_item = AllocationRead.from_dict(allocations_item_data)

                allocations.append(allocations_item)

        def _parse_grant(data: object) -> GrantRead | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                grant_type_0 = GrantRead.from_dict(data)

                return grant_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(GrantRead | None | Unset, data)

        grant = _parse_grant(d.pop("grant", UNSET))

        transfer_read = cls(
            amount=amount,
            amount_posted=amount_posted,
            credit_account_id=credit_account_id,
            debit_account_id=debit_account_id,
            expires_at=expires_at,
            id=id,
            metadata=metadata,
            pending=pending,
            position=position,
            recorded_at=recorded_at,
            reversal_of=reversal_of,
            reversed_by=reversed_by,
            status=status,
            timeout_seconds=timeout_seconds,
            unit=unit,
            allocations=allocations,
            grant=grant,
        )

        transfer_read.additional_properties = d
        return transfer_read

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
