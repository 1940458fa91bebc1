"""The start-up of ``ledger serve`` (one API process's) and of ``ledger project``, for
the tests that start several at once in other OS processes (test_startup_race.py).

It lives in its own importable module (not in a test module) so that a ``spawn``ed
process imports only what it needs.
"""

import os
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Final

import psycopg

from app.bootstrap import build_services, shutdown
from app.bootstrap import open_ledger as open_configured_ledger
from app.cli import start_projections
from app.settings import Settings

START_TIMEOUT_SECONDS: Final = 150.0  # spawned interpreters start slowly on a busy machine
# How long a started ``project`` may take to have each of its supervised workers past
# its own start-up (the log digest creates its table in its thread).
WORKERS_UP_SECONDS: Final = 30.0
WORKERS_UP_POLL_SECONDS: Final = 0.02
SERVE: Final = "serve"
PROJECT: Final = "project"


def settings_for(url: str, data_dir: Path) -> Settings:
    """The settings of a deployment on one PostgreSQL database (log, views, keys). Given
    as arguments, not set in ``os.environ``: the test process runs the reference start-up
    itself, and a later test's ``Settings()`` there would read a dropped database."""
    return Settings(event_store=url, read_model=url, data_dir=data_dir)


def start_up(kind: str, settings: Settings) -> list[str]:
    """Start what ``kind`` starts (``SERVE``: one API process, as ``asgi_app`` builds
    it, which also opens the live views as its first read does; ``PROJECT``: the
    projection and feed workers), then stop it. What went wrong, if anything."""
    if kind == SERVE:
        services = build_services(settings, projections=False)
        try:
            services.queries.source.read_model()
        finally:
            shutdown(services)
        return []
    ledger = open_configured_ledger(settings)
    try:
        workers, events = start_projections(settings, ledger, events_too=True)
        try:
            _wait_for_table(settings.read_model_url, "ledger_log_digest")
        finally:
            events.close()
            workers.stop()
        states = workers.states() + (
            [] if events.workers is None else events.workers.supervisor.states()
        )
        return [f"{kind}: worker {s.name} failed: {s.last_error}" for s in states if s.failures]
    finally:
        ledger.close()


def _wait_for_table(url: str, table: str) -> None:
    deadline = time.monotonic() + WORKERS_UP_SECONDS
    with psycopg.connect(url, autocommit=True) as connection:
        while connection.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {table} within {WORKERS_UP_SECONDS}s")
            time.sleep(WORKERS_UP_POLL_SECONDS)


def start_up_rounds(
    kind: str,
    urls: list[str],
    data_dir: str,
    start: Barrier,
    reports: "Queue[list[str]]",
) -> None:
    """Entry point of a spawned process: for each fresh database in turn, start ``kind``
    at the same moment as the other processes (``start``); report what went wrong."""
    problems: list[str] = []
    for number, url in enumerate(urls):
        settings = settings_for(url, Path(data_dir) / f"{kind}-{os.getpid()}-{number}")
        try:
            start.wait(START_TIMEOUT_SECONDS)
            problems += start_up(kind, settings)
        except Exception as error:  # noqa: BLE001  # reported, so the parent fails loudly
            problems.append(f"{kind}, database {number}: {type(error).__name__}: {error}")
    reports.put(problems)
