from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.grant_create_category import GrantCreateCategory
from ..types import UNSET, Unset

T = TypeVar("T", bound="GrantCreate")


@_attrs_define
class GrantCreate:
    """Makes the transfer a credit grant: a lot in the credit account with these terms.

    Attributes:
        category (GrantCreateCategory | Unset):  Default: GrantCreateCategory.PAID.
        effective_at (None | str | Unset): When the lot becomes spendable (null: at once)
        expires_at (None | str | Unset): When what is left expires to breakage (null: never)
        priority (int | Unset):  Default: 50.
    """

    category: GrantCreateCategory | Unset = GrantCreateCategory.PAID
    effective_at: None | str | Unset = UNSET
    expires_at: None | str | Unset = UNSET
    priority: int | Unset = 50

    def to_dict(self) -> dict[str, Any]:
        category: str | Unset = UNSET
        if not isinstance(self.category, Unset):
            category = self.category.value

        effective_at: None | str | Unset
        if isinstance(self.effective_at, Unset):
            effective_at = UNSET
        else:
            effective_at = self.effective_at

        expires_at: None | str | Unset
        if isinstance(self.expires_at, Unset):
            expires_at = UNSET
        else:
            expires_at = self.expires_at

        priority = self.priority

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if category is not UNSET:
            field_dict["category"] = category
        if effective_at is not UNSET:
            field_dict["effective_at"] = effective_at
        if expires_at is not UNSET:
            field_dict["expires_at"] = expires_at
        if priority is not UNSET:
            field_dict["priority"] = priority

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        _category = d.pop("category", UNSET)
        category: GrantCreateCategory | Unset
        if isinstance(_category, Unset):
            category = UNSET
        else:
            category = GrantCreateCategory(_category)

        def _parse_effective_at(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        effective_at = _parse_effective_at(d.pop("effective_at", UNSET))

        def _parse_expires_at(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        expires_at = _parse_expires_at(d.pop("expires_at", UNSET))

        priority = d.pop("priority", UNSET)

        grant_create = cls(
            category=category,
            effective_at=effective_at,
            expires_at=expires_at,
            priority=priority,
        )

        return grant_create
