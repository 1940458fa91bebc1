from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.event_type import EventType

if TYPE_CHECKING:
    from ..models.public_event_data import PublicEventData


T = TypeVar("T", bound="PublicEvent")


@_attrs_define
class PublicEvent:
    """
    Attributes:
        data (PublicEventData): The resource as the API shows it; for money movements, `accounts` holds each touched
            account's balances just after this change
        id (str): Stable across deliveries and replays: deduplicate on it
        occurred_at (datetime.datetime):
        position (int): The ledger log position the event reflects (increasing, with gaps); usable as `min_position` for
            read-your-writes
        type_ (EventType):
        version (int): Version of this type's `data` shape
    """

    data: PublicEventData
    id: str
    occurred_at: datetime.datetime
    position: int
    type_: EventType
    version: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = self.data.to_dict()

        id = self.id

        occurred_at = self.occurred_at.isoformat()

        position = self.position

        type_ = self.type_.value

        version = self.version

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "data": data,
                "id": id,
                "occurred_at": occurred_at,
                "position": position,
                "type": type_,
                "version": version,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.public_event_data import PublicEventData

        d = dict(src_dict)
        data = PublicEventData.from_dict(d.pop("data"))

        id = d.pop("id")

        occurred_at = datetime.datetime.fromisoformat(d.pop("occurred_at"))

        position = d.pop("position")

        type_ = EventType(d.pop("type"))

        version = d.pop("version")

        public_event = cls(
            data=data,
            id=id,
            occurred_at=occurred_at,
            position=position,
            type_=type_,
            version=version,
        )

        public_event.additional_properties = d
        return public_event

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
