"""The wire form between the API workers of ``serve --workers N`` and their writer process.

A message is a frame: its length (4 bytes, big-endian) and a pickle of a list. From an
API worker the list holds calls, ``(call id, deadline, orders)``: the orders
(``app.application.ledger.Order``) of one ``submit_all``, queued together by the writer,
with their caller's deadline. From the writer it holds answers, ``(call id,
answers)``: one result or error per order, in order, or one error for the whole call
when it could not be queued (``overloaded``) or the writer failed on it.

Pickle, not JSON: the commands, their outcomes and the ledger's errors (with their codes
and context) come back as the same types, with no second description of each to keep in
step with the first (tests/unit/test_writer_wire.py sends every kind both ways). Only
this server's processes can reach the socket (a directory of mode 0700, made by the
supervisor), and loading takes only the value classes of the commands, their outcomes
and the ledger's errors, the one function commands are rebuilt by, and a few of the
standard library's value types, each by its exact name (``_Loader``): a frame cannot
name any other callable.
A store fault in the writer's commit travels as the ledger's answer for it
(``storage_full``, ``store_unavailable``), as the API maps it in process; an answer that
is not a domain error (a bug in the writer) travels as ``WriterFaultError``, which the
API answers as it answers its own bugs (500).
"""

import dataclasses
import importlib
import io
import math
import pickle
import struct
from collections.abc import Sequence
from typing import Any, Final

from app.domain.errors import LedgerError
from app.persistence.faults import store_fault

PICKLE_PROTOCOL: Final = pickle.HIGHEST_PROTOCOL
HEADER: Final = struct.Struct(">I")
# A frame larger than this is refused as corrupt (an atomic batch of the largest size,
# its outcome included, is some hundreds of kilobytes).
FRAME_BYTES_MAX: Final = 256 * 1024 * 1024
# The standard library's value types a frame may name.
_STANDARD_TYPES: Final = frozenset(
    {
        ("datetime", "datetime"),
        ("datetime", "timezone"),
        ("datetime", "timedelta"),
        ("datetime", "date"),
        ("uuid", "UUID"),
        ("builtins", "frozenset"),
        ("builtins", "set"),
    }
)
# The modules whose value classes a frame may name: the commands, their outcomes, the
# lots they move, the ledger's errors and this module's own.
_VALUE_MODULES: Final = (
    "app.application.commands",
    "app.application.views",
    "app.domain.lots",
    "app.domain.errors",
    "app.writer.wire",
)

# What pickling a call or an answer that holds something unpicklable raises (a bug).
UNFRAMABLE: Final = (pickle.PicklingError, TypeError, AttributeError)

# (call id, its caller's deadline as a ``time.monotonic`` time, orders)
Call = tuple[int, float, Sequence[Any]]
# (call id, per order a result or an error; or one error for the whole call)
Answer = tuple[int, "list[Any] | BaseException"]


class WireError(ValueError):
    """A frame that is not this wire form (corrupt, too large, naming a foreign class)."""


class WriterFaultError(RuntimeError):
    """The writer met an error that is not one of the ledger's answers (a bug)."""


def frame(items: Sequence[Any]) -> bytes:
    """One message of ``items`` (calls or answers)."""
    body = pickle.dumps(items, PICKLE_PROTOCOL)
    return HEADER.pack(len(body)) + body


def portable(answer: Any) -> Any:
    """An answer as it may travel: a store fault as the ledger's answer for it
    (``storage_full``, ``store_unavailable``: ``store_fault``, as the API maps it in
    process), and any other error that is not the ledger's own as a ``WriterFaultError``
    saying what it was."""
    if isinstance(answer, BaseException) and not isinstance(answer, LedgerError):
        fault = store_fault(answer)
        if fault is not None:
            return fault
        return WriterFaultError(f"the writer process failed: {answer!r}")
    return answer


def _value_classes() -> frozenset[tuple[str, str]]:
    """Each value class of ``_VALUE_MODULES`` (a dataclass or an error, defined there)
    and the one function a command is rebuilt by (``_rebuilt``, which builds only
    commands)."""
    names = {("app.application.commands", "_rebuilt")}
    for module_name in _VALUE_MODULES:
        module = importlib.import_module(module_name)
        for name, value in vars(module).items():
            if (
                isinstance(value, type)
                and value.__module__ == module_name
                and (dataclasses.is_dataclass(value) or issubclass(value, Exception))
            ):
                names.add((module_name, name))
    return frozenset(names)


class _Loader(pickle.Unpickler):
    """Loads only the names of ``_ALLOWED``, each exactly (protocol 4 would resolve a
    dotted name such as ``os.system`` through any module's globals). Each is resolved
    once, at import, not looked up in its module again for every frame."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[module, name]
        except KeyError:
            raise WireError(
                f"a frame named {module}.{name}, which the wire form never carries"
            ) from None


def _resolved(names: frozenset[tuple[str, str]]) -> dict[tuple[str, str], Any]:
    return {
        (module, name): getattr(importlib.import_module(module), name) for module, name in names
    }


_ALLOWED: Final = _resolved(_value_classes() | _STANDARD_TYPES)


def unframe(body: bytes) -> list[Any]:
    try:
        items = _Loader(io.BytesIO(body)).load()
    except WireError:
        raise
    except Exception as error:  # noqa: BLE001  # whatever a corrupt frame makes a loader or an allowed constructor raise
        raise WireError(f"an unreadable frame: {error!r}") from None
    if not isinstance(items, list):
        raise WireError("a frame that is not a list")
    return items


def checked_calls(messages: list[list[Any]]) -> list[Call]:
    """Every call of ``messages``, each checked to be a call's shape (an id, a finite
    deadline, a sequence of ``(builder name, argument)`` orders) before any is taken;
    ``WireError`` otherwise, so that one malformed frame is refused whole rather than
    failing half-way through its message (or, with a NaN deadline, never expiring)."""
    calls: list[Call] = []
    for message in messages:
        for call in message:
            if not (
                isinstance(call, tuple)
                and len(call) == 3  # (id, deadline, orders)
                and type(call[0]) is int
                and type(call[1]) is float
                and math.isfinite(call[1])
                and isinstance(call[2], list | tuple)
                and all(_is_order(order) for order in call[2])
            ):
                raise WireError(f"a frame holding something that is not a call: {call!r:.200}")
            calls.append(call)
    return calls


def _is_order(order: Any) -> bool:
    """Whether ``order`` has an ``Order``'s shape: ``(builder name, argument)``."""
    return isinstance(order, tuple) and len(order) == 2 and type(order[0]) is str


class Frames:
    """Splits a byte stream into its messages (each a list of calls or answers)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[list[Any]]:
        buffer = self._buffer
        buffer += data
        messages: list[list[Any]] = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, start)
            if length > FRAME_BYTES_MAX:
                raise WireError(f"a frame of {length} bytes")
            end = start + HEADER.size + length
            if len(buffer) < end:
                break
            messages.append(unframe(bytes(buffer[start + HEADER.size : end])))
            start = end
        del buffer[:start]
        return messages
