from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.lot_read_status import LotReadStatus

T = TypeVar("T", bound="LotRead")


@_attrs_define
class LotRead:
    """
    Attributes:
        amount (int): As granted
        breakage (int): Moved to breakage on expiry
        category (str):
        effective_at (datetime.datetime):
        expires_at (datetime.datetime | None):
        grant_id (str):
        granted_at (datetime.datetime):
        granted_position (int):
        priority (int):
        remaining (int): Still in the lot, reserved part included
        reserved (int):
        status (LotReadStatus):
    """

    amount: int
    breakage: int
    category: str
    effective_at: datetime.datetime
    expires_at: datetime.datetime | None
    grant_id: str
    granted_at: datetime.datetime
    granted_position: int
    priority: int
    remaining: int
    reserved: int
    status: LotReadStatus
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        amount = self.amount

        breakage = self.breakage

        category = self.category

        effective_at = self.effective_at.isoformat()

        expires_at: None | str
        if isinstance(self.expires_at, datetime.datetime):
            expires_at = self.expires_at.isoformat()
        else:
            expires_at = self.expires_at

        grant_id = self.grant_id

        granted_at = self.granted_at.isoformat()

        granted_position = self.granted_position

        priority = self.priority

        remaining = self.remaining

        reserved = self.reserved

        status = self.status.value

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "amount": amount,
                "breakage": breakage,
                "category": category,
                "effective_at": effective_at,
                "expires_at": expires_at,
                "grant_id": grant_id,
                "granted_at": granted_at,
                "granted_position": granted_position,
                "priority": priority,
                "remaining": remaining,
                "reserved": reserved,
                "status": status,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        amount = d.pop("amount")

        breakage = d.pop("breakage")

        category = d.pop("category")

        effective_at = datetime.datetime.fromisoformat(d.pop("effective_at"))

        def _parse_expires_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                expires_at_type_0 = datetime.datetime.fromisoformat(data)

                return expires_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        expires_at = _parse_expires_at(d.pop("expires_at"))

        grant_id = d.pop("grant_id")

        granted_at = datetime.datetime.fromisoformat(d.pop("granted_at"))

        granted_position = d.pop("granted_position")

        priority = d.pop("priority")

        remaining = d.pop("remaining")

        reserved = d.pop("reserved")

        status = LotReadStatus(d.pop("status"))

        lot_read = cls(
            amount=amount,
            breakage=breakage,
            category=category,
            effective_at=effective_at,
            expires_at=expires_at,
            grant_id=grant_id,
            granted_at=granted_at,
            granted_position=granted_position,
            priority=priority,
            remaining=remaining,
            reserved=reserved,
            status=status,
        )

        lot_read.additional_properties = d
        return lot_read

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
