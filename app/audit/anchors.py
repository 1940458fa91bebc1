"""Anchored history (SPEC invariant 8): a ledger-wide running digest over the log.

``digest(position)`` is a SHA-256 chain over every event of the log in position order
(its position, stream, version, type and stored bytes). An *anchor* is the head of
that chain at some moment (position, digest), kept by the operator somewhere the store
cannot reach (``ledger anchor --append FILE``). Later, ``ledger audit --anchors FILE``
recomputes the chain from the log and proves that the log still extends every anchor:
an edited event changes every digest from its position on, a removed one too, and a
cut tail leaves an anchor beyond the log's head. Each is reported with the first
position that disagrees, as precisely as the reference points allow: the anchors, and
the digest checkpoints the projection worker keeps as it goes (see
``projections/digest.py``), which are themselves evidence of the log as it was.

The per-stream hash chains (``app/domain/chain.py``) catch an edit within a stream; this
digest catches what they cannot: the newest events of streams removed together.
"""

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from eventsourcing.persistence import ApplicationRecorder, Notification

GENESIS: Final = "0" * 64
PAGE_SIZE: Final = 1000
POSITION_BYTES: Final = 16
VERSION_BYTES: Final = 8


def next_digest(previous: str, notification: Notification) -> str:
    """The chain's next link: the previous digest and everything the event is."""
    return _next_link(bytes.fromhex(previous), notification, str(notification.originator_id)).hex()


def _next_link(previous: bytes, notification: Notification, stream: str) -> bytes:
    """``next_digest`` on the digest's bytes (``stream``: the event's stream id as text)."""
    hasher = hashlib.sha256(previous)
    hasher.update(
        notification.id.to_bytes(POSITION_BYTES, "big")
        + stream.encode()
        + notification.originator_version.to_bytes(VERSION_BYTES, "big", signed=True)
        + notification.topic.encode()
        + b"\0"
        + len(notification.state).to_bytes(VERSION_BYTES, "big")
    )
    hasher.update(notification.state)
    return hasher.digest()


@dataclass(frozen=True)
class Anchor:
    """The chain's head at ``position`` (0 and GENESIS: an empty log)."""

    position: int
    digest: str
    events: int
    taken_at: str = ""

    def line(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


def notifications_after(
    recorder: ApplicationRecorder, position: int, page_size: int = PAGE_SIZE
) -> Iterator[Notification]:
    """Every event after ``position``, in position order, a page at a time."""
    while True:
        page = recorder.select_notifications(position, page_size, inclusive_of_start=False)
        yield from page
        if len(page) < page_size:
            return
        position = page[-1].id


def extend(
    start: Anchor,
    notifications: Iterable[Notification],
    on_link: Callable[[Anchor], None] | None = None,
) -> Anchor:
    """Carry the chain from ``start`` over ``notifications``, reporting every link to
    ``on_link`` (when given). The digest is carried as bytes, and each stream's id is
    written out as text once per call (a stream's events recur)."""
    digest, events, position = bytes.fromhex(start.digest), start.events, start.position
    streams: dict[object, str] = {}
    for notification in notifications:
        stream_id = notification.originator_id
        stream = streams.get(stream_id)
        if stream is None:
            stream = streams[stream_id] = str(stream_id)
        digest = _next_link(digest, notification, stream)
        events += 1
        position = notification.id
        if on_link is not None:
            on_link(Anchor(position, digest.hex(), events))
    return Anchor(position, digest.hex() if events != start.events else start.digest, events)


def take_anchor(recorder: ApplicationRecorder, start: Anchor | None = None) -> Anchor:
    """The head of the chain now, from ``start`` (a checkpoint) or from the genesis."""
    origin = start or Anchor(0, GENESIS, 0)
    head = extend(origin, notifications_after(recorder, origin.position))
    return Anchor(head.position, head.digest, head.events, datetime.now(tz=UTC).isoformat())


def append_anchor(path: Path, anchor: Anchor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(anchor.line() + "\n")


class AnchorFileError(ValueError):
    """The anchors file cannot be read as anchors."""


def read_anchors(path: Path) -> list[Anchor]:
    anchors = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
            anchors.append(
                Anchor(
                    int(fields["position"]),
                    str(fields["digest"]),
                    int(fields["events"]),
                    str(fields.get("taken_at", "")),
                )
            )
        except (ValueError, KeyError, TypeError) as error:
            raise AnchorFileError(f"{path}:{number}: not an anchor ({error})") from None
    return anchors


@dataclass(frozen=True)
class AnchorBreak:
    """Where the log stops extending a reference point (an anchor or a checkpoint)."""

    kind: str  # "cut_tail", "missing_event" or "digest_mismatch"
    position: int
    # The last reference point the log still agrees with (0: none).
    agrees_until: int
    detail: str


def check_against(
    recorder: ApplicationRecorder, references: Iterable[Anchor]
) -> AnchorBreak | None:
    """Recompute the chain from the genesis and compare it with every reference point,
    in position order; the first disagreement, or None when the log extends them all."""
    pending = sorted(references, key=lambda anchor: (anchor.position, anchor.events))
    pending = [reference for reference in pending if reference.position > 0]
    if not pending:
        return None
    agrees_until = 0
    index = 0
    head = Anchor(0, GENESIS, 0)
    for notification in notifications_after(recorder, 0):
        head = extend(head, [notification])
        while index < len(pending) and pending[index].position <= head.position:
            reference = pending[index]
            if reference.position < head.position:
                return AnchorBreak(
                    "missing_event",
                    reference.position,
                    agrees_until,
                    f"the log has no event at position {reference.position} any more "
                    f"(removed); the chain agreed up to position {agrees_until}",
                )
            if reference.digest != head.digest or reference.events != head.events:
                return AnchorBreak(
                    "digest_mismatch",
                    reference.position,
                    agrees_until,
                    f"the log's digest at position {reference.position} differs from the "
                    f"one recorded then: an event at a position after {agrees_until} and up "
                    f"to {reference.position} was edited, removed or inserted",
                )
            agrees_until = reference.position
            index += 1
    if index < len(pending):
        reference = pending[index]
        return AnchorBreak(
            "cut_tail",
            reference.position,
            agrees_until,
            f"the log ends at position {head.position}, before position "
            f"{reference.position} that was recorded: its tail was cut",
        )
    return None
