from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="WorkerStatus")


@_attrs_define
class WorkerStatus:
    """
    Attributes:
        failures (int):
        last_error (None | str):
        name (str):
        since (datetime.datetime):
        up (bool):
    """

    failures: int
    last_error: None | str
    name: str
    since: datetime.datetime
    up: bool
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        failures = self.failures

        last_error: None | str
        last_error = self.last_error

        name = self.name

        since = self.since.isoformat()

        up = self.up

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "failures": failures,
                "last_error": last_error,
                "name": name,
                "since": since,
                "up": up,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        failures = d.pop("failures")

        def _parse_last_error(data: object) -> None | str:
            if data is None:
                return data
            return cast(None | str, data)

        last_error = _parse_last_error(d.pop("last_error"))

        name = d.pop("name")

        since = datetime.datetime.fromisoformat(d.pop("since"))

        up = d.pop("up")

        worker_status = cls(
            failures=failures,
            last_error=last_error,
            name=name,
            since=since,
            up=up,
        )

        worker_status.additional_properties = d
        return worker_status

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
