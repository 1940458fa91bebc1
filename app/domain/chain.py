"""Tamper evidence: every event carries ``chain``, a SHA-256 over the previous event's
chain and this event's own content, so each stream is a hash chain.

A link hashes the compact, key-sorted JSON of its content, exactly as
``json.dumps(sort_keys=True, separators=(",", ":"))`` writes it. For what event fields
hold (text, integers, booleans, None, lists, objects, times; never floats: amounts are
integers) orjson writes the very same bytes, about five times faster, whenever the
result is plain ASCII below DEL: both escape alike there, while from DEL on
``json.dumps`` escapes and orjson writes UTF-8. So the digest takes orjson's bytes and
falls back to ``json.dumps`` for anything else: every link is the same whichever
encoder wrote it, those stored before orjson was used included
(``tests/unit/test_chain.py`` checks the two encoders agree, property-based).

The write path computes it (``ChainedAggregate``); the audit recomputes it from the
stored events and reports the first broken link of each stream. Editing an event
behind the ledger's back breaks its own link; re-computing its chain to hide the edit
breaks the next one.
"""

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from contextvars import ContextVar
from datetime import datetime
from enum import Enum
from typing import Any, Final, Self
from uuid import UUID

import orjson
from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from app.compat import initialise_aggregate

GENESIS: Final = "0" * 64
# DEL as an integer: ``int in bytes`` is a byte test, while ``bytes in bytes`` first tries
# its argument as an integer, raising and formatting a TypeError on each call.
_DEL: Final = 0x7F
# Sorted keys, as json.dumps(sort_keys=True); datetimes inside fields go to
# ``_nested_value``, as they do for json.dumps.
_ORJSON_OPTIONS: Final = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)
# The fields alone, refusing (rather than converting) anything the store would write
# otherwise than the link does (app/persistence/transcoder.py passes the same through).
_FIELDS_OPTIONS: Final = _ORJSON_OPTIONS | orjson.OPT_PASSTHROUGH_SUBCLASS
# Where a new event keeps the canonical JSON of the fields its link hashed:
# ``(bytes, fields left out of them, attribute count)``. The store writes these bytes as
# the event's fields (app/persistence/mapper.py); never stored itself, never hashed.
ENCODED_FIELDS: Final = "_encoded_fields"
# Fields every event has, or that the library adds: hashed separately or not at all.
_ENVELOPE: Final = frozenset(
    {
        "originator_id",
        "originator_version",
        "timestamp",
        "chain",
        "originator_topic",
        # where its commit ends (app.domain.commits): set at the write, after the chain
        "commit_id",
        "commit_last",
        ENCODED_FIELDS,
    }
)


def chain_digest(
    previous: str,
    event_type: str,
    originator_id: UUID,
    version: int,
    timestamp: datetime,
    fields: dict[str, Any],
) -> str:
    content = [previous, event_type, originator_id.hex, version, _iso_text(timestamp), fields]
    return hashlib.sha256(_canonical_json(content)).hexdigest()


# The last time stamp written as text: every event of a command (a batch of 1,000
# transfers: 3,000 events) shares one time stamp object. Read and replaced whole.
_last_iso_text: tuple[datetime, str] | None = None


def _iso_text(moment: datetime) -> str:
    global _last_iso_text  # noqa: PLW0603  # a one-entry cache, replaced whole
    last = _last_iso_text
    if last is None or last[0] is not moment:
        last = _last_iso_text = (moment, moment.isoformat())
    return last[1]


def _canonical_json(content: list[Any]) -> bytes:
    """``json.dumps(content, sort_keys=True, separators=(",", ":"))``, as bytes (see the
    module docstring for why orjson's bytes are the same when they are plain ASCII)."""
    try:
        encoded = orjson.dumps(content, default=_nested_value, option=_ORJSON_OPTIONS)
    except orjson.JSONEncodeError:
        pass  # something orjson does not take (an integer past 64 bits): json.dumps decides
    else:
        if encoded.isascii() and _DEL not in encoded:
            return encoded
    return _stdlib_canonical_json(content)


def _stdlib_canonical_json(content: Any) -> bytes:
    """The canonical JSON as ``json.dumps`` writes it (non-ASCII escaped): what the
    digest covers whenever orjson's bytes are not the same."""
    return json.dumps(
        content, sort_keys=True, separators=(",", ":"), default=_nested_value
    ).encode()


def _nested_value(value: object) -> object:
    """Times inside a field (a grant's terms) hash as ISO text, as the envelope's does;
    ids and enumerations as orjson writes them natively, so that both encoders take (and
    refuse) the same values whatever the text holds."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot hash {type(value).__name__} in an event field")


def event_fields(event: object) -> dict[str, Any]:
    fields = {key: value for key, value in vars(event).items() if key not in _ENVELOPE}
    return hashed_fields(type(event), fields)


def hashed_fields(event_class: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The fields a chain link covers. A field added by a later ``class_version`` (listed
    in ``added_fields``) is None when its upcaster filled it in, so a None there is left
    out: links written before the field existed still verify after upcasting."""
    added = getattr(event_class, "added_fields", ())
    if not added:
        return fields
    return {k: v for k, v in fields.items() if not (k in added and v is None)}


def expected_chain(previous: str, event: Any) -> str:
    return chain_digest(
        previous,
        type(event).__qualname__,
        event.originator_id,
        event.originator_version,
        event.timestamp,
        event_fields(event),
    )


def first_broken_link(events: Iterable[Any]) -> int | None:
    """The version of the first event of a stream whose chain does not verify."""
    previous = GENESIS
    for event in events:
        if getattr(event, "chain", None) != expected_chain(previous, event):
            return int(event.originator_version)
        previous = event.chain
    return None


class ChainedEvent(Aggregate.Event):
    chain: str

    def mutate(self, aggregate: Any) -> Any:
        mutated: Any = super().mutate(aggregate)
        mutated.chain = self.chain
        return mutated


class ChainedCreated(Aggregate.Created):
    chain: str

    def mutate(self, aggregate: Any) -> Any:
        created: Any = super().mutate(aggregate)
        created.chain = self.chain
        return created


# One command, one time: every event a command writes carries the same timestamp, so
# that "as of T" never sees half of a command (set by the application for each attempt).
_COMMAND_TIME: ContextVar[datetime | None] = ContextVar("command_time", default=None)


def command_time(moment: datetime) -> "_CommandTime":
    """The running command's time stamp is ``moment`` inside the ``with`` block."""
    return _CommandTime(moment)


class _CommandTime:
    """``command_time``'s context manager (a class: the writer enters one per command,
    and a generator-based one costs four more Python calls each time)."""

    __slots__ = ("_moment", "_token")

    def __init__(self, moment: datetime) -> None:
        self._moment = moment

    def __enter__(self) -> None:
        self._token = _COMMAND_TIME.set(self._moment)

    def __exit__(self, *exc_info: object) -> None:
        _COMMAND_TIME.reset(self._token)


def current_command_time() -> datetime | None:
    """The time stamp the running command's events get (None outside a command)."""
    return _COMMAND_TIME.get()


def _timestamp(event_class: Any) -> datetime:
    moment = _COMMAND_TIME.get()
    return moment if moment is not None else event_class.create_timestamp()


class ChainedAggregate(Aggregate):
    """An aggregate whose events are hash-chained (see module docstring).

    Its events are triggered on a lean path: the library's ``trigger_event`` and
    ``_create`` build each event and then run generic checks on it (a registered-topic
    check for explicitly named aggregates, the event's id and version against the
    aggregate in ``mutate``, the event's fields filtered against the aggregate's
    ``__init__`` signature), which hold by construction here: the event is built as the
    next of this very aggregate's sequence (``chained_event``). What remains is the
    library's own sequence: build the event, ``apply`` it, advance ``version`` and
    ``modified_on``, append it to the pending events. ``tests/unit/test_chain.py`` checks
    that an aggregate built this way equals the one the library folds from its stored
    events.
    """

    chain: str = GENESIS

    def trigger_event(self, event_class: Any, **kwargs: Any) -> None:
        timestamp = kwargs.pop("timestamp", None) or _timestamp(event_class)
        version = self.version + 1
        event = chained_event(event_class, self.id, version, self.chain, timestamp, kwargs)
        event.apply(self)
        self.version = version
        self.modified_on = timestamp
        self.chain = event.chain
        self.pending_events.append(event)

    def collect_events(self) -> list[Any]:
        """The pending events, in order, leaving none (what the library's does, which
        pops them one by one from the front: quadratic for an account a batch credits a
        thousand times)."""
        pending = self.pending_events
        collected = list(pending)
        pending.clear()
        return collected

    @classmethod
    def _create_chained(cls, event_class: Any, *, id: UUID, **kwargs: Any) -> Self:
        """Create the aggregate by its first event; ``kwargs`` are exactly the
        aggregate's ``__init__`` arguments (and the event's fields)."""
        timestamp = _timestamp(event_class)
        version = cls.INITIAL_VERSION
        event = chained_event(
            event_class, id, version, GENESIS, timestamp, kwargs, originator_topic=get_topic(cls)
        )
        aggregate = cls.__new__(cls)
        initialise_aggregate(aggregate, id, version, timestamp)
        aggregate.__init__(**kwargs)  # type: ignore[misc]
        event.apply(aggregate)
        aggregate.chain = event.chain
        aggregate.pending_events.append(event)
        return aggregate


def chained_event(
    event_class: Any,
    originator_id: UUID,
    version: int,
    previous: str,
    timestamp: datetime,
    fields: dict[str, Any],
    **envelope: Any,
) -> Any:
    """The event of ``event_class`` with these ``fields`` that follows ``previous`` in its
    stream: its link computed, and the canonical JSON its link hashed kept with it
    (``ENCODED_FIELDS``) for the store to write as the event's fields (each event is
    serialised and hashed once)."""
    names, added, quoted_type = _event_spec(event_class)
    left_out: tuple[str, ...] = ()
    hashed = fields
    if added:  # as hashed_fields: a later version's field that is None is not linked
        left_out = tuple([k for k in added if k in fields and fields[k] is None])
        if left_out:
            hashed = {k: v for k, v in fields.items() if k not in left_out}
    chain, encoded = _link(
        previous,
        event_class.__qualname__,
        originator_id,
        version,
        timestamp,
        hashed,
        quoted_type=quoted_type,
    )
    state = {"originator_id": originator_id, "originator_version": version, "timestamp": timestamp}
    if envelope:
        state.update(envelope)
    state["chain"] = chain
    state.update(fields)
    if fields.keys() != names:
        # Not the event's exact fields: its own constructor says what is wrong (or
        # fills in defaults), and the event keeps no bytes whose keys might differ.
        return event_class(**state)
    if encoded is not None:
        # The bytes, the fields left out of them, and how many attributes the event has
        # with this entry (the store checks nothing was added since but commit marks).
        state[ENCODED_FIELDS] = (encoded, left_out, len(state) + 1)
    # As the library's mapper builds an event it reads back: the frozen dataclass's
    # constructor would only set the same attributes one by one.
    event = object.__new__(event_class)
    object.__setattr__(event, "__dict__", state)
    return event


# Each event class's own fields (those the caller gives; not the envelope), those a
# later class version added (``added_fields``), and its name as a JSON string when that
# is plain text (``_link``'s head), by class.
_EVENT_SPECS: dict[type, tuple[frozenset[str], tuple[str, ...], str | None]] = {}


def _event_spec(event_class: type) -> tuple[frozenset[str], tuple[str, ...], str | None]:
    spec = _EVENT_SPECS.get(event_class)
    if spec is None:
        names = frozenset(f.name for f in dataclasses.fields(event_class)) - _ENVELOPE
        quoted = _stdlib_canonical_json(event_class.__qualname__).decode()
        spec = _EVENT_SPECS[event_class] = (
            names,
            tuple(getattr(event_class, "added_fields", ())),
            quoted if _plain_text(event_class.__qualname__) else None,
        )
    return spec


def _plain_text(text: str) -> bool:
    """Whether ``text`` is written in JSON as itself between quotes by both encoders
    (letters, digits and ``._:-`` only)."""
    return (
        text.isascii()
        and text.replace(".", "").replace("_", "").replace(":", "").replace("-", "").isalnum()
    )


def _link(
    previous: str,
    event_type: str,
    originator_id: UUID,
    version: int,
    timestamp: datetime,
    fields: dict[str, Any],
    quoted_type: str | None = None,
) -> tuple[str, bytes | None]:
    """``chain_digest`` of the event, and the fields' canonical JSON inside the hashed
    bytes when the store may keep exactly those bytes (None when a field holds a value
    the store writes otherwise than the link does: a time, tagged in the store).
    ``quoted_type``: ``event_type`` as a JSON string, when it is plain text."""
    try:
        encoded = orjson.dumps(fields, option=_FIELDS_OPTIONS)
    except orjson.JSONEncodeError:  # a time, a subclass, a dataclass, a huge integer
        return chain_digest(previous, event_type, originator_id, version, timestamp, fields), None
    if not encoded.isascii() or _DEL in encoded:
        # What json.dumps writes (escaped ASCII): the same values, read back alike.
        encoded = _stdlib_canonical_json(fields)
    if (
        quoted_type is not None
        and type(version) is int
        and previous.isalnum()
        and previous.isascii()
    ):
        # The head written directly: every item is plain text or an integer (a link and
        # an id are hex, an ISO time is digits and ``-:.+T``), which JSON writes as is.
        digest = hashlib.sha256(
            f'["{previous}",{quoted_type},"{originator_id.hex}",{version},'
            f'"{_iso_text(timestamp)}",'.encode()
        )
        digest.update(encoded)
        digest.update(b"]")
        return digest.hexdigest(), encoded
    # The content list of chain_digest, its last item (the fields) spliced in as bytes:
    # json.dumps writes a list as its items' own texts joined by commas.
    head = orjson.dumps([previous, event_type, originator_id.hex, version, _iso_text(timestamp)])
    if not head.isascii() or _DEL in head:
        return chain_digest(previous, event_type, originator_id, version, timestamp, fields), None
    return hashlib.sha256(head[:-1] + b"," + encoded + b"]").hexdigest(), encoded


class EventPieces:
    """What every event of one class with one shape shares, computed once: built from
    these, an event is exactly the one ``chained_event`` builds from the same fields
    (same link, same kept bytes, same attributes in the same order), for a writer that
    builds thousands of events of a few shapes (an atomic batch: ``lean_batch.py``).

    A shape is the class's exact fields, with ``left_out`` (fields a later class version
    added) None and every other field's value plain (no time inside it); ``new`` answers
    None when the fields' bytes are not what the store may keep as they are (the caller
    then takes ``chained_event``). ``tests/unit/test_lean_batch.py`` holds the two equal.
    """

    __slots__ = ("_class", "_left_out", "_quoted_type", "_size", "_topic")

    def __init__(
        self, event_class: type, left_out: tuple[str, ...] = (), originator_topic: str | None = None
    ) -> None:
        names, added, quoted_type = _event_spec(event_class)
        if quoted_type is None or not set(left_out) <= set(added):
            raise ValueError(f"{event_class.__qualname__} has no lean shape {left_out}")
        self._class = event_class
        self._quoted_type = quoted_type
        # In the order chained_event leaves them out (the class's ``added_fields``).
        self._left_out = tuple(name for name in added if name in left_out)
        self._topic = originator_topic
        # The event's attributes: id, version, time, (topic,) link, fields, kept bytes.
        self._size = 3 + (originator_topic is not None) + 1 + len(names) + 1

    def new(
        self,
        originator_id: UUID,
        originator_hex: str,
        version: int,
        previous: str,
        timestamp: datetime,
        iso_time: str,
        fields: dict[str, Any],
        hashed: dict[str, Any] | None = None,
    ) -> Any:
        """The event following ``previous`` (a link: hex) at ``version``, or None (see
        the class docstring). ``fields``: every field, in the class's order; ``hashed``:
        those the link covers (``fields`` without the ones left out), when the caller
        has them; ``iso_time`` and ``originator_hex``: ``timestamp`` and
        ``originator_id`` as the link writes them."""
        left_out = self._left_out
        if hashed is None:
            hashed = fields
            if left_out:
                hashed = fields.copy()
                for name in left_out:
                    del hashed[name]
        try:
            encoded = orjson.dumps(hashed, option=_FIELDS_OPTIONS)
        except orjson.JSONEncodeError:
            return None
        if not encoded.isascii() or _DEL in encoded:
            return None
        # The head, the fields' bytes and the closing bracket, hashed in one call.
        chain = hashlib.sha256(
            f'["{previous}",{self._quoted_type},"{originator_hex}",{version},"{iso_time}",'.encode()
            + encoded
            + b"]"
        ).hexdigest()
        if self._topic is None:
            state = {
                "originator_id": originator_id,
                "originator_version": version,
                "timestamp": timestamp,
                "chain": chain,
            }
        else:
            state = {
                "originator_id": originator_id,
                "originator_version": version,
                "timestamp": timestamp,
                "originator_topic": self._topic,
                "chain": chain,
            }
        state.update(fields)
        state[ENCODED_FIELDS] = (encoded, left_out, self._size)
        event: Any = _new_object(self._class)
        _set_attribute(event, "__dict__", state)
        return event


_new_object: Final = object.__new__
_set_attribute: Final = object.__setattr__


def plain_link(link: str) -> bool:
    """Whether a link is written in JSON as itself between quotes (hex, as every link
    the ledger computes): what ``EventPieces.new`` takes as ``previous``."""
    return link.isalnum() and link.isascii()
