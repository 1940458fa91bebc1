from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="HistoryPointRead")


@_attrs_define
class HistoryPointRead:
    """
    Attributes:
        available (int):
        balance (int):
        credits_pending (int):
        credits_posted (int):
        debits_pending (int):
        debits_posted (int):
        end (datetime.datetime):
        position (int): The last event at or before the interval's end (0: none)
        start (datetime.datetime):
    """

    available: int
    balance: int
    credits_pending: int
    credits_posted: int
    debits_pending: int
    debits_posted: int
    end: datetime.datetime
    position: int
    start: datetime.datetime
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        available = self.available

        balance = self.balance

        credits_pending = self.credits_pending

        credits_posted = self.credits_posted

        debits_pending = self.debits_pending

        debits_posted = self.debits_posted

        end = self.end.isoformat()

        position = self.position

        start = self.start.isoformat()

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "available": available,
                "balance": balance,
                "credits_pending": credits_pending,
                "credits_posted": credits_posted,
                "debits_pending": debits_pending,
                "debits_posted": debits_posted,
                "end": end,
                "position": position,
                "start": start,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        available = d.pop("available")

        balance = d.pop("balance")

        credits_pending = d.pop("credits_pending")

        credits_posted = d.pop("credits_posted")

        debits_pending = d.pop("debits_pending")

        debits_posted = d.pop("debits_posted")

        end = datetime.datetime.fromisoformat(d.pop("end"))

        position = d.pop("position")

        start = datetime.datetime.fromisoformat(d.pop("start"))

        history_point_read = cls(
            available=available,
            balance=balance,
            credits_pending=credits_pending,
            credits_posted=credits_posted,
            debits_pending=debits_pending,
            debits_posted=debits_posted,
            end=end,
            position=position,
            start=start,
        )

        history_point_read.additional_properties = d
        return history_point_read

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
