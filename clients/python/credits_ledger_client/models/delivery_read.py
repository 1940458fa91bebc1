from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.delivery_read_status import DeliveryReadStatus

T = TypeVar("T", bound="DeliveryRead")


@_attrs_define
class DeliveryRead:
    """
    Attributes:
        attempts (int):
        event_id (str):
        event_type (str):
        last_attempt_at (datetime.datetime):
        last_error (None | str):
        latency_ms (float | None):
        next_attempt_at (datetime.datetime | None):
        position (int):
        response_status (int | None):
        status (DeliveryReadStatus):
    """

    attempts: int
    event_id: str
    event_type: str
    last_attempt_at: datetime.datetime
    last_error: None | str
    latency_ms: float | None
    next_attempt_at: datetime.datetime | None
    position: int
    response_status: int | None
    status: DeliveryReadStatus
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        attempts = self.attempts

        event_id = self.event_id

        event_type = self.event_type

        last_attempt_at = self.last_attempt_at.isoformat()

        last_error: None | str
        last_error = self.last_error

        latency_ms: float | None
        latency_ms = self.latency_ms

        next_attempt_at: None | str
        if isinstance(self.next_attempt_at, datetime.datetime):
            next_attempt_at = self.next_attempt_at.isoformat()
        else:
            next_attempt_at = self.next_attempt_at

        position = self.position

        response_status: int | None
        response_status = self.response_status

        status = self.status.value

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "attempts": attempts,
                "event_id": event_id,
                "event_type": event_type,
                "last_attempt_at": last_attempt_at,
                "last_error": last_error,
                "latency_ms": latency_ms,
                "next_attempt_at": next_attempt_at,
                "position": position,
                "response_status": response_status,
                "status": status,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        attempts = d.pop("attempts")

        event_id = d.pop("event_id")

        event_type = d.pop("event_type")

        last_attempt_at = datetime.datetime.fromisoformat(d.pop("last_attempt_at"))

        def _parse_last_error(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        last_error = _parse_last_error(d.pop("last_error"))

        def _parse_latency_ms(data: object) -> float | None:
            if data is None:
                return data
            return cast(float | None, data)

        latency_ms = _parse_latency_ms(d.pop("latency_ms"))

        def _parse_next_attempt_at(data: object) -> datetime.datetime | None:
            if data is None:
                return data
            try:
                if not isinstance(data, str):
                    raise TypeError()
                next_attempt_at_type_0 = datetime.datetime.fromisoformat(data)

                return next_attempt_at_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(datetime.datetime | None, data)

        next_attempt_at = _parse_next_attempt_at(d.pop("next_attempt_at"))

        position = d.pop("position")

        def _parse_response_status(data: object) -> int | None:
            if data is None:
                return data
            return cast(int | None, data)

        response_status = _parse_response_status(d.pop("response_status"))

        status = DeliveryReadStatus(d.pop("status"))

        delivery_read = cls(
            attempts=attempts,
            event_id=event_id,
            event_type=event_type,
            last_attempt_at=last_attempt_at,
            last_error=last_error,
            latency_ms=latency_ms,
            next_attempt_at=next_attempt_at,
            position=position,
            response_status=response_status,
            status=status,
        )

        delivery_read.additional_properties = d
        return delivery_read

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
