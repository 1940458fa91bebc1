"""Balance monitors: a threshold on an account's ``balance`` or ``available``.

The projector evaluates them on every balance change it projects and emits
``balance.threshold_crossed`` when the condition starts or stops holding: once per
crossing, not on every change while it holds. A new monitor takes its first state
from the first change it sees (the value before it), so creating one on an account
already past the threshold emits nothing until the balance crosses back and again.
"""

import secrets
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

from app.events.database import Database

MONITORS_PAGE_LIMIT_MAX: Final = 1000
MONITORS_PER_ACCOUNT_MAX: Final = 100

Field = Literal["balance", "available"]
Operator = Literal["below", "above"]


class TooManyMonitorsError(Exception):
    pass


@dataclass(frozen=True)
class Monitor:
    id: str
    account_id: str
    field: str
    operator: str
    threshold: int
    description: str
    created_at: float
    since_position: int
    holds: bool | None

    @classmethod
    def of(cls, row: Any) -> "Monitor":
        return cls(
            id=row[0],
            account_id=row[1],
            field=row[2],
            operator=row[3],
            threshold=int(row[4]),
            description=row[5],
            created_at=float(row[6]),
            since_position=int(row[7]),
            holds=None if row[8] is None else bool(row[8]),
        )


COLUMNS: Final = (
    "monitor_id, account_id, field, operator, threshold, description, created_at, "
    "since_position, holds"
)


class MonitorStore:
    """Its table is created with the feed's (``app.events.store.SCHEMA``)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def create(
        self,
        account_id: str,
        field: Field,
        operator: Operator,
        threshold: int,
        description: str,
        since_position: int,
    ) -> Monitor:
        monitor_id = "mon_" + secrets.token_hex(8)
        with self.database.transaction(write=True) as cursor:
            cursor.execute(
                "SELECT COUNT(*) FROM ledger_monitors WHERE account_id = ?", (account_id,)
            )
            if int(cursor.fetchone()[0]) >= MONITORS_PER_ACCOUNT_MAX:
                raise TooManyMonitorsError(
                    f"account {account_id} has {MONITORS_PER_ACCOUNT_MAX} monitors already"
                )
            cursor.execute(
                f"INSERT INTO ledger_monitors ({COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    monitor_id,
                    account_id,
                    field,
                    operator,
                    threshold,
                    description,
                    time.time(),
                    since_position,
                ),
            )
        monitor = self.get(monitor_id)
        assert monitor is not None
        return monitor

    def get(self, monitor_id: str) -> Monitor | None:
        with self.database.transaction() as cursor:
            cursor.execute(
                f"SELECT {COLUMNS} FROM ledger_monitors WHERE monitor_id = ?",  # noqa: S608
                (monitor_id,),
            )
            row = cursor.fetchone()
        return None if row is None else Monitor.of(row)

    def page(self, account_id: str | None, after: str, limit: int) -> list[Monitor]:
        statement = f"SELECT {COLUMNS} FROM ledger_monitors WHERE monitor_id > ?"  # noqa: S608
        params: list[Any] = [after]
        if account_id is not None:
            statement += " AND account_id = ?"
            params.append(account_id)
        statement += " ORDER BY monitor_id LIMIT ?"
        params.append(limit)
        with self.database.transaction() as cursor:
            cursor.execute(statement, params)
            return [Monitor.of(row) for row in cursor.fetchall()]

    def delete(self, monitor_id: str) -> bool:
        with self.database.transaction(write=True) as cursor:
            cursor.execute("SELECT 1 FROM ledger_monitors WHERE monitor_id = ?", (monitor_id,))
            if cursor.fetchone() is None:
                return False
            cursor.execute("DELETE FROM ledger_monitors WHERE monitor_id = ?", (monitor_id,))
        return True
