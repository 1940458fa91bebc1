"""Webhook endpoints and their deliveries, in the events database.

An endpoint's ``cursor`` is the feed sequence up to which every matching event has
been delivered (acknowledged with a 2xx). It only moves forward from the value a
worker read (or back, by a replay), in the same transaction as the delivery record:
a killed worker resumes from it and at worst sends the last event again, with the
same ``webhook-id``.
"""

import base64
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from app.events import schema
from app.events.database import Database, PartSchema
from app.events.store import append_events, lock_head

WEBHOOK_PAGE_LIMIT_MAX: Final = 100
DELIVERIES_PAGE_LIMIT_MAX: Final = 1000
SECRET_BYTES: Final = 24
ERROR_TEXT_LENGTH_MAX: Final = 300

EndpointStatus = Literal["enabled", "disabled"]

STATEMENTS: Final = [
    """CREATE TABLE IF NOT EXISTS ledger_webhooks (
        webhook_id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        types TEXT NOT NULL,
        description TEXT NOT NULL,
        secret TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        cursor BIGINT NOT NULL,
        failures INTEGER NOT NULL,
        next_attempt_at DOUBLE PRECISION,
        last_error TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS ledger_webhook_deliveries (
        webhook_id TEXT NOT NULL,
        sequence BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        position BIGINT NOT NULL,
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        response_status INTEGER,
        latency_ms DOUBLE PRECISION,
        last_error TEXT,
        last_attempt_at DOUBLE PRECISION NOT NULL,
        next_attempt_at DOUBLE PRECISION,
        PRIMARY KEY (webhook_id, sequence)
    )""",
]
# Version 1 still: a step that changes these tables goes in ``steps`` (decision 0037).
SCHEMA: Final = PartSchema(name="webhooks", statements=STATEMENTS, first_table="ledger_webhooks")

ENDPOINT_COLUMNS: Final = (
    "webhook_id, url, types, description, status, created_at, updated_at, cursor, "
    "failures, next_attempt_at, last_error"
)


@dataclass(frozen=True)
class Endpoint:
    id: str
    url: str
    types: tuple[str, ...]
    description: str
    status: EndpointStatus
    created_at: float
    updated_at: float
    cursor: int
    failures: int
    next_attempt_at: float | None
    last_error: str | None

    @classmethod
    def of(cls, row: Sequence[Any]) -> "Endpoint":
        return cls(
            id=row[0],
            url=row[1],
            types=tuple(json.loads(row[2])),
            description=row[3],
            status=row[4],
            created_at=float(row[5]),
            updated_at=float(row[6]),
            cursor=int(row[7]),
            failures=int(row[8]),
            next_attempt_at=None if row[9] is None else float(row[9]),
            last_error=row[10],
        )


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    sequence: int
    event_id: str
    event_type: str
    position: int
    status: str
    attempts: int
    response_status: int | None
    latency_ms: float | None
    last_error: str | None
    last_attempt_at: float
    next_attempt_at: float | None


@dataclass(frozen=True)
class Attempt:
    """One try at delivering one event to one endpoint."""

    sequence: int
    event_id: str
    event_type: str
    position: int
    ok: bool
    response_status: int | None
    latency_ms: float
    error: str | None


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


class WebhookStore:
    def __init__(self, database: Database) -> None:
        self.database = database
        database.create(SCHEMA)

    # Endpoints --------------------------------------------------------------------------

    def create(self, url: str, types: Sequence[str], description: str) -> tuple[Endpoint, str]:
        """A new endpoint, delivering from now on (the feed's current end), and its secret."""
        webhook_id, secret, now = "wh_" + secrets.token_hex(8), new_secret(), time.time()
        with self.database.transaction(write=True) as cursor:
            cursor.execute("SELECT sequence FROM ledger_feed_head WHERE id = 1")
            start = int(cursor.fetchone()[0])
            cursor.execute(
                f"INSERT INTO ledger_webhooks ({ENDPOINT_COLUMNS}, secret) "  # noqa: S608
                "VALUES (?, ?, ?, ?, 'enabled', ?, ?, ?, 0, NULL, NULL, ?)",
                (webhook_id, url, json.dumps(list(types)), description, now, now, start, secret),
            )
        endpoint = self.get(webhook_id)
        assert endpoint is not None
        return endpoint, secret

    def get(self, webhook_id: str) -> Endpoint | None:
        with self.database.transaction() as cursor:
            cursor.execute(
                f"SELECT {ENDPOINT_COLUMNS} FROM ledger_webhooks WHERE webhook_id = ?",  # noqa: S608
                (webhook_id,),
            )
            row = cursor.fetchone()
        return None if row is None else Endpoint.of(row)

    def secret(self, webhook_id: str) -> str | None:
        with self.database.transaction() as cursor:
            cursor.execute("SELECT secret FROM ledger_webhooks WHERE webhook_id = ?", (webhook_id,))
            row = cursor.fetchone()
        return None if row is None else str(row[0])

    def page(self, after: str = "", limit: int = WEBHOOK_PAGE_LIMIT_MAX) -> list[Endpoint]:
        with self.database.transaction() as cursor:
            cursor.execute(
                f"SELECT {ENDPOINT_COLUMNS} FROM ledger_webhooks "  # noqa: S608
                "WHERE webhook_id > ? ORDER BY webhook_id LIMIT ?",
                (after, limit),
            )
            return [Endpoint.of(row) for row in cursor.fetchall()]

    def enabled(self) -> list[Endpoint]:
        with self.database.transaction() as cursor:
            cursor.execute(
                f"SELECT {ENDPOINT_COLUMNS} FROM ledger_webhooks "  # noqa: S608
                "WHERE status = 'enabled' ORDER BY webhook_id"
            )
            return [Endpoint.of(row) for row in cursor.fetchall()]

    def update(
        self,
        webhook_id: str,
        *,
        url: str | None = None,
        types: Sequence[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> Endpoint | None:
        assignments: list[str] = ["updated_at = ?"]
        params: list[Any] = [time.time()]
        if url is not None:
            assignments.append("url = ?")
            params.append(url)
        if types is not None:
            assignments.append("types = ?")
            params.append(json.dumps(list(types)))
        if description is not None:
            assignments.append("description = ?")
            params.append(description)
        if enabled is not None:
            # Enabling again starts afresh: no failure streak, no pending back-off.
            assignments.append("status = ?")
            params.append("enabled" if enabled else "disabled")
            if enabled:
                assignments += ["failures = 0", "next_attempt_at = NULL"]
        with self.database.transaction(write=True) as cursor:
            cursor.execute(
                f"UPDATE ledger_webhooks SET {', '.join(assignments)} "  # noqa: S608
                "WHERE webhook_id = ?",
                (*params, webhook_id),
            )
        return self.get(webhook_id)

    def delete(self, webhook_id: str) -> bool:
        with self.database.transaction(write=True) as cursor:
            cursor.execute("SELECT 1 FROM ledger_webhooks WHERE webhook_id = ?", (webhook_id,))
            if cursor.fetchone() is None:
                return False
            cursor.execute("DELETE FROM ledger_webhooks WHERE webhook_id = ?", (webhook_id,))
            cursor.execute(
                "DELETE FROM ledger_webhook_deliveries WHERE webhook_id = ?", (webhook_id,)
            )
        return True

    def replay(self, webhook_id: str, cursor_to: int) -> Endpoint | None:
        """Deliver again every matching event after feed sequence ``cursor_to``."""
        with self.database.transaction(write=True) as cursor:
            cursor.execute(
                "UPDATE ledger_webhooks SET cursor = ?, failures = 0, next_attempt_at = NULL, "
                "updated_at = ? WHERE webhook_id = ?",
                (cursor_to, time.time(), webhook_id),
            )
        return self.get(webhook_id)

    # Deliveries -------------------------------------------------------------------------

    def deliveries(
        self, webhook_id: str, before: int | None, limit: int = DELIVERIES_PAGE_LIMIT_MAX
    ) -> list[Delivery]:
        """Newest first."""
        with self.database.transaction() as cursor:
            cursor.execute(
                "SELECT webhook_id, sequence, event_id, event_type, position, status, attempts, "
                "response_status, latency_ms, last_error, last_attempt_at, next_attempt_at "
                "FROM ledger_webhook_deliveries WHERE webhook_id = ? AND sequence < ? "
                "ORDER BY sequence DESC LIMIT ?",
                (webhook_id, 2**63 - 1 if before is None else before, limit),
            )
            return [
                Delivery(
                    webhook_id=row[0],
                    sequence=int(row[1]),
                    event_id=row[2],
                    event_type=row[3],
                    position=int(row[4]),
                    status=row[5],
                    attempts=int(row[6]),
                    response_status=None if row[7] is None else int(row[7]),
                    latency_ms=None if row[8] is None else float(row[8]),
                    last_error=row[9],
                    last_attempt_at=float(row[10]),
                    next_attempt_at=None if row[11] is None else float(row[11]),
                )
                for row in cursor.fetchall()
            ]

    def record_delivered(self, endpoint: Endpoint, delivered: Sequence[Attempt]) -> bool:
        """Record successful attempts (in order) and move the cursor past the last, in
        one transaction. False when the endpoint changed meanwhile (replayed, disabled,
        deleted, another worker got there first): the caller reads it again rather than
        overwrite."""
        now = time.time()
        with self.database.transaction(write=True) as cursor:
            if not self._unchanged(cursor, endpoint):
                return False
            for attempt in delivered:
                self._upsert_delivery(cursor, endpoint.id, attempt, "delivered", None, now, None)
            cursor.execute(
                "UPDATE ledger_webhooks SET cursor = ?, failures = 0, next_attempt_at = NULL, "
                "last_error = NULL WHERE webhook_id = ?",
                (delivered[-1].sequence, endpoint.id),
            )
        return True

    @staticmethod
    def _unchanged(cursor: Any, endpoint: Endpoint) -> bool:
        cursor.execute(
            "SELECT cursor, status FROM ledger_webhooks WHERE webhook_id = ?", (endpoint.id,)
        )
        row = cursor.fetchone()
        return row is not None and int(row[0]) == endpoint.cursor and row[1] == "enabled"

    @staticmethod
    def _upsert_delivery(
        cursor: Any,
        webhook_id: str,
        attempt: Attempt,
        status: str,
        error: str | None,
        now: float,
        retry_at: float | None,
    ) -> None:
        cursor.execute(
            "INSERT INTO ledger_webhook_deliveries (webhook_id, sequence, event_id, "
            "event_type, position, status, attempts, response_status, latency_ms, "
            "last_error, last_attempt_at, next_attempt_at) "
            "VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?) "
            "ON CONFLICT (webhook_id, sequence) DO UPDATE SET status = excluded.status, "
            "attempts = ledger_webhook_deliveries.attempts + 1, "
            "response_status = excluded.response_status, latency_ms = excluded.latency_ms, "
            "last_error = excluded.last_error, last_attempt_at = excluded.last_attempt_at, "
            "next_attempt_at = excluded.next_attempt_at",
            (
                webhook_id,
                attempt.sequence,
                attempt.event_id,
                attempt.event_type,
                attempt.position,
                status,
                attempt.response_status,
                attempt.latency_ms,
                error,
                now,
                retry_at,
            ),
        )

    def record_failure(
        self,
        endpoint: Endpoint,
        attempt: Attempt,
        *,
        retry_at: float | None,
        disable: bool,
    ) -> bool:
        """Record a failed attempt: the endpoint's failure run grows, its next try is
        ``retry_at``, or it is disabled (and a ``webhook.disabled`` event says so)."""
        assert not attempt.ok
        now = time.time()
        with self.database.transaction(write=True) as cursor:
            if not self._unchanged(cursor, endpoint):
                return False
            status = "abandoned" if disable else "failing"
            error = None if attempt.error is None else attempt.error[:ERROR_TEXT_LENGTH_MAX]
            self._upsert_delivery(cursor, endpoint.id, attempt, status, error, now, retry_at)
            cursor.execute(
                "UPDATE ledger_webhooks SET failures = failures + 1, next_attempt_at = ?, "
                "last_error = ?, status = ? WHERE webhook_id = ?",
                (retry_at, error, "disabled" if disable else "enabled", endpoint.id),
            )
            if disable:
                self._announce_disabled(cursor, endpoint, error)
        return True

    def _announce_disabled(self, cursor: Any, endpoint: Endpoint, error: str | None) -> None:
        head = lock_head(cursor, self.database.is_postgres)
        event = {
            "id": schema.event_id(schema.WEBHOOK_DISABLED, endpoint.id, head.sequence),
            "type": schema.WEBHOOK_DISABLED,
            "version": schema.SCHEMA_VERSION,
            "position": head.checkpoint,
            "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data": {
                "webhook_id": endpoint.id,
                "url": endpoint.url,
                "failures": endpoint.failures + 1,
                "last_error": error,
            },
        }
        append_events(cursor, head, [(event, [])])
