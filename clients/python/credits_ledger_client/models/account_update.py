from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define

if TYPE_CHECKING:
    from ..models.account_update_metadata import AccountUpdateMetadata


T = TypeVar("T", bound="AccountUpdate")


@_attrs_define
class AccountUpdate:
    """JSON Merge Patch of the metadata: a key set to null is removed.

    Attributes:
        metadata (AccountUpdateMetadata):
    """

    metadata: AccountUpdateMetadata

    def to_dict(self) -> dict[str, Any]:
        metadata = self.metadata.to_dict()

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "metadata": metadata,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.account_update_metadata import AccountUpdateMetadata

        d = dict(src_dict)
        metadata = AccountUpdateMetadata.from_dict(d.pop("metadata"))

        account_update = cls(
            metadata=metadata,
        )

        return account_update
