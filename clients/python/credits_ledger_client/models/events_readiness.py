from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self, TypeVar

from attrs import define as _attrs_define
from attrs import field as _attrs_field

T = TypeVar("T", bound="EventsReadiness")


@_attrs_define
class EventsReadiness:
    """The feed's and webhook deliveries' state (a failing receiver is not our outage:
    these figures never make the service not ready).

        Attributes:
            feed_lag_positions (int):
            webhook_attempts_failed (int):
            webhook_endpoints_disabled (int):
            webhook_endpoints_failing (int):
            webhook_lag_events (int):
    """

    feed_lag_positions: int
    webhook_attempts_failed: int
    webhook_endpoints_disabled: int
    webhook_endpoints_failing: int
    webhook_lag_events: int
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        feed_lag_positions = self.feed_lag_positions

        webhook_attempts_failed = self.webhook_attempts_failed

        webhook_endpoints_disabled = self.webhook_endpoints_disabled

        webhook_endpoints_failing = self.webhook_endpoints_failing

        webhook_lag_events = self.webhook_lag_events

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "feed_lag_positions": feed_lag_positions,
                "webhook_attempts_failed": webhook_attempts_failed,
                "webhook_endpoints_disabled": webhook_endpoints_disabled,
                "webhook_endpoints_failing": webhook_endpoints_failing,
                "webhook_lag_events": webhook_lag_events,
            }
        )

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        d = dict(src_dict)
        feed_lag_positions = d.pop("feed_lag_positions")

        webhook_attempts_failed = d.pop("webhook_attempts_failed")

        webhook_endpoints_disabled = d.pop("webhook_endpoints_disabled")

        webhook_endpoints_failing = d.pop("webhook_endpoints_failing")

        webhook_lag_events = d.pop("webhook_lag_events")

        events_readiness = cls(
            feed_lag_positions=feed_lag_positions,
            webhook_attempts_failed=webhook_attempts_failed,
            webhook_endpoints_disabled=webhook_endpoints_disabled,
            webhook_endpoints_failing=webhook_endpoints_failing,
            webhook_lag_events=webhook_lag_events,
        )

        events_readiness.additional_properties = d
        return events_readiness

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
