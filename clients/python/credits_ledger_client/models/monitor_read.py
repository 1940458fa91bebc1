from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.monitor_read_field import MonitorReadField

T = TypeVar("T", bound="MonitorRead")


@_attrs_define
class MonitorRead:
    """
    Attributes:
        above (int | None):
        account_id (str):
        below (int | None):
        condition_holds (bool | None): Whether the value is past the threshold now (null until the first change the
            monitor sees)
        created_at (datetime.datetime):
        description (str):
        field (MonitorReadField):
        id (str):
    """

    above: int | None
    account_id: str
    below: int | None
    condition_holds: bool | None
    created_at: datetime.datetime
    description: str
    field: MonitorReadField
    id: str
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        above: int | None
        above = self.above

        account_id = self.account_id

        below: int | None
        below = self.below

        condition_holds: bool | None
        condition_holds = self.condition_holds

        created_at = self.created_at.isoformat()

        description = self.description

        field = self.field.value

        id = self.id

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "above": above,
                "account_id": account_id,
                "below": below,
                "condition_holds": condition_holds,
                "created_at": created_at,
                "description": description,
                "field": field,
                "id": id,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)

        def _parse_above(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        above = _parse_above(d.pop("above"))

        account_id = d.pop("account_id")

        def _parse_below(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        below = _parse_below(d.pop("below"))

        def _parse_condition_holds(data: object) -> bool | None:
            if data is None:
                return data
            return cast(bool | None, data)

        condition_holds = _parse_condition_holds(d.pop("condition_holds"))

        created_at = datetime.datetime.fromisoformat(d.pop("created_at"))

        description = d.pop("description")

        field = MonitorReadField(d.pop("field"))

        id = d.pop("id")

        monitor_read = cls(
            above=above,
            account_id=account_id,
            below=below,
            condition_holds=condition_holds,
            created_at=created_at,
            description=description,
            field=field,
            id=id,
        )

        monitor_read.additional_properties = d
        return monitor_read

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
