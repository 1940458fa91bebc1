"""The ledger-wide digest carried in bytes, a stream's id written out once per call, and
no anchor built per link unless asked: the same chain, link for link, as its definition
(``next_digest`` step by step, the digest as hex text between links)."""

import hashlib
from uuid import UUID

from eventsourcing.persistence import Notification
from hypothesis import given
from hypothesis import strategies as st

from app.audit.anchors import GENESIS, Anchor, extend, next_digest


def defined_link(previous: str, notification: Notification) -> str:
    """The chain's link as anchors have always been computed (SPEC invariant 8)."""
    hasher = hashlib.sha256(bytes.fromhex(previous))
    hasher.update(notification.id.to_bytes(16, "big"))
    hasher.update(str(notification.originator_id).encode())
    hasher.update(notification.originator_version.to_bytes(8, "big", signed=True))
    hasher.update(notification.topic.encode() + b"\0")
    hasher.update(len(notification.state).to_bytes(8, "big"))
    hasher.update(notification.state)
    return hasher.hexdigest()


streams = st.lists(st.uuids(), min_size=1, max_size=4)


@st.composite
def logs(draw: st.DrawFn) -> list[Notification]:
    ids: list[UUID] = draw(streams)
    gaps = draw(st.lists(st.integers(1, 1_000), max_size=30))
    position = draw(st.integers(0, 10**6))
    notifications = []
    for gap in gaps:
        position += gap
        notifications.append(
            Notification(
                id=position,
                originator_id=draw(st.sampled_from(ids)),
                originator_version=draw(st.integers(-(2**63), 2**63 - 1)),
                topic=draw(st.text(max_size=20)),
                state=draw(st.binary(max_size=64)),
            )
        )
    return notifications


@given(logs(), st.integers(0, 30))
def test_the_chain_carried_over_a_log_is_its_definition_link_for_link(
    log: list[Notification], split: int
) -> None:
    start = Anchor(0, GENESIS, 0)
    links: list[Anchor] = []
    head = extend(extend(start, log[:split], links.append), log[split:], links.append)

    expected: list[Anchor] = []
    digest = GENESIS
    for count, notification in enumerate(log, start=1):
        digest = defined_link(digest, notification)
        assert next_digest(expected[-1].digest if expected else GENESIS, notification) == digest
        expected.append(Anchor(notification.id, digest, count))
    assert links == expected
    assert head == (expected[-1] if expected else start)
    assert extend(start, log) == head  # without a link reporter: the same head
