from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.account_type import AccountType
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.account_create_metadata import AccountCreateMetadata


T = TypeVar("T", bound="AccountCreate")


@_attrs_define
class AccountCreate:
    """
    Attributes:
        id (str):
        unit (str):
        account_type (AccountType | None | Unset): What the account is in the operator's books (accounting exports);
            default: equity when allow_negative (issuance), else liability (credits owed)
        allow_negative (bool | Unset):  Default: False.
        metadata (AccountCreateMetadata | Unset):
        overdraft_limit (int | Unset):  Default: 0.
    """

    id: str
    unit: str
    account_type: AccountType | None | Unset = UNSET
    allow_negative: bool | Unset = False
    metadata: AccountCreateMetadata | Unset = UNSET
    overdraft_limit: int | Unset = 0

    def to_dict(self) -> dict[str, Any]:
        id = self.id

        unit = self.unit

        account_type: None | str | Unset
        if isinstance(self.account_type, Unset):
            account_type = UNSET
        elif isinstance(self.account_type, AccountType):
            account_type = self.account_type.value
        else:
            account_type = self.account_type

        allow_negative = self.allow_negative

        metadata: dict[str, Any] | Unset = UNSET
        if not isinstance(self.metadata, Unset):
            metadata = self.metadata.to_dict()

        overdraft_limit = self.overdraft_limit

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "id": id,
                "unit": unit,
            }
        )
        if account_type is not UNSET:
            field_dict["account_type"] = account_type
        if allow_negative is not UNSET:
            field_dict["allow_negative"] = allow_negative
        if metadata is not UNSET:
            field_dict["metadata"] = metadata
        if overdraft_limit is not UNSET:
            field_dict["overdraft_limit"] = overdraft_limit

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.account_create_metadata import AccountCreateMetadata

        d = dict(src_dict)
        id = d.pop("id")

        unit = d.pop("unit")

        def _parse_account_type(data: object) -> AccountType | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                account_type_type_0 = AccountType(data)

                return account_type_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(AccountType | None | Unset, data)

        account_type = _parse_account_type(d.pop("account_type", UNSET))

        allow_negative = d.pop("allow_negative", UNSET)

        _metadata = d.pop("metadata", UNSET)
        metadata: AccountCreateMetadata | Unset
        if isinstance(_metadata, Unset):
            metadata = UNSET
        else:
            metadata = AccountCreateMetadata.from_dict(_metadata)

        overdraft_limit = d.pop("overdraft_limit", UNSET)

        account_create = cls(
            id=id,
            unit=unit,
            account_type=account_type,
            allow_negative=allow_negative,
            metadata=metadata,
            overdraft_limit=overdraft_limit,
        )

        return account_create
