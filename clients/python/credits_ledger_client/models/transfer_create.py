from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.grant_create import GrantCreate
    from ..models.transfer_create_metadata import TransferCreateMetadata


T = TypeVar("T", bound="TransferCreate")


@_attrs_define
class TransferCreate:
    """
    Attributes:
        amount (int):
        credit_account_id (str):
        debit_account_id (str):
        id (str):
        grant (GrantCreate | None | Unset):
        metadata (TransferCreateMetadata | Unset):
        pending (bool | Unset):  Default: False.
        timeout_seconds (int | None | Unset):
    """

    amount: int
    credit_account_id: str
    debit_account_id: str
    id: str
    grant: GrantCreate | None | Unset = UNSET
    metadata: TransferCreateMetadata | Unset = UNSET
    pending: bool | Unset = False
    timeout_seconds: int | None | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        from ..models.grant_create import GrantCreate

        amount = self.amount

        credit_account_id = self.credit_account_id

        debit_account_id = self.debit_account_id

        id = self.id

        grant: dict[str, Any] | None | Unset
        if isinstance(self.grant, Unset):
            grant = UNSET
        elif isinstance(self.grant, GrantCreate):
            grant = self.grant.to_dict()
        else:
            grant = self.grant

        metadata: dict[str, Any] | Unset = UNSET
        if not isinstance(self.metadata, Unset):
            metadata = self.metadata.to_dict()

        pending = self.pending

        timeout_seconds: int | None | Unset
        if isinstance(self.timeout_seconds, Unset):
            timeout_seconds = UNSET
        else:
            timeout_seconds = self.timeout_seconds

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "amount": amount,
                "credit_account_id": credit_account_id,
                "debit_account_id": debit_account_id,
                "id": id,
            }
        )
        if grant is not UNSET:
            field_dict["grant"] = grant
        if metadata is not UNSET:
            field_dict["metadata"] = metadata
        if pending is not UNSET:
            field_dict["pending"] = pending
        if timeout_seconds is not UNSET:
            field_dict["timeout_seconds"] = timeout_seconds

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.grant_create import GrantCreate
        from ..models.transfer_create_metadata import TransferCreateMetadata

        d = dict(src_dict)
        amount = d.pop("amount")

        credit_account_id = d.pop("credit_account_id")

        debit_account_id = d.pop("debit_account_id")

        id = d.pop("id")

        def _parse_grant(data: object) -> GrantCreate | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                grant_type_0 = GrantCreate.from_dict(data)

                return grant_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(GrantCreate | None | Unset, data)

        grant = _parse_grant(d.pop("grant", UNSET))

        _metadata = d.pop("metadata", UNSET)
        metadata: TransferCreateMetadata | Unset
        if isinstance(_metadata, Unset):
            metadata = UNSET
        else:
            metadata = TransferCreateMetadata.from_dict(_metadata)

        pending = d.pop("pending", UNSET)

        def _parse_timeout_seconds(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        timeout_seconds = _parse_timeout_seconds(d.pop("timeout_seconds", UNSET))

        transfer_create = cls(
            amount=amount,
            credit_account_id=credit_account_id,
            debit_account_id=debit_account_id,
            id=id,
            grant=grant,
            metadata=metadata,
            pending=pending,
            timeout_seconds=timeout_seconds,
        )

        return transfer_create
