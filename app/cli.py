"""The `ledger` command: thin wrappers over the application and the projections."""

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
import uvicorn
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from app.application.ledger import Ledger
from app.audit.audit import Auditor
from app.audit.explain import explain
from app.audit.export import FORMATS, write_journal
from app.audit.log import Instant
from app.audit.replay import COLUMNS as REPLAY_COLUMNS
from app.audit.replay import atomic_text_file, render, replay, write_atomically
from app.audit.reporting import (
    RateColumn,
    report_json,
    report_text,
    write_statement,
)
from app.bootstrap import build_app, configure_logging
from app.domain.errors import LedgerError
from app.persistence.keys import SCOPES, KeyStore
from app.settings import Settings
from projections.runner import GenerationPointer, ProjectionWorkers, open_view
from projections.runner import rebuild as rebuild_views

cli = typer.Typer(
    help="Credits ledger: an event-sourced, double-entry ledger service.",
    no_args_is_help=True,
)
keys_cli = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    projections: Annotated[
        bool, typer.Option("--projections/--no-projections", help="Run the workers here")
    ] = True,
    workers: Annotated[int, typer.Option(min=1, max=64, help="API processes")] = 1,
) -> None:
    """Run the HTTP API (and, unless --no-projections, the projection workers)."""
    settings = Settings()
    configure_logging(settings)
    first_key = KeyStore(settings.keys_url).create_first_admin_key()
    if first_key is not None:
        typer.echo(
            "No API key existed, so one admin key was created. It is shown only this once;"
            " store it now:",
            err=True,
        )
        typer.echo(first_key)
    if workers > 1:
        if projections:
            raise typer.BadParameter(
                "several API processes need --no-projections and a separate `ledger project`"
            )
        uvicorn.run(
            "app.bootstrap:asgi_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_config=None,
            timeout_graceful_shutdown=30,
        )
        return
    app = build_app(settings, projections=projections)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal into the
    # handler that was there before it: make that one a clean exit (status 0, logs flushed).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=30
    )


def _exit_cleanly(*_: object) -> None:
    raise SystemExit(0)


@cli.command()
def project() -> None:
    """Run the projection workers alone (and the expiry of pending transfers)."""
    settings = Settings()
    configure_logging(settings)
    ledger = Ledger(settings.ledger_env())
    workers = ProjectionWorkers(settings.event_store_url, settings.read_model_url, ledger)
    workers.start()
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    heartbeat = settings.data_dir / "projections.heartbeat"
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    try:
        while not stopping.wait(1.0):
            workers.check()  # re-raises a dead worker's error: the process exits non-zero
            heartbeat.write_text(json.dumps(asdict(workers.lag())))
    finally:
        workers.stop()
        ledger.close()


@cli.command()
def rebuild() -> None:
    """Rebuild the views from position zero beside the live ones, then switch over."""
    settings = Settings()
    with Progress(
        TextColumn("rebuilding views"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
    ) as progress:
        task = progress.add_task("rebuild", total=None)

        def show(checkpoint: int, head: int) -> None:
            progress.update(task, completed=checkpoint, total=head)

        generation = rebuild_views(settings.event_store_url, settings.read_model_url, show)
    typer.echo(f"switched to view generation {generation}")


@keys_cli.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="read | write | admin")],
) -> None:
    """Create a key; it is printed once, alone on the last line."""
    if scope not in SCOPES:
        raise typer.BadParameter(f"scope must be one of {', '.join(SCOPES)}")
    key = KeyStore(Settings().keys_url).create(scope)
    typer.echo(f"created a {scope} key; it is shown only this once:", err=True)
    typer.echo(key)


@keys_cli.command("list")
def keys_list() -> None:
    """List keys (ids and scopes; secrets are never stored)."""
    for key in KeyStore(Settings().keys_url).list():
        state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
        typer.echo(f"{key.key_id}\t{key.scope}\t{key.created_at}\t{state}")


@keys_cli.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id (the part after `lk_`)."""
    if not KeyStore(Settings().keys_url).revoke(key_id):
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


# Audit tooling ---------------------------------------------------------------------------

AsOf = Annotated[
    str | None,
    typer.Option("--as-of", help="RFC 3339 instant, e.g. 2026-03-01T00:00:00Z (naive = UTC)"),
]
AtPosition = Annotated[int | None, typer.Option("--at-position", min=0, help="Log position")]


def parse_instant(as_of: str | None, at_position: int | None) -> Instant:
    if as_of is not None and at_position is not None:
        raise typer.BadParameter("use --as-of or --at-position, not both")
    if as_of is None:
        return Instant(position=at_position)
    try:
        moment = datetime.fromisoformat(as_of)
    except ValueError:
        raise typer.BadParameter(f"--as-of {as_of!r} is not an RFC 3339 time") from None
    return Instant(moment=moment if moment.tzinfo else moment.replace(tzinfo=UTC))


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[int, int], None]]:
    """A progress bar with a rate on stderr; Ctrl-C ends the run with nothing half-written."""
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("positions"),
        RateColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(label, total=None)
        try:
            yield lambda done, total: progress.update(task, completed=done, total=total)
        except KeyboardInterrupt:
            progress.stop()
            typer.echo("interrupted: nothing was written", err=True)
            raise typer.Exit(130) from None


def open_ledger() -> Ledger:
    return Ledger(Settings().ledger_env())


@cli.command("replay")
def replay_command(
    as_of: AsOf = None,
    at_position: AtPosition = None,
    account: Annotated[list[str] | None, typer.Option("--account", help="Only these")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
    out: Annotated[Path | None, typer.Option("--out", help="Write here (atomically)")] = None,
) -> None:
    """Fold the log from the start to an instant and print every account's balances then.
    Reads the log only, never the projections."""
    if output_format not in ("table", "csv", "json"):
        raise typer.BadParameter("--format must be table, csv or json")
    instant = parse_instant(as_of, at_position)
    ledger = open_ledger()
    with progress_bar("replaying") as on_page:
        accounts = replay(ledger, instant, on_page=on_page)
    if account:
        wanted = set(account)
        accounts = [a for a in accounts if a.id in wanted]
    if output_format == "table" and out is None:
        table = Table(title=f"Balances at {instant.describe()}")
        for column in REPLAY_COLUMNS:
            table.add_column(
                column, justify="right" if column not in ("id", "unit", "status") else "left"
            )
        for replayed in accounts:
            table.add_row(*(str(replayed.row()[column]) for column in REPLAY_COLUMNS))
        Console().print(table)
        return
    text = render(accounts, "csv" if output_format == "table" else output_format)
    if out is None:
        typer.echo(text, nl=False)
    else:
        write_atomically(out, text)
        typer.echo(f"wrote {len(accounts)} accounts to {out}", err=True)


@cli.command("audit")
def audit_command(
    as_of: AsOf = None,
    at_position: AtPosition = None,
    projections: Annotated[
        bool, typer.Option("--projections/--no-projections", help="Compare the views too")
    ] = True,
    output_format: Annotated[str, typer.Option("--format", help="text | json")] = "text",
    out: Annotated[Path | None, typer.Option("--out", help="Also write the report here")] = None,
) -> None:
    """Check every invariant over the whole log (and the projections against it).
    Exits 1 on any violation."""
    settings = Settings()
    instant = parse_instant(as_of, at_position)
    ledger = Ledger(settings.ledger_env())
    view = None
    if projections:
        view = open_view(
            settings.read_model_url, GenerationPointer(settings.read_model_url).current
        )
    with progress_bar("auditing") as on_page:
        report = Auditor(ledger, instant, view).run(on_page)
    text = report_json(report) if output_format == "json" else report_text(report)
    if out is not None:
        write_atomically(out, text)
    typer.echo(text, nl=False)
    raise typer.Exit(0 if report.ok else 1)


@cli.command("explain")
def explain_command(
    account_id: Annotated[str, typer.Argument(help="The account to explain")],
    as_of: AsOf = None,
    output_format: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """Why is this balance what it is: the statement from opening, line by line."""
    if output_format not in ("table", "csv", "json"):
        raise typer.BadParameter("--format must be table, csv or json")
    instant = parse_instant(as_of, None)
    try:
        lines = explain(open_ledger(), account_id, instant.moment)
        write_statement(lines, output_format, account_id, instant)
    except LedgerError as error:
        typer.echo(f"error ({error.code}): {error.detail}", err=True)
        raise typer.Exit(2) from None


@cli.command("export")
def export_command(
    journal_format: Annotated[str, typer.Option("--format", help="beancount | hledger")] = (
        "beancount"
    ),
    as_of: AsOf = None,
    at_position: AtPosition = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write here (atomically)")] = None,
) -> None:
    """Export posted movements as an accounting journal (beancount or hledger)."""
    if journal_format not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}")
    instant = parse_instant(as_of, at_position)
    ledger = open_ledger()
    if out is None:
        write_journal(ledger, instant, sys.stdout, journal_format)
        return
    with progress_bar("exporting") as on_page, atomic_text_file(out) as stream:
        count = write_journal(ledger, instant, stream, journal_format, on_page)
    typer.echo(f"wrote {count} transactions to {out}", err=True)


def main() -> None:
    cli()
