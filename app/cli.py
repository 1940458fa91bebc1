"""The `ledger` command: thin wrappers over the application and the projections."""

import contextlib
import functools
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Final, NoReturn

import typer
import uvicorn
from litestar import Litestar
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from typer.core import TyperGroup

from app.application.ledger import Ledger
from app.audit.anchors import (
    AnchorBreak,
    AnchorFileError,
    append_anchor,
    check_against,
    read_anchors,
    take_anchor,
)
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
from app.bootstrap import (
    UNUSABLE_STORE_ERRORS,
    asgi_app,
    build_app,
    configure_logging,
    one_line,
    open_keys,
    opening_read_model,
    settle_heap,
)
from app.bootstrap import open_ledger as open_configured_ledger
from app.compat import ProblemHttpToolsProtocol
from app.domain.errors import LedgerError
from app.domain.errors import ValidationError as LedgerValidationError
from app.domain.times import TIME_SYNTAX, parse_time
from app.events.service import EventServices
from app.persistence.decoding import DecodedBatches
from app.persistence.faults import STORE_ERRORS
from app.persistence.keys import SCOPES, KeyFormatError, KeyStore, parse_key
from app.persistence.last_audit import LastAuditFile
from app.settings import ConfigurationError, Settings
from app.worker_processes import (
    ListenError,
    SupervisedServer,
    WorkerProcesses,
    listening_sockets,
)
from app.writer.server import run_writer
from projections.catchup import collect_less_often, reads_the_log_itself
from projections.digest import DigestCheckpoints
from projections.runner import GenerationPointer, ProjectionWorkers, open_view
from projections.runner import rebuild as rebuild_views
from projections.view_sets import (
    WATCH_SECONDS_DEFAULT,
    WATCH_SECONDS_MAX,
    ViewSet,
    ViewSetInUseError,
    choose,
    drop_set,
    find_sets,
    idle_sets,
)

# Exit statuses besides 0 (success) and 1 (the audit found violations).
EXIT_CONFIGURATION: Final = 2  # a setting or an option cannot be used (click's usage errors too)
EXIT_STORE_FAILED: Final = 3  # a store failed while the command ran
EXIT_IN_USE: Final = 4  # a view set to drop may still be in use: it was left as it is
EXIT_INTERRUPTED: Final = 130


class LedgerCommands(TyperGroup):
    """Every command's configuration or store failure becomes one line on stderr and a
    non-zero exit, never a traceback (the process boundary of the command line)."""

    def invoke(self, ctx: Any) -> Any:  # typer.Context, whose base typer keeps private
        try:
            return super().invoke(ctx)
        except typer.BadParameter as error:
            typer.echo(f"ledger: error: {error.format_message()}", err=True)
            raise typer.Exit(EXIT_CONFIGURATION) from None
        except ConfigurationError as error:
            typer.echo(f"ledger: error: {error}", err=True)
            raise typer.Exit(EXIT_CONFIGURATION) from None
        except UNUSABLE_STORE_ERRORS as error:
            typer.echo(f"ledger: error: a store failed: {one_line(error)}", err=True)
            raise typer.Exit(EXIT_STORE_FAILED) from None


cli = typer.Typer(
    cls=LedgerCommands,
    help="Credits ledger: an event-sourced, double-entry ledger service.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
keys_cli = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
cli.add_typer(keys_cli, name="keys")
views_cli = typer.Typer(
    help="View sets (generations, versions of the tables): list, drop the old.",
    no_args_is_help=True,
)
cli.add_typer(views_cli, name="views")


def load_settings() -> Settings:
    return Settings.load()


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
    settings = load_settings()
    configure_logging(settings)
    if workers > 1 and projections:
        raise typer.BadParameter(
            "several API processes need --no-projections and a separate `ledger project`"
        )
    given = settings.bootstrap_key()
    if given is not None:
        try:
            parse_key(given)
        except KeyFormatError as error:
            raise ConfigurationError(f"the bootstrap admin key is not usable: {error}") from None
    # Every store is opened (and found usable) before a first key is made and shown.
    if workers > 1:
        # Each worker process opens the stores itself: say what is wrong here, once.
        open_configured_ledger(settings).close()
        with opening_read_model(settings):
            GenerationPointer(settings.read_model_url)
        # One writer process owns the ledger's committer; the workers send it their
        # writes over a socket in a directory only this user can enter, made afresh for
        # this server (decision 0035).
        with tempfile.TemporaryDirectory(prefix="ledger-writer-") as directory:
            writer_socket = writer_socket_in(directory)
            try:
                sockets = listening_sockets(host, port, workers)
            except ListenError as error:
                raise ConfigurationError(str(error)) from None
            show_first_key(open_keys(settings), given)
            supervisor = WorkerProcesses(
                sockets,
                functools.partial(worker_command, writer_socket=writer_socket),
                stop_seconds=GRACEFUL_SHUTDOWN_SECONDS + WORKER_STOP_MARGIN_SECONDS,
                healthcheck_seconds=WORKER_HEALTHCHECK_SECONDS,
                writer=functools.partial(writer_command, writer_socket),
            )
            started = supervisor.run()
        if not started:
            typer.echo(
                "ledger: error: a worker or the writer process failed to start (its log is above)",
                err=True,
            )
            raise typer.Exit(EXIT_STORE_FAILED)
        exit_now()
    # On the embedded default the projection workers run in a child `ledger project`
    # process, not as threads beside the writer: the two then use both cores (decision
    # 0013, measured there); elsewhere they stay threads of this process.
    child = projections and is_embedded(settings)
    app = build_app(settings, projections=projections and not child)
    show_first_key(app.state.services.keys, given)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal into the
    # handler that was there before it: make that one a clean exit (status 0, logs flushed).
    signal.signal(signal.SIGTERM, _exit_cleanly)
    server = StreamEndingServer(server_config(app, host=host, port=port), app.state.services.events)
    settle_heap()
    try:
        with projections_child(settings.projections_nice) if child else contextlib.nullcontext():
            server.run()
    except SystemExit as stop:  # _exit_cleanly, after the drain and the app's shutdown
        if stop.code:
            raise
    if server.started:
        exit_now()


# How long SIGTERM waits for in-flight requests (a write answers within its deadline,
# LEDGER_WRITE_TIMEOUT_SECONDS; a read waiting for the views within its own).
GRACEFUL_SHUTDOWN_SECONDS: Final = 30
# How long the projections child may take to stop before it is killed: its views are
# exactly-once (each batch commits with its checkpoint), so a kill loses nothing.
PROJECTIONS_CHILD_STOP_SECONDS: Final = 5.0
# A worker that has not answered the supervisor's ping within this is killed and
# replaced (uvicorn's 5 s killed workers still importing the app on a busy machine).
WORKER_HEALTHCHECK_SECONDS: Final = 60.0
# Past its drain (GRACEFUL_SHUTDOWN_SECONDS) a worker still closes its stores.
WORKER_STOP_MARGIN_SECONDS: Final = 10.0


def server_config(app: Litestar, **address: Any) -> uvicorn.Config:
    """uvicorn's settings for one API process (the address: unless given a socket)."""
    return uvicorn.Config(
        app,
        **address,
        log_config=None,
        access_log=False,  # the app logs each request itself
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        http=ProblemHttpToolsProtocol,  # unreadable requests answer problem+json too
    )


# The writer process's socket, in the supervisor's private directory.
WRITER_SOCKET_NAME: Final = "writer.sock"
# The longest path a Unix socket may have on Linux (sun_path's 108 bytes, its NUL included).
UNIX_SOCKET_PATH_MAX: Final = 107


def writer_socket_in(directory: str) -> Path:
    """The writer process's socket in ``directory``: a path too long for a Unix socket
    (a long TMPDIR) is said as such before anything starts, not as a writer that fails
    to start."""
    path = Path(directory) / WRITER_SOCKET_NAME
    length = len(os.fsencode(path))
    if length > UNIX_SOCKET_PATH_MAX:
        raise ConfigurationError(
            f"the writer process's socket path {path} is {length} bytes, longer than a Unix "
            f"socket's may be ({UNIX_SOCKET_PATH_MAX}): set TMPDIR to a shorter directory"
        )
    return path


def worker_command(
    listen_fd: int, control_fd: int, *, writer_socket: Path | None = None
) -> list[str]:
    """How the supervisor starts one API worker of ``serve --workers N``."""
    writer = () if writer_socket is None else ("--writer-socket", str(writer_socket))
    return [
        sys.executable,
        "-c",
        "from app.cli import main; main()",
        "serve-worker",
        *("--listen-fd", str(listen_fd), "--control-fd", str(control_fd)),
        *writer,
    ]


def writer_command(writer_socket: Path, control_fd: int) -> list[str]:
    """How the supervisor starts the writer process of ``serve --workers N``."""
    return [
        sys.executable,
        "-c",
        "from app.cli import main; main()",
        "serve-writer",
        *("--socket", str(writer_socket), "--control-fd", str(control_fd)),
    ]


@cli.command("serve-worker", hidden=True)
def serve_worker(
    listen_fd: Annotated[int, typer.Option(help="The listening socket (inherited)")],
    control_fd: Annotated[int, typer.Option(help="The supervisor's socket pair (inherited)")],
    writer_socket: Annotated[
        Path | None, typer.Option(help="The writer process's socket (else: write here)")
    ] = None,
) -> None:
    """One API process of ``serve --workers N``, started by its supervisor: serves the
    listening socket it was given (its own, decision 0029), answers the supervisor's
    pings, and drains on SIGTERM or SIGINT as the single process does. Its writes go to
    the writer process at ``writer_socket`` (decision 0035)."""
    listener = socket.socket(fileno=listen_fd)
    control = socket.socket(fileno=control_fd)
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    app = asgi_app(writer_socket=writer_socket)
    server = StreamEndingServer(server_config(app), app.state.services.events, control=control)
    try:
        server.run(sockets=[listener])
    except SystemExit as stop:  # _exit_cleanly, after the drain and the app's shutdown
        if stop.code:
            raise
    exit_now()


@cli.command("serve-writer", hidden=True)
def serve_writer(
    socket_path: Annotated[Path, typer.Option("--socket", help="Where to listen")],
    control_fd: Annotated[int, typer.Option(help="The supervisor's socket pair (inherited)")],
) -> None:
    """The writer process of ``serve --workers N``, started by its supervisor: the one
    ledger that writes, for every API worker (decision 0035)."""
    settings = load_settings()
    configure_logging(settings)
    control = socket.socket(fileno=control_fd)
    ledger = open_configured_ledger(settings)
    try:
        settle_heap()
        run_writer(ledger, socket_path, control)
    finally:
        ledger.close()
    exit_now()


def is_embedded(settings: Settings) -> bool:
    """SQLite files for both the log and the views (the default with no configuration)."""
    return settings.event_store_url.startswith("sqlite") and settings.read_model_url.startswith(
        "sqlite"
    )


class StreamEndingServer(SupervisedServer):
    """uvicorn's server, which also ends the open event streams when asked to exit:
    they never end by themselves, and the drain would otherwise wait its whole timeout
    for them (clients reconnect elsewhere with Last-Event-ID)."""

    def __init__(
        self,
        config: uvicorn.Config,
        events: EventServices | None,
        *,
        control: socket.socket | None = None,
    ) -> None:
        super().__init__(config, control=control)
        self.events = events

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.events is not None:
            self.events.feed.closing.set()
        super().handle_exit(sig, frame)


@contextmanager
def projections_child(nice: int = 0) -> Iterator[subprocess.Popen[bytes]]:
    """``ledger project`` as a child of this process: started with it, stopped with it
    (SIGTERM, then SIGKILL past the bound), and gone by itself if this process dies.
    It runs ``nice`` steps below this process: when both want the CPU, the writes go
    first and the views catch up in larger (cheaper) batches (decision 0013)."""
    argv = [sys.executable, "-c", "from app.cli import main; main()", "project"]
    child = subprocess.Popen([*argv, "--parent-pid", str(os.getpid()), "--nice", str(nice)])
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(timeout=PROJECTIONS_CHILD_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def show_first_key(keys: KeyStore, given: str | None) -> None:
    """First start: store the operator's admin key, or make one and show it once."""
    first_key = keys.create_first_admin_key(given)
    if first_key is not None:
        typer.echo(
            "No API key existed, so one admin key was created. It is shown only this once;"
            " store it now:",
            err=True,
        )
        typer.echo(first_key)


def _exit_cleanly(*_: object) -> None:
    raise SystemExit(0)


def exit_now() -> NoReturn:
    """End a long-running command that has closed everything it opened (status 0), logs
    and output flushed, without the interpreter's own finalization: a collection over
    every object and the modules' teardown cost about half a second of CPU per process
    (``ledger serve`` and its projections child each), so on a busy machine SIGTERM took
    seconds after the work was done."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def start_projections(
    settings: Settings, ledger: Ledger, *, events_too: bool
) -> tuple[ProjectionWorkers, EventServices]:
    """What ``ledger project`` starts beside its ledger: the view workers, and the event
    feed's (with the webhook deliveries when ``events_too``)."""
    # The feed projector and the log digest take the batches the views' runner reads and
    # decodes (on SQLite and PostgreSQL, where the runner reads the log itself) instead
    # of reading them.
    shared = DecodedBatches() if reads_the_log_itself(ledger.recorder) else None
    with opening_read_model(settings):
        workers = ProjectionWorkers(
            settings.event_store_url, settings.read_model_url, ledger, shared=shared
        )
        workers.start()
        events = EventServices.build(settings, ledger, run_workers=events_too, shared=shared)
    return workers, events


@cli.command()
def project(
    events_too: Annotated[
        bool,
        typer.Option(
            "--events/--no-events",
            help="Also run the event feed and webhook deliveries (else: `ledger deliver`)",
        ),
    ] = True,
    parent_pid: Annotated[
        int | None, typer.Option(hidden=True, help="Stop when this process is gone")
    ] = None,
    nice: Annotated[
        int, typer.Option(hidden=True, min=0, max=19, help="Lower own CPU priority this much")
    ] = 0,
) -> None:
    """Run the projection workers alone (and the expiry of pending transfers)."""
    settings = load_settings()
    configure_logging(settings)
    collect_less_often()
    ledger = open_configured_ledger(settings)
    if nice:
        # The writer (hold and grant expiry) keeps the API's priority: on SQLite it may
        # hold the store's write lock, and a lower-priority holder would keep the API's
        # writes waiting. Every thread started after this line (the workers) inherits it.
        ledger.committer.start()
        os.nice(nice)
    workers, events = start_projections(settings, ledger, events_too=events_too)
    try:
        # Workers restart themselves (supervised); the heartbeat says how they are.
        beat_until_signalled(
            settings.data_dir / "projections.heartbeat", workers.heartbeat, parent_pid
        )
    finally:
        events.close()
        workers.stop()
        ledger.close()
    exit_now()


@cli.command()
def deliver() -> None:
    """Run the public event feed's projector and the webhook deliveries alone."""
    settings = load_settings()
    configure_logging(settings)
    ledger = open_configured_ledger(settings)
    with opening_read_model(settings):
        events = EventServices.build(settings, ledger, run_workers=True)
    try:
        beat_until_signalled(settings.data_dir / "deliver.heartbeat", events.heartbeat)
    finally:
        events.close()
        ledger.close()
    exit_now()


def beat_until_signalled(
    heartbeat: Path, beat: Callable[[], dict[str, Any]], parent_pid: int | None = None
) -> None:
    """Until SIGINT or SIGTERM (or, for a child of ``ledger serve``, until its parent is
    gone): every second, write what ``beat`` says to the heartbeat file, for a container
    health check or an operator."""
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    while not stopping.wait(1.0):
        if parent_pid is not None and os.getppid() != parent_pid:
            return
        heartbeat.write_text(json.dumps(beat()))


@cli.command()
def rebuild() -> None:
    """Rebuild the views from position zero beside the live ones, then switch over."""
    settings = load_settings()
    open_configured_ledger(settings, must_hold_ledger=True).close()
    with Progress(
        TextColumn("rebuilding views"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeRemainingColumn(),
    ) as progress:
        task = progress.add_task("rebuild", total=None)

        def show(checkpoint: int, head: int) -> None:
            progress.update(task, completed=checkpoint, total=head)

        with opening_read_model(settings):
            generation = rebuild_views(settings.event_store_url, settings.read_model_url, show)
    typer.echo(f"switched to view generation {generation}")


VIEW_SET_COLUMNS: Final = (
    "name",
    "version",
    "generation",
    "state",
    "size_bytes",
    "checkpoint",
    "reached_at",
    "written_at",
    "in_use",
)
# The table's columns (``--format json`` has them all, with why a set is in use).
VIEW_SET_TABLE: Final = (
    "name",
    "version",
    "generation",
    "state",
    "size",
    "checkpoint",
    "reached (UTC)",
    "in use",
)


@views_cli.command("list")
def views_list(
    output_format: Annotated[str, typer.Option("--format", help="table | json")] = "table",
) -> None:
    """Every view set of the read model: this version's current one (and the one a
    rebuild is filling), and those older generations and versions left behind."""
    if output_format not in ("table", "json"):
        raise typer.BadParameter("--format must be table or json")
    settings = load_settings()
    with opening_read_model(settings):
        sets = find_sets(settings.read_model_url)
    rows = [view_set_row(view_set) for view_set in sets]
    if output_format == "json":
        typer.echo(json.dumps(rows))
        return
    lines = [VIEW_SET_TABLE]
    for row in rows:
        reached = row["reached_at"]
        lines.append(
            (
                row["name"],
                str(row["version"] or "?"),
                str(row["generation"]),
                row["state"],
                megabytes(row["size_bytes"]),
                str(row["checkpoint"] or ""),
                reached[:16].replace("T", " ") if reached else "",
                "yes" if row["in_use"] else "",
            )
        )
    widths = [max(len(line[column]) for line in lines) for column in range(len(VIEW_SET_TABLE))]
    for line in lines:  # one set a line, whatever the terminal's width (names are long)
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def view_set_row(view_set: ViewSet) -> dict[str, Any]:
    row = asdict(view_set)
    row["version"] = view_set.version or view_set.tables_version
    del row["tables_version"]
    for name in ("reached_at", "written_at"):
        row[name] = None if row[name] is None else row[name].isoformat()
    return {column: row[column] for column in VIEW_SET_COLUMNS}


def megabytes(size_bytes: int) -> str:
    return f"{size_bytes / 1_000_000:.1f} MB"


@views_cli.command("drop")
def views_drop(
    names: Annotated[
        list[str] | None, typer.Argument(help="Sets by name (`views list`); else every old one")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Drop them (else only say which)")] = False,
    watch_seconds: Annotated[
        float,
        typer.Option(
            min=0, max=WATCH_SECONDS_MAX, help="How long to watch their checkpoints first"
        ),
    ] = WATCH_SECONDS_DEFAULT,
) -> None:
    """Drop view sets other than the current one and one a rebuild is filling: those
    named, or every other. Without --yes it only says what it would drop. A set another
    process holds, or whose checkpoint moves while watched, is left as it is (exit 4)."""
    settings = load_settings()
    url = settings.read_model_url
    with opening_read_model(settings):
        sets = find_sets(url)
    try:
        chosen = choose(sets, names or [])
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if not chosen:
        typer.echo("no old view sets")
        return
    if not yes:
        for view_set in chosen:
            typer.echo(f"would drop {view_set.name} ({megabytes(view_set.size_bytes)})")
        typer.echo("nothing dropped: add --yes to drop them", err=True)
        return
    refused = 0
    for view_set, seen_in_use in idle_sets(url, chosen, watch_seconds).items():
        reason = seen_in_use
        if reason is None:
            try:
                drop_set(url, view_set.name)
            except ViewSetInUseError as error:
                reason = str(error)
        if reason is None:
            typer.echo(f"dropped {view_set.name} ({megabytes(view_set.size_bytes)})")
        else:
            typer.echo(f"ledger: error: {view_set.name} is in use, not dropped: {reason}", err=True)
            refused += 1
    if refused:
        raise typer.Exit(EXIT_IN_USE)


DURATION: Final = re.compile(r"(\d{1,6})([dhm])")
DURATION_UNITS: Final = {"d": "days", "h": "hours", "m": "minutes"}
KEY_COLUMNS: Final = ("key_id", "name", "scope", "state", "created_at", "expires_at")


def expiry_of(text: str | None, now: datetime) -> datetime | None:
    """``--expires``: an instant in the ledger's time syntax, or a duration from now
    (``90d``, ``12h``, ``30m``)."""
    if text is None:
        return None
    duration = DURATION.fullmatch(text)
    if duration:
        return now + timedelta(**{DURATION_UNITS[duration[2]]: int(duration[1])})
    try:
        return parse_time(text, "--expires")
    except LedgerValidationError as error:
        raise typer.BadParameter(f"{error.detail}, or a duration such as 90d, 12h, 30m") from None


@keys_cli.command("create")
def keys_create(
    scope: Annotated[str, typer.Option(help="read | write | admin")],
    name: Annotated[
        str | None, typer.Option(help="What the key is for, e.g. billing-service")
    ] = None,
    expires: Annotated[
        str | None,
        typer.Option(help=f"When it stops working: {TIME_SYNTAX}, or a duration (90d, 12h)"),
    ] = None,
) -> None:
    """Create a key; it is printed once, alone on the last line."""
    if scope not in SCOPES:
        raise typer.BadParameter(f"scope must be one of {', '.join(SCOPES)}")
    expires_at = expiry_of(expires, datetime.now(tz=UTC))
    try:
        key = open_keys(load_settings()).create(scope, name=name, expires_at=expires_at)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    until = f", valid until {expires_at.isoformat()}" if expires_at else ""
    typer.echo(f"created a {scope} key{until}; it is shown only this once:", err=True)
    typer.echo(key)


@keys_cli.command("list")
def keys_list(
    output_format: Annotated[str, typer.Option("--format", help="table | json")] = "table",
) -> None:
    """List keys (ids, names, scopes, states; secrets are never stored)."""
    if output_format not in ("table", "json"):
        raise typer.BadParameter("--format must be table or json")
    now = datetime.now(tz=UTC)
    rows = [{**asdict(key), "state": key.state(now)} for key in open_keys(load_settings()).list()]
    if output_format == "json":
        typer.echo(json.dumps([{c: row[c] for c in (*KEY_COLUMNS, "revoked_at")} for row in rows]))
        return
    table = Table(*KEY_COLUMNS)
    for column in table.columns:
        column.overflow = "fold"
    for row in rows:
        table.add_row(*(str(row[column] or "") for column in KEY_COLUMNS))
    Console().print(table)


@keys_cli.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by its id (the part after `lk_`)."""
    if not open_keys(load_settings()).revoke(key_id):
        typer.echo(f"no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


# Audit tooling ---------------------------------------------------------------------------

AsOf = Annotated[str | None, typer.Option("--as-of", help=f"An instant: {TIME_SYNTAX}")]
AtPosition = Annotated[int | None, typer.Option("--at-position", min=0, help="Log position")]


def parse_instant(as_of: str | None, at_position: int | None) -> Instant:
    """The instant the options name, in the same syntax as the API's ``as_of``."""
    if as_of is not None and at_position is not None:
        raise typer.BadParameter("use --as-of or --at-position, not both")
    if as_of is None:
        return Instant(position=at_position)
    try:
        moment = parse_time(as_of, "--as-of")
    except LedgerValidationError as error:
        raise typer.BadParameter(error.detail) from None
    if moment > datetime.now(tz=UTC):
        raise typer.BadParameter(f"--as-of {as_of} is in the future")
    return Instant(moment=moment)


def check_reached(ledger: Ledger, instant: Instant) -> None:
    """A position past the head is refused, as the API refuses it."""
    head = ledger.recorder.max_notification_id() or 0
    if instant.position is not None and instant.position > head:
        raise typer.BadParameter(
            f"--at-position {instant.position} is past the head of the log (position {head})"
        )


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
            raise typer.Exit(EXIT_INTERRUPTED) from None


def open_ledger() -> Ledger:
    """The ledger the audit tools read: refused when the store does not exist or holds
    no ledger (they never create one)."""
    return open_configured_ledger(load_settings(), must_hold_ledger=True)


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
    check_reached(ledger, instant)
    with progress_bar("replaying") as on_page:
        accounts = replay(ledger, instant, on_page=on_page)
    if account:
        wanted = set(account)
        accounts = [a for a in accounts if a.id in wanted]
    if output_format == "table" and out is None:
        table = Table(title=f"Balances at {instant.describe()}")
        for column in REPLAY_COLUMNS:
            table.add_column(
                column,
                justify="right" if column not in ("id", "unit", "status") else "left",
                overflow="fold",  # ids and amounts are wrapped, never cut
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
    anchors: Annotated[
        Path | None,
        typer.Option("--anchors", help="Prove the log still extends every anchor in this file"),
    ] = None,
) -> None:
    """Check every invariant over the whole log (and the projections against it).
    Exits 1 on any violation."""
    settings = load_settings()
    instant = parse_instant(as_of, at_position)
    ledger = open_ledger()
    check_reached(ledger, instant)
    view = None
    if projections:
        with opening_read_model(settings):
            view = open_view(
                settings.read_model_url, GenerationPointer(settings.read_model_url).current
            )
    with progress_bar("auditing") as on_page:
        report = Auditor(ledger, instant, view).run(on_page)
    LastAuditFile(settings.last_audit_path).save(
        json.loads(report_json(report)), datetime.now(tz=UTC)
    )
    text = report_json(report) if output_format == "json" else report_text(report)
    anchored = True
    if anchors is not None:
        anchor_break = check_anchors(ledger, settings, anchors)
        anchored = anchor_break is None
        text = with_anchor_result(text, output_format, anchor_break)
    if out is not None:
        write_atomically(out, text)
    typer.echo(text, nl=False)
    raise typer.Exit(0 if report.ok and anchored else 1)


def check_anchors(ledger: Ledger, settings: Settings, path: Path) -> AnchorBreak | None:
    """The log against the anchors in ``path`` and the digest checkpoints kept beside
    the views (when the read model can be opened)."""
    try:
        references = read_anchors(path)
    except (OSError, AnchorFileError) as error:
        raise typer.BadParameter(f"--anchors: {error}") from None
    try:
        references += DigestCheckpoints(settings.read_model_url).all()
    except STORE_ERRORS as error:
        typer.echo(f"note: digest checkpoints not read ({error}); anchors only", err=True)
    with progress_bar("checking anchors"):
        return check_against(ledger.recorder, references)


def with_anchor_result(text: str, output_format: str, anchor_break: AnchorBreak | None) -> str:
    if output_format == "json":
        document = json.loads(text)
        document["anchors"] = None if anchor_break is None else asdict(anchor_break)
        return json.dumps(document, indent=2) + "\n"
    if anchor_break is None:
        return text + "anchors: the log extends every anchor\n"
    return text + (
        f"anchors: BROKEN ({anchor_break.kind}) at position {anchor_break.position}: "
        f"{anchor_break.detail}\n"
    )


@cli.command("anchor")
def anchor_command(
    append: Annotated[
        Path | None,
        typer.Option("--append", help="Also append the anchor to this file (keep it elsewhere)"),
    ] = None,
) -> None:
    """Print the head of the log's running digest (position, digest): an anchor that
    `ledger audit --anchors` later proves the log still extends."""
    settings = load_settings()
    ledger = open_ledger()
    try:
        start = None
        try:
            start = DigestCheckpoints(settings.read_model_url).newest()
        except STORE_ERRORS:
            start = None  # no checkpoints to start from: digest the whole log
        anchor = take_anchor(ledger.recorder, start)
    finally:
        ledger.close()
    if append is not None:
        append_anchor(append, anchor)
    typer.echo(anchor.line())


@cli.command("explain")
def explain_command(
    account_id: Annotated[str, typer.Argument(help="The account to explain")],
    as_of: AsOf = None,
    output_format: Annotated[str, typer.Option("--format", help="table | csv | json")] = "table",
) -> None:
    """Why is this balance what it is: the statement from opening, line by line.

    Without --as-of it reads the account's own stream. With --as-of it answers at the
    audit's cut of the log (as `replay --as-of` and the API's as_of do): it reads the time
    stamps and commit marks of the log's events from its start up to the first one
    recorded after that time (or until the account's last commit is in), then the
    account's stream, so its cost grows with the log before that time (about 0.5 s for
    300,000 events, 20-30 times explain without --as-of), not with the account."""
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
    check_reached(ledger, instant)
    if out is None:
        write_journal(ledger, instant, sys.stdout, journal_format)
        return
    with progress_bar("exporting") as on_page, atomic_text_file(out) as stream:
        count = write_journal(ledger, instant, stream, journal_format, on_page)
    typer.echo(f"wrote {count} transactions to {out}", err=True)


def main() -> None:
    cli()
