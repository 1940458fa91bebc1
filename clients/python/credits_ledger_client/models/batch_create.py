from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define

if TYPE_CHECKING:
    from ..models.transfer_create import TransferCreate


T = TypeVar("T", bound="BatchCreate")


@_attrs_define
class BatchCreate:
    """
    Attributes:
        atomic (bool):
        transfers (list[TransferCreate]):
    """

    atomic: bool
    transfers: list[TransferCreate]

    def to_dict(self) -> dict[str, Any]:
        atomic = self.atomic

        transfers = []
        for transfers_item_data in self.transfers:
            transfers_item = transfers_item_data.to_dict()
            transfers.append(transfers_item)

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "atomic": atomic,
                "transfers": transfers,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.transfer_create import TransferCreate

        d = dict(src_dict)
        atomic = d.pop("atomic")

        transfers = []
        _transfers = d.pop("transfers")
        for transfers_item_data in _transfers:
            transfers_item = TransferCreate.from_dict(transfers_item_data)

            transfers.append(transfers_item)

        batch_create = cls(
            atomic=atomic,
            transfers=transfers,
        )

        return batch_create
