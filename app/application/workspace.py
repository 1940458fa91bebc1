"""The aggregates one group write loads, changes and records together.

The committer's writer runs the commands of a group one after another on one
``Workspace``: a later command sees what an earlier one did (a hot account is debited
by each in turn, without a conflict), and all their events go to the store in one
write. Each command runs in its own scope: the workspace notes every stream the command
reads and, before the command first touches an aggregate that an earlier command of the
group changed, an image of that aggregate's state. A command that is rejected is rolled
back to those images, and any other aggregate it changed is dropped (the store still
holds it as the group first read it: it is read again when next needed), so it leaves
nothing behind for its neighbours, however far it got. A lone command (a batch) takes
no images at all.

Images copy the aggregate's attributes, its containers one level deep and any other
object whole (``copy.deepcopy``: a mutable state class such as the lot book gives itself
a cheap ``__deepcopy__``). So containers in aggregate state must hold immutable values
(events are immutable); ``tests/unit/test_workspace.py`` checks this for every aggregate.
"""

import copy
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import is_dataclass
from datetime import datetime
from typing import Any, Final, Protocol, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from app.domain.account import Account
from app.domain.errors import AccountNotFoundError, TransferNotFoundError
from app.domain.transfer import Transfer
from app.domain.values import account_uuid, transfer_uuid

A = TypeVar("A", bound=Aggregate)

_CONTAINERS: Final = (dict, list, set)
_IMMUTABLE_TYPES: Final = frozenset(
    {str, int, bool, float, type(None), bytes, datetime, UUID, tuple, frozenset}
)


class Written:
    """Where a group write landed: each recorded event's log position."""

    def __init__(self, events: Sequence[Any] = (), positions: Sequence[int] | None = None) -> None:
        """``positions``: the log position of each of ``events``, in order (None when the
        recorder told none)."""
        assert not positions or len(positions) == len(events), "one position per event"
        self._events = events if positions else ()
        self._written_positions: Sequence[int] = positions or ()
        # Indexes built on first use (a batch of 1,000 transfers writes 3,000 events and
        # asks for 1,000 positions, each of an event it holds): by the event object
        # itself (its identity, alive as long as this holds the events), and by stream.
        self._by_event: dict[int, int] | None = None
        self._by_stream: dict[tuple[int, int], int] | None = None
        self._last: dict[int, int] | None = None

    @property
    def commit(self) -> int:
        """The end of the commit: the last position written."""
        assert self._written_positions, "a write that recorded nothing has no position"
        return max(self._written_positions)

    def position_of_event(self, event: object) -> int:
        """The position of one of the written events (that very object)."""
        by_event = self._by_event
        if by_event is None:
            by_event = self._by_event = dict(
                zip(map(id, self._events), self._written_positions, strict=True)
            )
        return by_event[id(event)]

    def position_of(self, originator_id: UUID, version: int | None = None) -> int:
        """The position of one event (by default the stream's last event in this write)."""
        if self._last is None or self._by_stream is None:
            # Keyed by the stream id's integer: a UUID hashes in Python, an int in C.
            streams = [event.originator_id.int for event in self._events]
            versions = [event.originator_version for event in self._events]
            positions = self._written_positions
            self._by_stream = dict(zip(zip(streams, versions, strict=True), positions, strict=True))
            self._last = dict(zip(streams, positions, strict=True))  # the later wins: the last
        if version is None:
            return self._last[originator_id.int]
        return self._by_stream[originator_id.int, version]


Finish = Callable[[Written], Any]


class WriterCache:
    """The writer's own aggregates, trusted and never copied (the expected-version check
    of each write catches a stale entry). Accounts and transfers are kept in separate
    least-recently-used caches: a stream of new transfers, each written once and seldom
    read again, would otherwise push out the accounts that every transfer needs, and
    each group would reload them from the store. Only the writer thread uses it, so it
    takes no lock (the library's ``LRUCache`` takes one per call, and a batch of 1,000
    transfers makes some 3,000 calls). Keyed by each stream id's integer: a ``UUID``
    hashes in Python (a call per look-up, several per transfer), an ``int`` in C."""

    def __init__(self, maxsize: int) -> None:
        self._maxsize = maxsize
        self._accounts: OrderedDict[int, Aggregate] = OrderedDict()
        self._others: OrderedDict[int, Aggregate] = OrderedDict()

    def __contains__(self, originator_id: UUID) -> bool:
        key = originator_id.int
        return key in self._accounts or key in self._others

    def get(self, originator_id: UUID) -> Aggregate:
        """The cached aggregate, now the most recently used (KeyError when not cached)."""
        key = originator_id.int
        cache = self._accounts
        aggregate = cache.get(key)
        if aggregate is None:
            cache = self._others
            aggregate = cache[key]
        cache.move_to_end(key)
        return aggregate

    def uncached(self, originator_ids: Iterable[UUID]) -> list[UUID]:
        """Those of these streams that are not cached, in order (one loop)."""
        accounts, others = self._accounts, self._others
        return [i for i in originator_ids if (k := i.int) not in accounts and k not in others]

    def put(self, aggregate: Aggregate) -> None:
        cache = self._accounts if isinstance(aggregate, Account) else self._others
        key = aggregate.id.int
        cache[key] = aggregate
        cache.move_to_end(key)
        if len(cache) > self._maxsize:
            cache.popitem(last=False)  # the least recently used

    def put_all(self, aggregates: Sequence[Aggregate]) -> None:
        """``put`` of each of these aggregates, in one loop (the least recently used are
        let go once, at the end: the same entries stay as with one ``put`` at a time)."""
        for aggregate in aggregates:
            cache = self._accounts if isinstance(aggregate, Account) else self._others
            key = aggregate.id.int
            cache[key] = aggregate
            cache.move_to_end(key)
        for cache in (self._accounts, self._others):
            while len(cache) > self._maxsize:
                cache.popitem(last=False)  # the least recently used

    def evict(self, originator_id: UUID) -> None:
        key = originator_id.int
        self._accounts.pop(key, None)
        self._others.pop(key, None)


class Loader(Protocol):
    """Where a workspace finds aggregates it does not hold yet (the ledger)."""

    def load_aggregate(self, originator_id: UUID) -> Aggregate | None: ...

    def evict(self, originator_id: UUID) -> None:
        """Forget a cached aggregate (the next load reads the store)."""

    def absent_streams(self, originator_ids: list[UUID]) -> set[UUID] | None: ...

    def presumed_absent(self, originator_ids: list[UUID]) -> set[UUID]: ...

    def load_aggregates(self, originator_ids: list[UUID]) -> dict[UUID, Aggregate]: ...


class Workspace:
    """A group's aggregates, with per-command read sets and rollback (module docstring)."""

    def __init__(self, loader: Loader, *, keep_bases: bool = False) -> None:
        """``keep_bases``: image each stored aggregate as the group first reads it, so
        that a failed write can put them all back (``restore_bases``) instead of having
        them read again from the store."""
        self._loader = loader
        self.accounts: dict[str, Account] = {}
        self.transfers: dict[str, Transfer] = {}
        self._absent: set[UUID] = set()
        # Streams taken as absent without asking the store (new ids): if one exists after
        # all, the store's unique key refuses the write and the ledger runs it again.
        self.presumed: set[UUID] = set()
        # Every stream read, at the version the store held when the group first read it
        # (None: absent). A conflict or a rejection is judged against these.
        self.base_versions: dict[UUID, int | None] = {}
        # Aggregates an earlier command of the group may have changed (not in the store).
        # This and ``_undo`` are keyed by each stream id's integer (hashed in C; a
        # ``UUID`` hashes in Python), being the workspace's own.
        self._changed: set[int] = set()
        # The current command's scope: what it read, and how to undo each aggregate it
        # touched: an image (one an earlier command changed), its version when first
        # touched (one as the store holds it), or None (one it created).
        self.reads: set[UUID] = set()
        self._undo: dict[int, tuple[Aggregate, dict[str, Any] | int | None]] = {}
        # Every aggregate the group's kept commands created, by object identity.
        self._new: dict[int, Aggregate] = {}
        # With keep_bases: each stored aggregate as the group first read it, and its image.
        self._bases: dict[UUID, tuple[Aggregate, dict[str, Any]]] | None = (
            {} if keep_bases else None
        )

    # Command scopes ----------------------------------------------------------------------

    def begin(self) -> None:
        self._changed.update(self._undo)
        self.reads = set()
        self._undo = {}

    def rollback(self) -> None:
        """Undo everything the current command did (it was rejected). An aggregate no
        earlier command changed is as the store holds it: when this command changed it
        (its version moved), it is dropped and read again when next needed, instead of
        being imaged on every first touch."""
        for aggregate, undo in self._undo.values():
            if undo is None:
                self._forget(aggregate)
            elif isinstance(undo, int):
                if aggregate.version != undo:
                    self._drop(aggregate)
            else:
                restore_image(aggregate, undo)
        self._undo = {}

    def _touch(self, aggregate: Aggregate) -> None:
        originator_id = aggregate.id
        self.reads.add(originator_id)
        undo = self._undo
        key = originator_id.int
        if key not in undo:
            changed = key in self._changed
            undo[key] = (aggregate, image_of(aggregate) if changed else aggregate.version)
        bases = self._bases
        if bases is not None and originator_id not in bases and id(aggregate) not in self._new:
            # The group's first touch: no command has changed it yet.
            bases[originator_id] = (aggregate, image_of(aggregate))

    def restore_bases(self) -> set[UUID]:
        """Put every aggregate imaged by ``keep_bases`` back as the group first read it
        (its write failed); returns their ids. Others it changed are ahead of the store."""
        if self._bases is None:
            return set()
        for aggregate, image in self._bases.values():
            restore_image(aggregate, image)
        return set(self._bases)

    def _drop(self, aggregate: Aggregate) -> None:
        """Let go of a held aggregate that still exists in the store as first read."""
        if isinstance(aggregate, Account):
            del self.accounts[aggregate.account_id]
        elif isinstance(aggregate, Transfer):
            del self.transfers[aggregate.transfer_id]
        self._loader.evict(aggregate.id)

    def _forget(self, aggregate: Aggregate) -> None:
        self._new.pop(id(aggregate), None)
        if isinstance(aggregate, Account):
            del self.accounts[aggregate.account_id]
        elif isinstance(aggregate, Transfer):
            del self.transfers[aggregate.transfer_id]
        self._absent.add(aggregate.id)

    # Reads -------------------------------------------------------------------------------

    def prefetch(
        self,
        account_ids: Iterable[str],
        transfer_ids: Iterable[str],
        new_transfer_ids: Iterable[str] = (),
    ) -> None:
        """Load what a group will read in as few store calls as the backend allows:
        accounts in bulk, and which of ``transfer_ids`` are absent. ``new_transfer_ids``
        (ids commands create, their idempotency keys) are taken as absent unless the
        loader knows better: no query, the store's unique key is the check."""
        accounts = [account_uuid(i) for i in dict.fromkeys(account_ids) if i not in self.accounts]
        for aggregate in self._loader.load_aggregates(accounts).values():
            if isinstance(aggregate, Account):
                self._hold(aggregate)
        new_ids = dict.fromkeys(new_transfer_ids)
        new = [transfer_uuid(i) for i in new_ids if i not in self.transfers]
        presumed = self._loader.presumed_absent(new)
        self.presumed |= presumed
        # The rest are read: new ids not presumed absent, and the other transfers.
        unknown = [i for i in new if i not in presumed] if len(presumed) < len(new) else []
        unknown += [
            transfer_uuid(i)
            for i in dict.fromkeys(transfer_ids)
            if i not in self.transfers and i not in new_ids
        ]
        absent = self._loader.absent_streams(unknown)
        found = presumed | absent if absent else presumed
        # Set to set and set to dict: each id's hash is the one the set holds (a UUID
        # hashes in Python), and base versions already noted are kept.
        self._absent |= found
        self.base_versions.update(dict.fromkeys(found.difference(self.base_versions)))

    def _hold(self, aggregate: Aggregate) -> None:
        if isinstance(aggregate, Account):
            self.accounts[aggregate.account_id] = aggregate
        elif isinstance(aggregate, Transfer):
            self.transfers[aggregate.transfer_id] = aggregate
        self.base_versions.setdefault(aggregate.id, aggregate.version)

    def _find(self, originator_id: UUID, held: Aggregate | None) -> Aggregate | None:
        if held is None and originator_id not in self._absent:
            held = self._loader.load_aggregate(originator_id)
            if held is None:
                self._absent.add(originator_id)
                self.base_versions.setdefault(originator_id, None)
            else:
                self._hold(held)
        if held is None:
            self.reads.add(originator_id)
            return None
        self._touch(held)
        return held

    def find_account(self, account_id: str) -> Account | None:
        found = self._find(account_uuid(account_id), self.accounts.get(account_id))
        assert found is None or isinstance(found, Account)
        return found

    def account(self, account_id: str) -> Account:
        account = self.find_account(account_id)
        if account is None:
            raise AccountNotFoundError(
                f"account {account_id} does not exist", account_id=account_id
            )
        return account

    def find_transfer(self, transfer_id: str) -> Transfer | None:
        found = self._find(transfer_uuid(transfer_id), self.transfers.get(transfer_id))
        assert found is None or isinstance(found, Transfer)
        return found

    def transfer(self, transfer_id: str) -> Transfer:
        transfer = self.find_transfer(transfer_id)
        if transfer is None:
            raise TransferNotFoundError(
                f"transfer {transfer_id} does not exist", transfer_id=transfer_id
            )
        return transfer

    # Writes ------------------------------------------------------------------------------

    def add(self, aggregate: A) -> A:
        """A new aggregate of the current command (its stream must not exist yet)."""
        originator_id = aggregate.id
        self._absent.discard(originator_id)
        self.base_versions.setdefault(originator_id, None)
        self._hold(aggregate)
        self.reads.add(originator_id)
        self._undo[originator_id.int] = (aggregate, None)
        self._new[id(aggregate)] = aggregate
        return aggregate

    def all_absent(self, originator_ids: set[UUID]) -> bool:
        """Whether each of these streams is known to be absent (presumed or read), held
        by no one: then the current command has read them all, as ``find_transfer`` of
        each would have (False: nothing noted, read them one by one)."""
        if not self._absent.issuperset(originator_ids):
            return False
        self.reads |= originator_ids
        return True

    def is_absent(self, originator_id: UUID) -> bool:
        """Whether this stream is known to be absent (presumed or read), held by no one:
        then the current command has read it, as ``find_transfer`` would have (False:
        nothing noted)."""
        if originator_id not in self._absent:
            return False
        self.reads.add(originator_id)
        return True

    def add_transfers(self, transfers: Sequence[Transfer], originator_ids: set[UUID]) -> None:
        """``add`` of each of these new transfers, in one loop (an atomic batch's);
        ``originator_ids``: their stream ids, absent (``all_absent``)."""
        # Set to set and set to dict, where each id's hash is the one the set holds.
        self._absent -= originator_ids
        self.base_versions.update(dict.fromkeys(originator_ids.difference(self.base_versions)))
        self.reads |= originator_ids
        held, undo, new = self.transfers, self._undo, self._new
        for transfer in transfers:
            held[transfer.transfer_id] = transfer
            undo[transfer.id.int] = (transfer, None)
            new[id(transfer)] = transfer

    def created(self) -> list[Aggregate]:
        """The aggregates the group created (those of rejected commands left out)."""
        return list(self._new.values())

    def aggregates(self) -> list[Aggregate]:
        held: list[Aggregate] = list(self.accounts.values())
        held.extend(self.transfers.values())
        return held

    def collect_events(self) -> list[Any]:
        events: list[Any] = []
        for aggregate in self.aggregates():
            events.extend(aggregate.collect_events())
        return events


def image_of(aggregate: Aggregate) -> dict[str, Any]:
    """The aggregate's state, for ``restore_image`` to put back (module docstring)."""
    image = vars(aggregate).copy()  # immutable values are shared, not copied
    for key, value in image.items():
        if type(value) not in _IMMUTABLE_TYPES:
            image[key] = _copied(value)
    return image


def restore_image(aggregate: Aggregate, image: dict[str, Any]) -> None:
    """Put the aggregate back as ``image_of`` saw it."""
    state = vars(aggregate)
    state.clear()
    state.update(image)


def _copied(value: Any) -> Any:
    if isinstance(value, _CONTAINERS):
        return value.copy()
    # Any other object: a deep copy (give a mutable state class a cheap __deepcopy__,
    # called here directly: copy.deepcopy's memo bookkeeping would cost more than it).
    own_deepcopy = getattr(type(value), "__deepcopy__", None)
    if own_deepcopy is not None:
        return own_deepcopy(value, {})
    return copy.deepcopy(value)


def immutable_state_problems(aggregate: Aggregate) -> list[str]:
    """Attributes an undo image could not restore: containers holding mutable values
    (the image copies containers one level deep; other objects it deep-copies)."""
    problems = []
    for key, value in vars(aggregate).items():
        if key == "_pending_events":
            continue
        items = _container_items(value)
        if items is not None and not all(_is_immutable(item) for item in items):
            problems.append(key)
    return problems


def _container_items(value: Any) -> list[Any] | None:
    if isinstance(value, dict):
        return [*value.keys(), *value.values()]
    if isinstance(value, list | set | tuple | frozenset):
        return list(value)
    return None


def _is_immutable(value: Any) -> bool:
    if isinstance(value, tuple | frozenset):
        return all(_is_immutable(item) for item in value)
    if isinstance(value, dict | list | set):
        return False
    try:
        hash(value)
    except TypeError:
        return False
    if is_dataclass(value):
        return bool(getattr(value, "__dataclass_params__").frozen)  # noqa: B009
    return not hasattr(value, "__dict__")
