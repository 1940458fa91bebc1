from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

if TYPE_CHECKING:
    from ..models.unit_totals_read import UnitTotalsRead


T = TypeVar("T", bound="TotalsRead")


@_attrs_define
class TotalsRead:
    """
    Attributes:
        position (int):
        units (list[UnitTotalsRead]):
    """

    position: int
    units: list[UnitTotalsRead]
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        position = self.position

        units = []
        for units_item_data in self.units:
            units_item = units_item_data.to_dict()
            units.append(units_item)

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "position": position,
                "units": units,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.unit_totals_read import UnitTotalsRead

        d = dict(src_dict)
        position = d.pop("position")

        units = []
        _units = d.pop("units")
        for units_item_data in _units:
            units_item = UnitTotalsRead.from_dict(units_item_data)

            units.append(units_item)

        totals_read = cls(
            position=position,
            units=units,
        )

        totals_read.additional_properties = d
        return totals_read

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
