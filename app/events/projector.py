"""The feed projector: reads the ledger's log in position order and appends the public
events it implies to the feed, exactly once (the checkpoint moves in the same
transaction as the events it covers, and only from the value it was read at).

A command's events sit together in the log, the accounts' before the transfer's, so
the balances an account had just after a transfer are known when its balance event
passes and are handed to the transfer's public event (``effects``); when a batch of
notifications ends between the two, they wait in a table. Balance monitors are
evaluated on the same balance events, so each crossing is emitted once.
"""

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from itertools import islice
from typing import Any, Final

import orjson
import structlog
from eventsourcing.persistence import Notification
from pydantic_core import to_jsonable_python

from app.api.schemas import transfer_document
from app.application.ledger import Ledger
from app.application.views import TransferView
from app.domain.account import Account, default_account_type
from app.domain.transfer import Transfer, initial_fate
from app.events import schema
from app.events.database import Cursor, Database
from app.events.store import FeedStore, Head, append_events, lock_head
from app.events.worker import ThreadWorker
from app.persistence.decoding import DecodedBatches, StreamTexts, domain_event_reader

log = structlog.get_logger(__name__)

# An account's stream id as the feed keys its state (``str``), written out once per
# account and kept, by every projector of the process (the text of an id never changes).
account_text: Final = StreamTexts().of

PROJECTOR_BATCH_MAX: Final = 500
# The largest step of a projector that keeps finding full batches (a backlog).
PROJECTOR_CATCH_UP_BATCH_MAX: Final = 5_000
# Ids per ``IN (…)`` list when a batch loads its accounts' state and monitors up front.
PREFETCH_CHUNK: Final = 250
# How long the projector waits after a step that found the log's end: under a steady
# stream of writes each step then takes what arrived meanwhile (one transaction and one
# checkpoint for many events) instead of one command's events at a time.
PROJECTOR_POLL_SECONDS: Final = 0.02
# After a step that found at least PROJECTOR_BUSY_EVENTS (some 200 transfers a second
# and more) it waits this long instead, so that under steady load a step takes a few
# hundred events and its fixed costs (the head read, two transactions, the prefetch
# queries, the checkpoint) are shared by them: a public event may reach the feed and
# its webhooks this much later, under load only.
PROJECTOR_BUSY_EVENTS: Final = 12
PROJECTOR_BUSY_POLL_SECONDS: Final = 0.05
# A projector following the views' runner's batches (``FeedProjector.shared``) reads
# the log itself when none came for this long (the runner is down, restarting, or the
# log is idle): the most a public event can wait for a runner that no longer reads.
FOLLOW_WAIT_SECONDS: Final = 1.0
FOLLOW_STOP_CHECK_SECONDS: Final = 0.1
# The most accounts' feed states a projector keeps between batches (some 0.5 kB each).
FEED_STATES_KEPT_MAX: Final = 20_000
CATCH_UP_SECONDS_MAX: Final = 60.0
MONITORED_FIELDS: Final = ("balance", "available")
# What a grant's public events show of its lot's terms.
GRANT_TERMS: Final = ("expires_at", "effective_at", "priority", "category")


class ConcurrentProjectorError(Exception):
    """Another projector moved the checkpoint first: this batch is dropped, not written."""


class _Batch:
    """The state one batch of notifications reads and writes, flushed in one transaction."""

    def __init__(self, cursor: Cursor, ledger: Ledger) -> None:
        self.cursor = cursor
        self.ledger = ledger
        self.accounts: dict[str, dict[str, Any]] = {}
        self.dirty_accounts: set[str] = set()
        self.effects: dict[tuple[str, str], dict[str, Any]] = {}
        self.consumed_effects: list[tuple[str, str]] = []
        # Effects stored by earlier batches, loaded up front for these transfers' ids.
        self.effects_read: set[str] = set()
        self.stored_effects: dict[tuple[str, str], str] = {}
        self.monitors: dict[str, list[dict[str, Any]]] = {}
        self.dirty_monitors: dict[str, dict[str, Any]] = {}
        self.out: list[tuple[dict[str, Any], Sequence[str]]] = []

    # State ------------------------------------------------------------------------------

    def prefetch(self, stream_ids: Sequence[str]) -> None:
        """Load the state of the accounts among these streams, and their monitors, in a
        query or two per chunk instead of two per account as their events come."""
        streams = list(dict.fromkeys(stream_ids))
        for chunk in _chunks([i for i in streams if i not in self.accounts]):
            self.cursor.execute(
                "SELECT stream_id, body FROM ledger_feed_accounts "  # noqa: S608  # only ?s
                f"WHERE stream_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for stream_id, body in self.cursor.fetchall():
                self.accounts[stream_id] = orjson.loads(body)
        # The monitors of every account here, the states kept from the last batch too
        # (monitors are not kept: the API adds and deletes them at any time).
        account_ids = [self.accounts[i]["account_id"] for i in streams if i in self.accounts]
        for chunk in _chunks([i for i in dict.fromkeys(account_ids) if i not in self.monitors]):
            for account_id in chunk:
                self.monitors[account_id] = []
            self.cursor.execute(
                "SELECT monitor_id, field, operator, threshold, description, holds, "  # noqa: S608
                "since_position, account_id FROM ledger_monitors "
                f"WHERE account_id IN ({', '.join('?' * len(chunk))}) ORDER BY monitor_id",
                chunk,
            )
            for row in self.cursor.fetchall():
                self.monitors[row[7]].append(_monitor(row[7], row))

    def account(self, stream_id: str) -> dict[str, Any]:
        if stream_id not in self.accounts:
            self.cursor.execute(
                "SELECT body FROM ledger_feed_accounts WHERE stream_id = ?", (stream_id,)
            )
            row = self.cursor.fetchone()
            assert row is not None, f"an account event before its opening: {stream_id}"
            self.accounts[stream_id] = orjson.loads(row[0])
        return self.accounts[stream_id]

    def prefetch_effects(self, transfer_ids: Sequence[str]) -> None:
        """Load the effects that earlier batches left waiting for these transfers, in a
        query per chunk: an atomic batch of transfers writes every account's events
        before the transfers' own, so a long one leaves most of them waiting."""
        for chunk in _chunks(list(dict.fromkeys(transfer_ids))):
            self.effects_read.update(chunk)
            self.cursor.execute(
                "SELECT transfer_id, account_id, body FROM ledger_feed_effects "  # noqa: S608
                f"WHERE transfer_id IN ({', '.join('?' * len(chunk))})",
                chunk,
            )
            for transfer_id, account_id, body in self.cursor.fetchall():
                self.stored_effects[(transfer_id, account_id)] = body

    def effect(
        self, transfer_id: str, account_id: str, fallback: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """The account just after this transfer's change to it (``fallback``: when the
        transfer changed nothing on it in this command, the account as it stands)."""
        key = (transfer_id, account_id)
        if key in self.effects:
            return self.effects.pop(key)
        if transfer_id in self.effects_read:  # prefetched: no query
            body = self.stored_effects.pop(key, None)
            if body is None:
                return fallback()
            self.consumed_effects.append(key)
            stored: dict[str, Any] = orjson.loads(body)
            return stored
        self.cursor.execute(
            "SELECT body FROM ledger_feed_effects WHERE transfer_id = ? AND account_id = ?", key
        )
        row = self.cursor.fetchone()
        if row is None:
            return fallback()
        self.consumed_effects.append(key)
        loaded: dict[str, Any] = orjson.loads(row[0])
        return loaded

    def monitors_of(self, account_id: str) -> list[dict[str, Any]]:
        if account_id not in self.monitors:
            self.cursor.execute(
                "SELECT monitor_id, field, operator, threshold, description, holds, "
                "since_position "
                "FROM ledger_monitors WHERE account_id = ? ORDER BY monitor_id",
                (account_id,),
            )
            self.monitors[account_id] = [
                _monitor(account_id, row) for row in self.cursor.fetchall()
            ]
        return self.monitors[account_id]

    def emit(self, event: dict[str, Any], account_ids: Sequence[str]) -> None:
        self.out.append((event, account_ids))

    def flush(self, head: Head, checkpoint: int) -> Head:
        # One statement per table (executemany: a call per row is most of a flush).
        accounts = [(i, _state_text(self.accounts[i])) for i in self.dirty_accounts]
        self.cursor.insert_many(
            "ledger_feed_accounts",
            ("stream_id", "body"),
            accounts,
            "ON CONFLICT (stream_id) DO UPDATE SET body = excluded.body",
        )
        if self.consumed_effects:
            self.cursor.executemany(
                "DELETE FROM ledger_feed_effects WHERE transfer_id = ? AND account_id = ?",
                self.consumed_effects,
            )
        effects = [(*key, _state_text(body)) for key, body in self.effects.items()]
        self.cursor.insert_many(
            "ledger_feed_effects",
            ("transfer_id", "account_id", "body"),
            effects,
            "ON CONFLICT (transfer_id, account_id) DO UPDATE SET body = excluded.body",
        )
        monitors = [(int(m["holds"]), m["id"]) for m in self.dirty_monitors.values()]
        if monitors:
            self.cursor.executemany(
                "UPDATE ledger_monitors SET holds = ? WHERE monitor_id = ?", monitors
            )
        return append_events(self.cursor, head, self.out, checkpoint)


def _state_text(state: dict[str, Any]) -> str:
    """The projector's own saved state (read back only by it): any JSON will do."""
    return orjson.dumps(state).decode()


def _monitor(account_id: str, row: Sequence[Any]) -> dict[str, Any]:
    return {
        "id": row[0],
        "account_id": account_id,
        "field": row[1],
        "operator": row[2],
        "threshold": int(row[3]),
        "description": row[4],
        "holds": None if row[5] is None else bool(row[5]),
        "since_position": int(row[6]),
    }


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[start : start + PREFETCH_CHUNK] for start in range(0, len(ids), PREFETCH_CHUNK)]


# Shapes ------------------------------------------------------------------------------


def account_resource(state: dict[str, Any], position: int) -> dict[str, Any]:
    """``AccountRead`` in JSON values (``account_document`` of the state's view), from
    the feed's state without building an ``AccountView``: the feed makes two or three
    per transfer (tests/events/test_projector.py holds the two equal)."""
    debits_posted = state["debits_posted"]
    debits_pending = state["debits_pending"]
    balance = state["credits_posted"] - debits_posted
    return {
        "id": state["account_id"],
        "unit": state["unit"],
        "status": state["status"],
        "balance": balance,
        "available": balance - debits_pending,
        "debits_posted": debits_posted,
        "credits_posted": state["credits_posted"],
        "debits_pending": debits_pending,
        "credits_pending": state["credits_pending"],
        "allow_negative": state["allow_negative"],
        "overdraft_limit": state["overdraft_limit"],
        # Feed states kept before account types hold none: the default for the floor.
        "account_type": state.get("account_type") or default_account_type(state["allow_negative"]),
        "metadata": dict(state["metadata"]),
        "position": position,
    }


def transfer_resource(transfer: TransferView, position: int) -> dict[str, Any]:
    """``TransferRead`` in JSON values (times as text), without building the model."""
    document = transfer_document(transfer, position)
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(document, option=orjson.OPT_UTC_Z))
    return loaded


def recorded_resource(event: Transfer.TransferRecorded, position: int) -> dict[str, Any]:
    """``transfer_resource(TransferView.recorded(event), position)``, key for key and in
    the same order, built straight from a recording that grants nothing: the feed makes
    one per transfer, and the view, the document and their JSON round trip cost three
    times this (tests/events/test_feed_resources.py holds the two equal). A grant's
    terms hold times of their own: a grant takes the general path."""
    if event.grant is not None:
        return transfer_resource(TransferView.recorded(event), position)
    pending, timeout_seconds, records = event.pending, event.timeout_seconds, event.allocations
    expires_at = None
    if pending and timeout_seconds is not None:
        expires_at = _time_text(event.timestamp + timedelta(seconds=timeout_seconds))
    return {
        "id": event.transfer_id,
        "debit_account_id": event.debit_account_id,
        "credit_account_id": event.credit_account_id,
        "amount": event.amount,
        "unit": event.unit,
        "pending": pending,
        "timeout_seconds": timeout_seconds,
        "metadata": dict(event.metadata),
        "status": initial_fate(pending),
        "amount_posted": 0 if pending else event.amount,
        "recorded_at": _time_text(event.timestamp),
        "expires_at": expires_at,
        "reversal_of": event.reversal_of,
        "reversed_by": None,
        "position": position,
        "grant": None,
        "allocations": [{"grant_id": r["grant_id"], "amount": r["amount"]} for r in records]
        if records
        else [],
    }


def _time_text(value: datetime) -> str:
    """A time as ``transfer_resource``'s JSON round trip writes it."""
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1].decode()


def public_event(
    event_type: str, source: Any, position: int, data: dict[str, Any], *id_parts: object
) -> dict[str, Any]:
    occurred_at: datetime = source.timestamp
    return {
        "id": schema.event_id(
            event_type, source.originator_id, source.originator_version, *id_parts
        ),
        "type": event_type,
        "version": schema.SCHEMA_VERSION,
        "position": position,
        "occurred_at": occurred_at.isoformat().replace("+00:00", "Z"),
        "data": data,
    }


# Handlers: one per stored event type that implies a public event ------------------------


def _account_opened(batch: _Batch, event: Any, position: int) -> None:
    state = {
        "account_id": event.account_id,
        "unit": event.unit,
        "status": "open",
        "allow_negative": event.allow_negative,
        "overdraft_limit": event.overdraft_limit,
        "account_type": event.account_type or default_account_type(event.allow_negative),
        "metadata": dict(event.metadata),
        "debits_posted": 0,
        "credits_posted": 0,
        "debits_pending": 0,
        "credits_pending": 0,
        "version": event.originator_version,
    }
    stream_id = account_text(event.originator_id)
    batch.accounts[stream_id] = state
    batch.dirty_accounts.add(stream_id)
    data = {"account": account_resource(state, position)}
    batch.emit(public_event(schema.ACCOUNT_OPENED, event, position, data), [event.account_id])


def _account_changed(event_type: str, change: Callable[[dict[str, Any], Any], None]) -> Any:
    def handle(batch: _Batch, event: Any, position: int) -> None:
        stream_id = account_text(event.originator_id)
        state = batch.account(stream_id)
        change(state, event)
        state["version"] = event.originator_version
        batch.dirty_accounts.add(stream_id)
        data = {"account": account_resource(state, position)}
        batch.emit(public_event(event_type, event, position, data), [state["account_id"]])

    return handle


def _close(state: dict[str, Any], _: Any) -> None:
    state["status"] = "closed"


def _update_metadata(state: dict[str, Any], event: Any) -> None:
    state["metadata"] = dict(event.metadata)


def _balance_changed(batch: _Batch, event: Any, position: int) -> None:
    stream_id = account_text(event.originator_id)
    state = batch.account(stream_id)
    monitors = batch.monitors_of(state["account_id"])
    # Most accounts have no monitor: their state before the change is never shown.
    before = dict(state) if monitors else None
    delta = event.delta()  # folded as ``post`` folds it, into the state's own counters
    state["debits_posted"] += delta.debits_posted
    state["credits_posted"] += delta.credits_posted
    state["debits_pending"] += delta.debits_pending
    state["credits_pending"] += delta.credits_pending
    state["version"] = event.originator_version
    batch.dirty_accounts.add(stream_id)
    after = account_resource(state, position)
    batch.effects[(event.transfer_id, state["account_id"])] = after
    if before is not None:
        before_resource = account_resource(before, position)
        _check_monitors(batch, monitors, event, position, before_resource, after)


def _check_monitors(
    batch: _Batch,
    monitors: list[dict[str, Any]],
    event: Any,
    position: int,
    before: dict[str, Any],
    after: dict[str, Any],
) -> None:
    for monitor in monitors:
        if position <= monitor["since_position"]:
            continue  # recorded before the monitor existed
        field, threshold = monitor["field"], monitor["threshold"]

        def holds(value: int, operator: str = monitor["operator"], limit: int = threshold) -> bool:
            return value < limit if operator == "below" else value > limit

        held = monitor["holds"] if monitor["holds"] is not None else holds(before[field])
        now_holds = holds(after[field])
        if monitor["holds"] is None or now_holds != held:
            monitor["holds"] = now_holds
            batch.dirty_monitors[monitor["id"]] = monitor
        if now_holds == held:
            continue
        data = {
            "monitor": monitor_resource(monitor),
            "direction": "down" if after[field] < before[field] else "up",
            "condition_holds": now_holds,
            "previous_value": before[field],
            "value": after[field],
            "transfer_id": event.transfer_id,
            "account": after,
        }
        crossing = public_event(schema.THRESHOLD_CROSSED, event, position, data, monitor["id"])
        batch.emit(crossing, [after["id"]])


def monitor_resource(monitor: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": monitor["id"],
        "account_id": monitor["account_id"],
        "field": monitor["field"],
        "below": monitor["threshold"] if monitor["operator"] == "below" else None,
        "above": monitor["threshold"] if monitor["operator"] == "above" else None,
        "description": monitor["description"],
    }


def _transfer_event(event_type: str) -> Any:
    def handle(batch: _Batch, event: Any, position: int) -> None:
        if isinstance(event, Transfer.TransferRecorded):
            resource = recorded_resource(event, position)  # no aggregate built
        else:
            transfer: Transfer = batch.ledger.transfers.get(
                event.originator_id, version=event.originator_version
            )
            resource = transfer_resource(TransferView.of(transfer), position)
        data: dict[str, Any] = {"transfer": resource}
        involved = [resource["debit_account_id"], resource["credit_account_id"]]
        if isinstance(event, Transfer.Reversed):
            # The money moves in the reversal's own transfer.recorded, with its balances.
            data["reversal_id"] = event.reversal_id
        else:
            data["accounts"] = [
                batch.effect(
                    resource["id"],
                    account_id,
                    partial(_current, batch, account_id, position),
                )
                for account_id in involved
            ]
        batch.emit(public_event(event_type, event, position, data), involved)
        if isinstance(event, Transfer.TransferRecorded):
            _grant_events(batch, event, position, data)

    return handle


def _grant_events(batch: _Batch, event: Any, position: int, data: dict[str, Any]) -> None:
    """A grant's transfer also opens a lot (``grant.created``); a transfer to breakage
    carries the remainders of expired lots (one ``grant.expired`` per lot)."""
    grant = getattr(event, "grant", None)
    if grant is not None:
        lot = {
            "id": event.transfer_id,
            "account_id": event.credit_account_id,
            "amount": event.amount,
            **{key: grant.get(key) for key in GRANT_TERMS},
        }
        created = {"grant": to_jsonable_python(lot), **data}
        batch.emit(
            public_event(schema.GRANT_CREATED, event, position, created),
            [event.credit_account_id],
        )
    if "breakage_of" not in event.metadata:
        return
    for allocation in getattr(event, "allocations", None) or []:
        if allocation.get("grant_id") is None:
            continue  # the general lot never expires
        lot = {
            "id": allocation["grant_id"],
            "account_id": event.debit_account_id,
            "expired_amount": allocation["amount"],
        }
        expired = {"grant": lot, **data}
        batch.emit(
            public_event(schema.GRANT_EXPIRED, event, position, expired, allocation["grant_id"]),
            [event.debit_account_id],
        )


def _current(batch: _Batch, account_id: str, position: int) -> dict[str, Any]:
    return account_resource(batch.account(str(Account.create_id(account_id))), position)


Handler = Callable[[_Batch, Any, int], None]

# Stored event class → what it implies. Extend here when a new stored event appears
# (account metadata updates, grants); a class not listed (nor a subclass of one) is
# internal and implies no public event.
HANDLERS: dict[type[Any], Handler] = {
    Account.Opened: _account_opened,
    Account.Closed: _account_changed(schema.ACCOUNT_CLOSED, _close),
    Account.BalanceChanged: _balance_changed,
    Transfer.TransferRecorded: _transfer_event(schema.TRANSFER_RECORDED),
    Transfer.PendingPosted: _transfer_event(schema.TRANSFER_POSTED),
    Transfer.PendingVoided: _transfer_event(schema.TRANSFER_VOIDED),
    Transfer.PendingExpired: _transfer_event(schema.TRANSFER_EXPIRED),
    Transfer.Reversed: _transfer_event(schema.TRANSFER_REVERSED),
}


def handler_for(event_class: type[Any]) -> Handler | None:
    for klass in event_class.__mro__:
        handler = HANDLERS.get(klass)
        if handler is not None:
            return handler
    return None


def account_metadata_updated(event_class: type[Any]) -> None:
    """Register the stored event that carries an account's new ``metadata``."""
    HANDLERS[event_class] = _account_changed(schema.ACCOUNT_UPDATED, _update_metadata)


# PATCH /v1/accounts/{id} writes ``Account.Updated``, carrying the whole new metadata.
account_metadata_updated(Account.Updated)


class FeedProjector(ThreadWorker):
    """``step()`` projects one batch; ``start()`` runs steps in a thread until ``stop()``.

    Given ``shared`` (the batches the views' runner of this process has read and
    decoded), a projector that has caught up with the log projects those instead of
    reading and decoding the same events again, and reads the log itself only when
    they do not join on to its checkpoint or none came for ``FOLLOW_WAIT_SECONDS``."""

    thread_name = "feed-projector"

    def __init__(
        self, ledger: Ledger, store: FeedStore, shared: DecodedBatches | None = None
    ) -> None:
        super().__init__()
        self.ledger = ledger
        self.store = store
        self.database: Database = store.database
        self.shared = shared
        # Each stored event's class, version and id convertor found once per topic.
        self._to_domain_event = domain_event_reader(ledger.mapper)
        # The accounts' feed states as this projector last committed them, with the
        # checkpoint of that commit: the next batch starts from them when the checkpoint
        # has not moved since (no other projector wrote), instead of reading them back.
        self._accounts: tuple[int, dict[str, dict[str, Any]]] | None = None

    def step(self, limit: int = PROJECTOR_BATCH_MAX) -> int:
        """Project the next notifications; the number of log events read (0: caught up)."""
        checkpoint = self.store.head().checkpoint
        notifications = self.ledger.recorder.select_notifications(
            start=checkpoint, limit=limit, inclusive_of_start=False
        )
        if not notifications:
            return 0
        events = [self._to_domain_event(notification) for notification in notifications]
        self._project(checkpoint, notifications, events)
        return len(notifications)

    def _project(
        self, checkpoint: int, notifications: Sequence[Notification], events: Sequence[Any]
    ) -> None:
        """Project ``events`` (decoded from ``notifications``, everything the log holds
        after ``checkpoint`` up to their end) in one transaction with the checkpoint."""
        kept, self._accounts = self._accounts, None  # dropped unless this batch commits
        with self.database.transaction(write=True) as cursor:
            head = lock_head(cursor, self.database.is_postgres)
            if head.checkpoint != checkpoint:
                raise ConcurrentProjectorError(f"checkpoint moved {checkpoint}→{head.checkpoint}")
            # What keeps an event from being stored twice (the feed has no unique index
            # of ids): only events past the checkpoint, which moves with them.
            assert notifications[0].id > head.checkpoint, (notifications[0].id, checkpoint)
            batch = _Batch(cursor, self.ledger)
            if kept is not None and kept[0] == checkpoint:
                # Nobody projected since this projector's last commit: its states stand.
                batch.accounts = kept[1]
            # The accounts' streams only: a transfer's stream has no feed state to load.
            batch.prefetch(
                [account_text(e.originator_id) for e in events if isinstance(e, Account.Event)]
            )
            batch.prefetch_effects(
                [e.transfer_id for e in events if isinstance(e, Transfer.TransferRecorded)]
            )
            for notification, event in zip(notifications, events, strict=True):
                handler = handler_for(type(event))
                if handler is not None:
                    handler(batch, event, notification.id)
            batch.flush(head, notifications[-1].id)
        states = batch.accounts
        for stream_id in list(islice(states, max(0, len(states) - FEED_STATES_KEPT_MAX))):
            del states[stream_id]
        self._accounts = (notifications[-1].id, states)

    def _follow(self, shared: DecodedBatches, stopping: threading.Event) -> None:
        """Project the shared batches as long as they join on to the checkpoint and
        one comes within ``FOLLOW_WAIT_SECONDS`` (looking at ``stopping`` meanwhile)."""
        checkpoint = self.store.head().checkpoint
        deadline = time.monotonic() + FOLLOW_WAIT_SECONDS
        while not stopping.is_set():
            wait = min(FOLLOW_STOP_CHECK_SECONDS, max(0.0, deadline - time.monotonic()))
            batch = shared.after(checkpoint, wait)
            if batch is not None:
                self._project(checkpoint, batch.notifications, batch.events)
                checkpoint = batch.last
                deadline = time.monotonic() + FOLLOW_WAIT_SECONDS
            elif shared.begin_after(checkpoint) or time.monotonic() >= deadline:
                return  # they begin further on, or none came: read the log itself

    def catch_up(self, timeout_seconds: float = CATCH_UP_SECONDS_MAX) -> None:
        """Project until the checkpoint reaches the log's head as read now (bounded)."""
        deadline = time.monotonic() + timeout_seconds
        while self.step() and time.monotonic() < deadline:
            pass

    def lag_positions(self) -> int:
        head = self.ledger.recorder.max_notification_id() or 0
        return max(0, head - self.store.head().checkpoint)

    def run(self, stopping: threading.Event) -> None:
        """Project until ``stopping``; a failure is raised (a supervisor restarts this,
        and the checkpoint makes the restart resume exactly where the log was left)."""
        limit = PROJECTOR_BATCH_MAX
        while not stopping.is_set():
            try:
                found = self.step(limit)
            except ConcurrentProjectorError:
                continue  # another projector wrote this batch: read on from its checkpoint
            if found == limit:
                # A full batch: more is waiting, read on at once, and up to twice as much
                # (a backlog in few steps: a long command's effects stay in memory).
                limit = min(2 * limit, PROJECTOR_CATCH_UP_BATCH_MAX)
                continue
            limit = PROJECTOR_BATCH_MAX
            if self.shared is not None:
                # Caught up with the log: what the views' runner reads next comes here
                # (another projector writing first: read on from its checkpoint).
                with contextlib.suppress(ConcurrentProjectorError):
                    self._follow(self.shared, stopping)
                continue
            # Caught up (a short batch reached the log's end): what arrives next is taken
            # together after the pause, so a busy log costs a step per pause, not per write.
            stopping.wait(projector_wait(found))


def projector_wait(found: int) -> float:
    """How long the projector pauses after a short step that read ``found`` events:
    longer while the log is busy, to take more per step."""
    return PROJECTOR_BUSY_POLL_SECONDS if found >= PROJECTOR_BUSY_EVENTS else PROJECTOR_POLL_SECONDS
