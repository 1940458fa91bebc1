"""How audit results look: text and JSON reports, statements, atomic output files."""

import csv
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict
from typing import Any, TextIO

from rich.console import Console
from rich.progress import ProgressColumn, Task
from rich.table import Table
from rich.text import Text

from app.audit.audit import AuditReport
from app.audit.explain import StatementLine
from app.audit.log import Instant

STATEMENT_COLUMNS = [
    "version",
    "recorded_at",
    "transfer_id",
    "kind",
    "counterparty_id",
    "amount",
    "balance",
    "available",
    "debits_pending",
    "credits_pending",
    "hold_fate",
    "metadata",
    "allocations",
]


class RateColumn(ProgressColumn):
    """Positions per second (rich's own speed column speaks of bytes)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} positions/s")


def report_text(report: AuditReport) -> str:
    lines = [
        f"audit of the log up to the head; instant checked: {report.instant.describe()}",
        f"events {report.events}, accounts {report.accounts}, transfers {report.transfers}",
        "unit sums at the head: "
        + (
            ", ".join(f"{unit}={total}" for unit, total in sorted(report.unit_sums.items()))
            or "none"
        ),
        "unit sums at the instant: "
        + (", ".join(f"{u}={t}" for u, t in sorted(report.unit_sums_at_instant.items())) or "none"),
        f"projections compared: {'yes' if report.projections_checked else 'no'}",
        f"violations: {report.violation_count}",
    ]
    for violation in report.violations:
        where = f" @{violation.position}" if violation.position is not None else ""
        lines.append(f"  {violation.kind}: {violation.subject}{where}: {violation.detail}")
    if report.violation_count > len(report.violations):
        lines.append(f"  … and {report.violation_count - len(report.violations)} more")
    lines.append("RESULT: " + ("OK" if report.ok else "VIOLATIONS FOUND"))
    return "\n".join(lines) + "\n"


def report_json(report: AuditReport) -> str:
    return (
        json.dumps(
            {
                "ok": report.ok,
                "instant": report.instant.describe(),
                "events": report.events,
                "accounts": report.accounts,
                "transfers": report.transfers,
                "unit_sums": report.unit_sums,
                "unit_sums_at_instant": report.unit_sums_at_instant,
                "projections_checked": report.projections_checked,
                "violation_count": report.violation_count,
                "violations": [asdict(violation) for violation in report.violations],
            },
            indent=2,
        )
        + "\n"
    )


def write_statement(
    lines: Iterable[StatementLine],
    output_format: str,
    account_id: str,
    instant: Instant,
    stream: TextIO | None = None,
) -> None:
    """Stream the statement: constant memory for CSV and JSON, whatever its length."""
    out = stream or sys.stdout
    if output_format == "csv":
        writer = csv.DictWriter(out, fieldnames=STATEMENT_COLUMNS)
        writer.writeheader()
        for line in lines:
            row = line.row()
            row["metadata"] = json.dumps(row["metadata"], sort_keys=True)
            row["allocations"] = json.dumps(row["allocations"])
            writer.writerow(row)
        return
    if output_format == "json":
        out.write("[")
        for number, line in enumerate(lines):
            out.write(("," if number else "") + "\n  " + json.dumps(line.row(), sort_keys=True))
        out.write("\n]\n")
        return
    table = Table(title=f"{account_id} at {instant.describe()}")
    for column in (
        "recorded_at",
        "transfer_id",
        "kind",
        "counterparty_id",
        "amount",
        "balance",
        "available",
        "hold_fate",
        "metadata",
        "allocations",
    ):
        table.add_column(
            column,
            justify="right" if column in ("amount", "balance", "available") else "left",
            overflow="fold",  # ids are wrapped, never cut
        )
    last: StatementLine | None = None
    for line in lines:
        last = line
        table.add_row(
            line.recorded_at.strftime("%Y-%m-%d %H:%M:%S"),
            line.transfer_id,
            line.kind,
            line.counterparty_id or "",
            f"{line.amount:+d}",
            str(line.balance),
            str(line.available),
            line.hold_fate or "",
            ", ".join(f"{k}={v}" for k, v in sorted(line.metadata.items())),
            allocations_text(line.allocations),
        )
    console = Console(file=out)
    console.print(table)
    if last is not None:
        console.print(
            f"balance {last.balance}, available {last.available}, "
            f"pending debits {last.debits_pending}"
        )
    else:
        console.print("no postings: balance 0")


def allocations_text(allocations: list[dict[str, Any]]) -> str:
    """``promo -10, pack -2``: which lots a line moved (``general`` for the general lot)."""
    return ", ".join(
        f"{a['grant_id'] if a['grant_id'] is not None else 'general'} {a['amount']:+d}"
        for a in allocations
    )
