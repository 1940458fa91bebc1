"""Where a commit ends: recorded in the log by the writer, read by every reader.

A *commit* is one store write: one transaction on SQL, one multi-stream append on
KurrentDB. With the committer (decision 0011) one write may hold several commands,
and its events are ordered by aggregate, so neither a run of equal timestamps nor legs
netting to zero can tell where it ends. The writer therefore says so: every event of a
write carries ``commit_id`` (the same for all of them) and the last one also
``commit_last``. Both are envelope fields, like the timestamp: set on the events just
before the write, stored with them, and left out of the hash chain (``chain``).

Events written before these marks existed carry neither: ``ends_commit`` answers None
for them, and each reader falls back to its earlier rule (decision 0016).
"""

import os
import random
from collections.abc import Sequence
from typing import Final

COMMIT_ID: Final = "commit_id"
COMMIT_LAST: Final = "commit_last"


# The commit ids' own generator, seeded from the system's entropy once, and again in a
# forked child (which would otherwise draw the parent's sequence): not the ``random``
# module's shared one, which anything in the process may reseed (a test framework does,
# per example), and two commits named alike would be read as one (``commit_end``).
_COMMIT_IDS: Final = random.Random()
os.register_at_fork(after_in_child=_COMMIT_IDS.seed)


def new_commit_id() -> str:
    """128 random bits in hex (as ``uuid4().hex`` gave) from the commit ids' generator:
    ``uuid4`` reads the operating system's entropy, a system call that lets go of the
    interpreter lock, and the writer thread then waited to take it back from the event
    loop once per write (a tenth of its samples under a hot account's load). An id to
    tell one commit from the next, not a secret."""
    return f"{_COMMIT_IDS.getrandbits(128):032x}"


def mark_commit(events: Sequence[object]) -> str:
    """Mark the events of one store write (in their write order) as one commit."""
    assert events, "a commit has at least one event"
    commit_id = new_commit_id()
    for event in events:
        # Straight into the (frozen) event's attributes: object.__setattr__ would look
        # each name up along the event class's long MRO first.
        state = vars(event)
        state[COMMIT_ID] = commit_id
        state[COMMIT_LAST] = False
    vars(events[-1])[COMMIT_LAST] = True
    return commit_id


def commit_of(event: object) -> str | None:
    """The id of the commit the event belongs to (None: written before the marks)."""
    value = getattr(event, COMMIT_ID, None)
    return value if isinstance(value, str) else None


def ends_commit(event: object) -> bool | None:
    """Whether the event is its commit's last (None: written before the marks)."""
    if commit_of(event) is None:
        return None
    return bool(getattr(event, COMMIT_LAST, False))
