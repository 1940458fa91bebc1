from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define

from ..models.monitor_create_field import MonitorCreateField
from ..types import UNSET, Unset

T = TypeVar("T", bound="MonitorCreate")


@_attrs_define
class MonitorCreate:
    """
    Attributes:
        account_id (str):
        above (int | None | Unset): Fires when the value rises above
        below (int | None | Unset): Fires when the value drops below
        description (str | Unset):  Default: ''.
        field (MonitorCreateField | Unset):  Default: MonitorCreateField.BALANCE.
    """

    account_id: str
    above: int | None | Unset = UNSET
    below: int | None | Unset = UNSET
    description: str | Unset = ""
    field: MonitorCreateField | Unset = MonitorCreateField.BALANCE

    def to_dict(self) -> dict[str, Any]:
        account_id = self.account_id

        above: int | None | Unset
        if isinstance(self.above, Unset):
            above = UNSET
        else:
            above = self.above

        below: int | None | Unset
        if isinstance(self.below, Unset):
            below = UNSET
        else:
            below = self.below

        description = self.description

        field: str | Unset = UNSET
        if not isinstance(self.field, Unset):
            field = self.field.value

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "account_id": account_id,
            }
        )
        if above is not UNSET:
            field_dict["above"] = above
        if below is not UNSET:
            field_dict["below"] = below
        if description is not UNSET:
            field_dict["description"] = description
        if field is not UNSET:
            field_dict["field"] = field

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        account_id = d.pop("account_id")

        def _parse_above(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        above = _parse_above(d.pop("above", UNSET))

        def _parse_below(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        below = _parse_below(d.pop("below", UNSET))

        description = d.pop("description", UNSET)

        _field = d.pop("field", UNSET)
        field: MonitorCreateField | Unset
        if isinstance(_field, Unset):
            field = UNSET
        else:
            field = MonitorCreateField(_field)

        monitor_create = cls(
            account_id=account_id,
            above=above,
            below=below,
            description=description,
            field=field,
        )

        return monitor_create
