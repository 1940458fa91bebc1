from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define

T = TypeVar("T", bound="WebhookReplay")


@_attrs_define
class WebhookReplay:
    """
    Attributes:
        after_position (int): Deliver again every matching event whose position is after this
    """

    after_position: int

    def to_dict(self) -> dict[str, Any]:
        after_position = self.after_position

        field_dict: dict[str, Any] = {}

        field_dict.update(
            {
                "after_position": after_position,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        after_position = d.pop("after_position")

        webhook_replay = cls(
            after_position=after_position,
        )

        return webhook_replay
