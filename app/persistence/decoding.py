"""Stored events read back as domain events, for the readers of the whole log (the
projections' catch-up runner, the public feed's projector)."""

from collections.abc import Callable, Hashable
from typing import Any, cast

from eventsourcing.persistence import Mapper, StoredEvent, find_id_convertor
from eventsourcing.utils import resolve_topic


def domain_event_reader(mapper: Mapper[Any]) -> Callable[[StoredEvent], Any]:
    """``mapper.to_domain_event``, with what depends on an event's topic alone (its
    class, class version and id convertor) found once per topic rather than once per
    event: the same steps otherwise (decode, the originator's id and version, each
    upcaster ``upcast_vN_vN+1`` in turn, the event built without its constructor).
    A mapper that decrypts or decompresses keeps its own method."""
    if mapper.cipher is not None or mapper.compressor is not None:
        return mapper.to_domain_event
    decode = mapper.transcoder.decode
    classes: dict[tuple[str, type], tuple[type, int, Callable[[Any], Any]]] = {}

    def to_domain_event(stored: StoredEvent) -> Any:
        key = (stored.topic, type(stored.originator_id))
        found = classes.get(key)
        if found is None:
            event_class = resolve_topic(stored.topic)
            found = classes[key] = (
                event_class,
                getattr(event_class, "class_version", 1),
                find_id_convertor(event_class, cast("Hashable", key[1])),
            )
        event_class, class_version, convert_id = found
        state = decode(stored.state)
        state["originator_id"] = convert_id(stored.originator_id)
        state["originator_version"] = stored.originator_version
        version = state.pop("class_version", 1)
        while version < class_version:
            getattr(event_class, f"upcast_v{version}_v{version + 1}")(state)
            version += 1
        event: Any = object.__new__(event_class)
        object.__setattr__(event, "__dict__", state)
        return event

    return to_domain_event
