"""The `ledger` command: thin wrappers over the application and the projections."""

import signal
import threading
from typing import Annotated

import typer
import uvicorn
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from app.application.ledger import Ledger
from app.bootstrap import build_app, configure_logging
from app.persistence.keys import SCOPES, KeyStore
from app.settings import Settings
from projections.runner import ProjectionWorkers
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
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=False, timeout_graceful_shutdown=30
    )


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
    try:
        while not stopping.wait(1.0):
            workers.check()
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


def main() -> None:
    cli()
