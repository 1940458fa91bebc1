"""A fast JSON transcoder behind the library's ``Transcoder`` interface (orjson).

It writes exactly the format of the library's ``JSONTranscoder``: compact UTF-8 JSON
in which every registered type is an object ``{"_type_": name, "_data_": …}`` (so the
library's own transcoder reads what this one writes), and it reads everything that
transcoder ever wrote. Registered transcodings (datetimes, the lot book, …) work as
before: the ledger registers them through ``register_transcodings`` as for any
``JSONTranscoder``.

orjson would encode datetimes and dataclasses natively (untagged, so they would come
back as strings or dicts): passthrough options hand them to the registered
transcodings instead. It has no passthrough for ``UUID`` (written as a plain string):
the ledger's events and snapshots hold none (stream ids travel outside the state), and
``tests/unit/test_transcoder.py`` round-trips every kind of event and snapshot.

Reading is the projection's hot path (every event of a catch-up is decoded once). An
event's state holds one tagged value, its time stamp, at the top: when the document
holds no other tag mark, the top level is all there is to untag (``decode``), and the
events of one command share one time stamp, so the last one read is remembered.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import orjson
from eventsourcing.persistence import JSONTranscoder, TranscodingNotRegisteredError

TYPE_KEY: Final = "_type_"
DATA_KEY: Final = "_data_"
_TYPE_MARK: Final = b'"_type_"'
# Where every domain event keeps its time stamp (the library's field).
EVENT_TIME_KEY: Final = "timestamp"
_CONTAINER_TYPES: Final = (dict, list)
# Decoded values that may be shared between the events that hold the same text.
_IMMUTABLE_TYPES: Final = (datetime, Decimal)
_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


class OrjsonTranscoder(JSONTranscoder):
    # The last time stamp tagged, and its tag (read and replaced whole: thread-safe).
    _last_time: tuple[datetime, dict[str, Any]] | None = None
    # The last tagged text read and its value, when immutable (read and replaced whole).
    _last_read: tuple[str, str, Any] | None = None

    def encode(self, obj: Any) -> bytes:
        if type(obj) is dict:
            obj = self._top_level_times_tagged(obj)
        return orjson.dumps(obj, default=self._tagged, option=_OPTIONS)

    def _top_level_times_tagged(self, state: dict[str, Any]) -> dict[str, Any]:
        """Every event's state holds its time stamp at the top: tagged here, in a copy,
        the same way ``_tagged`` would tag it, because orjson calling back into Python
        for it costs several times the rest of the encoding. All events of a command
        share one time stamp object, so the last one tagged is remembered."""
        tagged = state
        for key, value in state.items():
            if type(value) is datetime:
                if tagged is state:
                    tagged = dict(state)
                last = self._last_time
                if last is None or last[0] is not value:
                    last = self._last_time = (value, self._tagged(value))
                tagged[key] = last[1]
        return tagged

    def decode(self, data: bytes) -> Any:
        decoded = orjson.loads(data)
        marks = data.count(_TYPE_MARK)
        if not marks:
            return decoded  # nothing tagged inside: plain JSON values
        if type(decoded) is dict:
            if marks == 1 and (stamp := self._tagged_text(decoded.get(EVENT_TIME_KEY))):
                # The usual event: its time stamp is its one tag.
                decoded[EVENT_TIME_KEY] = self._value_of(*stamp)
                return decoded
            top = self._top_level_tags(decoded)
            if len(top) == marks:
                # Every tag mark of the document is one of these: nothing deeper is
                # tagged (a mark inside a string would be escaped, \"_type_\").
                for key, (name, text) in top.items():
                    decoded[key] = self._value_of(name, text)
                return decoded
        return self._untagged(decoded)

    @staticmethod
    def decode_tagged(data: bytes) -> Any:
        """The document as parsed, its tagged values left as tags (``untag`` turns one
        into its value): for readers that pick a few fields of each event's state and
        build none (``app.audit.log.read_stamps``)."""
        return orjson.loads(data)

    def untag(self, value: Any) -> Any:
        """A value of a ``decode_tagged`` document as ``decode`` reads it, when it is a
        tagged text (a time stamp, …); any other value as it is."""
        tagged = self._tagged_text(value)
        return value if tagged is None else self._value_of(*tagged)

    @staticmethod
    def _tagged_text(value: Any) -> tuple[str, str] | None:
        """(transcoding name, text) when ``value`` is a tagged text (a time stamp, …)."""
        if type(value) is dict and len(value) == 2:
            name, text = value.get(TYPE_KEY), value.get(DATA_KEY)
            if type(name) is str and type(text) is str:
                return name, text
        return None

    @classmethod
    def _top_level_tags(cls, state: dict[str, Any]) -> dict[str, tuple[str, str]]:
        """The top-level values of ``state`` that are tagged texts: key → (transcoding
        name, text)."""
        found = {}
        for key, value in state.items():
            if type(value) is dict and (tagged := cls._tagged_text(value)):
                found[key] = tagged
        return found

    def _value_of(self, name: str, text: str) -> Any:
        last = self._last_read
        if last is not None and last[0] == name and last[1] == text:
            return last[2]
        value = self._transcoding_named(name).decode(text)
        if type(value) in _IMMUTABLE_TYPES:
            self._last_read = (name, text, value)
        return value

    def _transcoding_named(self, name: str) -> Any:
        transcoding = self.names.get(name)
        if transcoding is None:
            raise TranscodingNotRegisteredError(
                f"Data serialized with name {name!r} is not deserializable: register a transcoding"
            )
        return transcoding

    def _tagged(self, obj: Any) -> dict[str, Any]:
        transcoding = self.types.get(type(obj))
        if transcoding is None:
            raise TranscodingNotRegisteredError(
                f"Object of type {type(obj)} is not serializable: register a transcoding"
            )
        return {TYPE_KEY: transcoding.name, DATA_KEY: transcoding.encode(obj)}

    def _untagged(self, value: Any) -> Any:
        """Replace tagged objects by their values, in place (the values were just parsed
        and belong to no one else); only containers are visited."""
        if type(value) is dict:
            if len(value) == 2 and TYPE_KEY in value and DATA_KEY in value:
                transcoding = self._transcoding_named(value[TYPE_KEY])
                return transcoding.decode(self._untagged(value[DATA_KEY]))
            for key, item in value.items():
                if type(item) in _CONTAINER_TYPES:
                    value[key] = self._untagged(item)
        elif type(value) is list:
            for index, item in enumerate(value):
                if type(item) in _CONTAINER_TYPES:
                    value[index] = self._untagged(item)
        return value
