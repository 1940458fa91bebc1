"""The store's write lock, held across a command's read and its write (decision 0018).

Writers of several processes on one stream race optimistically: each reads, runs the
command and writes with an expected version, and the loser reloads and runs again. A
process that writes a hot stream in a tight loop always has it cached and up to date,
so it can win every race against a command that must reload first: that command
starves. So a group that lost a race, or touches a stream other processes are writing,
takes the store's write lock before it reads, and nobody can write between its read and
its write.

A recorder that can do this offers ``write_lock``: inside the block the calling thread
holds the store's write lock (other writers queue behind it); the first
``insert_events`` of that thread records in the locked transaction and commits it, which
releases the lock. Leaving the block without a write releases it without writing.
Reads inside the block go through the recorder's other connections as usual: they see
every committed write, and no write can commit while the lock is held.
"""

from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable
from uuid import UUID

from eventsourcing.persistence import StoredEvent


@runtime_checkable
class WriteLocking(Protocol):
    def write_lock(
        self, timeout_seconds: float, after: Mapping[UUID, int] | None = None
    ) -> AbstractContextManager[bool]:
        """Hold the store's write lock for the next write of this thread; the block gets
        False (and nothing is held) when the lock was not free within the timeout.
        ``after``: streams (and the versions cached of them) whose later events the
        holder reads first; a store whose reads cost a round trip reads them with the
        lock (``app.persistence.streams.events_after`` then answers them at once)."""
        ...


@runtime_checkable
class FollowsLog(Protocol):
    """A recorder whose writes bring back what other writers committed before them since
    the calling thread's previous write (decision 0027): a writer that applies it to its
    cache needs no read of its own to catch up with other processes."""

    def follows_log(self) -> bool:
        """Whether this thread has written (its next write brings back what came since)."""
        ...

    def others_written(self) -> list[StoredEvent] | None:
        """What others committed before this thread's writes since it last asked, in log
        order; None when more came than a write brings back (track was lost)."""
        ...
