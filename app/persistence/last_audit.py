"""The result of the last ``ledger audit``, kept where the explorer can show it: a JSON
file under the data directory, replaced atomically (a reader never sees half of one)."""

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LastAudit:
    finished_at: datetime
    ok: bool
    violation_count: int
    events: int
    accounts: int
    transfers: int
    instant: str
    projections_checked: bool
    violations: list[dict[str, Any]]


class LastAuditFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, report: dict[str, Any], finished_at: datetime) -> None:
        """``report`` is the audit's JSON report (``report_json``), as a mapping."""
        record = {**report, "finished_at": finished_at.astimezone(UTC).isoformat()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=".last-audit-")
        with os.fdopen(handle, "w") as stream:
            json.dump(record, stream)
        Path(temporary).replace(self.path)

    def load(self) -> LastAudit | None:
        """The last result, or None when no audit has run (or its file is unreadable)."""
        try:
            record = json.loads(self.path.read_text())
            return LastAudit(
                finished_at=datetime.fromisoformat(record["finished_at"]),
                ok=bool(record["ok"]),
                violation_count=int(record["violation_count"]),
                events=int(record["events"]),
                accounts=int(record["accounts"]),
                transfers=int(record["transfers"]),
                instant=str(record["instant"]),
                projections_checked=bool(record["projections_checked"]),
                violations=list(record["violations"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
