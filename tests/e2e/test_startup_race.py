"""Processes starting together on a new PostgreSQL database (``ledger project`` and the
API processes of ``ledger serve --workers N --no-projections``, as docker-compose
starts them) each create the schema they need: the log's tables and write function,
the views, the generation pointer, the keys, the feed, the digest. PostgreSQL's
``CREATE … IF NOT EXISTS`` and ``CREATE OR REPLACE`` are not safe against a concurrent
creator (a duplicate ``pg_type`` row, "tuple concurrently updated"): every one of them
must start all the same, and leave the schema whole."""

import multiprocessing
import uuid
from pathlib import Path

import psycopg
import pytest

from projections.runner import view_schema
from tests.e2e.startup_workers import (
    PROJECT,
    SERVE,
    START_TIMEOUT_SECONDS,
    settings_for,
    start_up,
    start_up_rounds,
)
from tests.support.pgserver import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# What starts at once on each new database: two API processes and the projections,
# plus a second ``project`` (a restarted one overlapping the old one, say).
STARTERS = (PROJECT, SERVE, SERVE, SERVE, PROJECT)
# Fresh databases, one after the other: without the schema lock (decision 0032) the
# first few already failed in most runs.
ROUNDS = 20
RESULTS_TIMEOUT_SECONDS = START_TIMEOUT_SECONDS + 120.0

CATALOG = """
SELECT n.nspname || '.' || c.relname || ' ' || c.relkind::text
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
UNION ALL
SELECT n.nspname || '.' || p.proname || ' function'
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1
"""


def catalog(url: str) -> list[str]:
    """Every table, index, sequence, type and function the ledger made, by name."""
    with psycopg.connect(url) as connection:
        return [str(row[0]) for row in connection.execute(CATALOG).fetchall()]


def generation_pointers(url: str) -> list[tuple[int, int | None]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT current_generation, building_generation FROM ledger_view_generation"
        ).fetchall()
    return [(int(row[0]), row[1]) for row in rows]


def test_processes_starting_together_on_a_new_database_all_start_and_leave_the_schema_whole(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    # What one process of each kind, started one after the other, leaves.
    run = uuid.uuid4().hex[:8]
    reference = postgres_server.create_database(f"startup_{run}_reference")
    for kind in (PROJECT, SERVE):
        assert start_up(kind, settings_for(reference, tmp_path / f"reference-{kind}")) == []
    whole = catalog(reference)
    assert any(name.endswith("_write function") for name in whole), whole
    assert any(f"{view_schema(1)}." in name for name in whole), whole

    urls = [postgres_server.create_database(f"startup_{run}_{number}") for number in range(ROUNDS)]
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(STARTERS))
    reports: multiprocessing.Queue[list[str]] = context.Queue()
    processes = [
        context.Process(target=start_up_rounds, args=(kind, urls, str(tmp_path), start, reports))
        for kind in STARTERS
    ]
    for process in processes:
        process.start()
    try:
        problems = [
            problem for _ in processes for problem in reports.get(timeout=RESULTS_TIMEOUT_SECONDS)
        ]
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert problems == []
    for url in urls:
        assert catalog(url) == whole
        assert generation_pointers(url) == [(1, None)]
