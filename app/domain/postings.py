"""The one fold of postings into an account's four counters.

Every reader that needs an account's counters from its events folds them with ``post``:
the aggregate (``Account.BalanceChanged.apply``), the views (projections/), replay and
explain (app/audit/), the commit tracker of the log reader. Each event says how it
moves the counters (its ``delta()``, a ``BalanceDelta``); nothing re-derives that from
an event's class or fields.

The audit (app/audit/audit.py) keeps its own sums of a transfer's legs on purpose: it is
the cross-check that would catch a bug here.
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

# The counters, named in the order ``Counters`` and every view row keep them.
COUNTER_NAMES: Final = ("debits_posted", "credits_posted", "debits_pending", "credits_pending")


class DerivedBalances:
    """The two figures SPEC.md derives from the counters, defined once for every
    shape that carries the counters (aggregate, deltas, views, replays)."""

    if TYPE_CHECKING:
        debits_posted: int
        credits_posted: int
        debits_pending: int

    @property
    def balance(self) -> int:
        return self.credits_posted - self.debits_posted

    @property
    def available(self) -> int:
        return self.balance - self.debits_pending


@dataclass(frozen=True)
class BalanceDelta(DerivedBalances):
    """How one event moves the four counters. Readers fold these, never re-derive them."""

    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0


class HasCounters(Protocol):
    """Anything that keeps the four counters as attributes (the aggregate, a replayed
    account, ``Counters``)."""

    debits_posted: int
    credits_posted: int
    debits_pending: int
    credits_pending: int


def post(counters: HasCounters, delta: BalanceDelta) -> None:
    """Fold one event's ``delta`` into ``counters``: the one fold."""
    counters.debits_posted += delta.debits_posted
    counters.credits_posted += delta.credits_posted
    counters.debits_pending += delta.debits_pending
    counters.credits_pending += delta.credits_pending


@dataclass(slots=True)
class Counters(DerivedBalances):
    """The four counters on their own, for readers that fold without an aggregate."""

    debits_posted: int = 0
    credits_posted: int = 0
    debits_pending: int = 0
    credits_pending: int = 0

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.debits_posted, self.credits_posted, self.debits_pending, self.credits_pending)

    @property
    def nets_to_zero(self) -> bool:
        """Whether these are one transfer's legs and they balance (debits = credits,
        posted and pending alike)."""
        return (
            self.debits_posted == self.credits_posted
            and self.debits_pending == self.credits_pending
        )
