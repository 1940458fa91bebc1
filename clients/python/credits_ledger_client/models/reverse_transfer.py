from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.reverse_transfer_metadata import ReverseTransferMetadata


T = TypeVar("T", bound="ReverseTransfer")


@_attrs_define
class ReverseTransfer:
    """
    Attributes:
        id (str):
        amount (int | None | Unset): Reverse part of it (a grant: part of what is left)
        metadata (ReverseTransferMetadata | Unset):
    """

    id: str
    amount: int | None | Unset = UNSET
    metadata: ReverseTransferMetadata | Unset = UNSET

    def to_dict(self) -> dict[str, Any]:
        id = self.id

        amount: int | None | Unset
        if isinstance(self.amount, Unset):
            amount = UNSET
        else:
            amount = self.amount

        metadata: dict[str, Any] | Unset = UNSET
        if not isinstance(self.metadata, Unset):
            metadata = self.metadata.to_dict()

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "id": id,
            }
        )
        if amount is not UNSET:
            field_dict["amount"] = amount
        if metadata is not UNSET:
            field_dict["metadata"] = metadata

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.reverse_transfer_metadata import ReverseTransferMetadata

        d = dict(src_dict)
        id = d.pop("id")

        def _parse_amount(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        amount = _parse_amount(d.pop("amount", UNSET))

        _metadata = d.pop("metadata", UNSET)
        metadata: ReverseTransferMetadata | Unset
        if isinstance(_metadata, Unset):
            metadata = UNSET
        else:
            metadata = ReverseTransferMetadata.from_dict(_metadata)

        reverse_transfer = cls(
            id=id,
            amount=amount,
            metadata=metadata,
        )

        return reverse_transfer
