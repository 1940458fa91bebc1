from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

from attrs import define as _attrs_define
from attrs import field as _attrs_field

from ..models.readiness_status import ReadinessStatus
from ..types import UNSET, Unset

if TYPE_CHECKING:
    from ..models.events_readiness import EventsReadiness
    from ..models.worker_status import WorkerStatus


T = TypeVar("T", bound="Readiness")


@_attrs_define
class Readiness:
    """
    Attributes:
        checkpoint (int):
        generation (int):
        head (int):
        lag_positions (int):
        lag_seconds (float):
        status (ReadinessStatus):
        store_reachable (bool):
        events (EventsReadiness | None | Unset):
        reason (None | str | Unset):
        workers (list[WorkerStatus] | Unset):
    """

    checkpoint: int
    generation: int
    head: int
    lag_positions: int
    lag_seconds: float
    status: ReadinessStatus
    store_reachable: bool
    events: EventsReadiness | None | Unset = UNSET
    reason: None | str | Unset = UNSET
    workers: list[WorkerStatus] | Unset = UNSET
    additional_properties: dict[str, Any] = _attrs_field(init=False, factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from ..models.events_readiness import EventsReadiness

        checkpoint = self.checkpoint

        generation = self.generation

        head = self.head

        lag_positions = self.lag_positions

        lag_seconds = self.lag_seconds

        status = self.status.value

        store_reachable = self.store_reachable

        events: dict[str, Any] | None | Unset
        if isinstance(self.events, Unset):
            events = UNSET
        elif isinstance(self.events, EventsReadiness):
            events = self.events.to_dict()
        else:
            events = self.events

        reason: None | str | Unset
        if isinstance(self.reason, Unset):
            reason = UNSET
        else:
            reason = self.reason

        workers: list[dict[str, Any]] | Unset = UNSET
        if not isinstance(self.workers, Unset):
            workers = []
            for workers_item_data in self.workers:
                workers_item = workers_item_data.to_dict()
                workers.append(workers_item)

        field_dict: dict[str, Any] = {}
        field_dict.update(self.additional_properties)
        field_dict.update(
            {
                "checkpoint": checkpoint,
                "generation": generation,
                "head": head,
                "lag_positions": lag_positions,
                "lag_seconds": lag_seconds,
                "status": status,
                "store_reachable": store_reachable,
            }
        )
        if events is not UNSET:
            field_dict["events"] = events
        if reason is not UNSET:
            field_dict["reason"] = reason
        if workers is not UNSET:
            field_dict["workers"] = workers

        return field_dict

    @classmethod
    def from_dict(cls, src_dict: Mapping[str, Any]) -> Self:
        from ..models.events_readiness import EventsReadiness
        from ..models.worker_status import WorkerStatus

        d = dict(src_dict)
        checkpoint = d.pop("checkpoint")

        generation = d.pop("generation")

        head = d.pop("head")

        lag_positions = d.pop("lag_positions")

        lag_seconds = d.pop("lag_seconds")

        status = ReadinessStatus(d.pop("status"))

        store_reachable = d.pop("store_reachable")

        def _parse_events(data: object) -> EventsReadiness | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            try:
                if not isinstance(data, dict):
                    raise TypeError()
                events_type_0 = EventsReadiness.from_dict(data)

                return events_type_0
            except (TypeError, ValueError, AttributeError, KeyError):
                pass
            return cast(EventsReadiness | None | Unset, data)

        events = _parse_events(d.pop("events", UNSET))

        def _parse_reason(data: object) -> None | str | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(None | str | Unset, data)

        reason = _parse_reason(d.pop("reason", UNSET))

        _workers = d.pop("workers", UNSET)
        workers: list[WorkerStatus] | Unset = UNSET
        if _workers is not UNSET:
            workers = []
            for workers_item_data in _workers:
                workers_item = WorkerStatus.from_dict(workers_item_data)

                workers.append(workers_item)

        readiness = cls(
            checkpoint=checkpoint,
            generation=generation,
            head=head,
            lag_positions=lag_positions,
            lag_seconds=lag_seconds,
            status=status,
            store_reachable=store_reachable,
            events=events,
            reason=reason,
            workers=workers,
        )

        readiness.additional_properties = d
        return readiness

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
