from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.history_read_interval import HistoryReadInterval

if TYPE_CHECKING:
    from ..models.history_point_read import HistoryPointRead


T = TypeVar("T", bound="HistoryRead")


@_attrs_define
class HistoryRead:
    """
    Attributes:
        account_id (str):
        interval (HistoryReadInterval):
        items (list[HistoryPointRead]):
        position (int):
    """

    account_id: str
    interval: HistoryReadInterval
    items: list[HistoryPointRead]
    position: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        account_id = self.account_id

        interval = self.interval.value

        items = []
        for items_item_data in self.items:
            items_item = items_item_data.to_dict()
            items.append(items_item)

        position = self.position

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "account_id": account_id,
                "interval": interval,
                "items": items,
                "position": position,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.history_point_read import HistoryPointRead

        d = dict(src_dict)
        account_id = d.pop("account_id")

        interval = HistoryReadInterval(d.pop("interval"))

        items = []
        _items = d.pop("items")
        for items_item_data in _items:
            items_item = HistoryPointRead.from_dict(items_item_data)

            items.append(items_item)

        position = d.pop("position")

        history_read = cls(
            account_id=account_id,
            interval=interval,
            items=items,
            position=position,
        )

        history_read.additional_properties = d
        return history_read

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
