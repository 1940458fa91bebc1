"""`ledger views list` and `ledger views drop` over a deployment after upgrades: this
version's views (current), an older version's built by a real writer of that version
(here: this code with ``SCHEMA_VERSION`` 5), and a set named as versions 5 and before
named theirs. The current set is never dropped; a set an older writer still holds is
refused and left as it was; an idle one goes, and the current views still answer."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Final, cast

import psycopg
import pytest
from typer.testing import CliRunner

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.cli import EXIT_CONFIGURATION, EXIT_IN_USE, cli
from app.settings import Settings
from projections.runner import GenerationPointer, open_view, start_runner
from projections.schema import SCHEMA_VERSION
from projections.view_sets import TRACKING_TABLE
from tests.e2e.test_cli import assert_one_line_error
from tests.support.waiting import eventually

OLDER_VERSION: Final = 5
WATCH: Final = ("--watch-seconds", "0.5")
PROCESS_START_SECONDS: Final = 60
# An older ledger's projection workers: this code, its views' place named by version 5.
OLDER_PROJECT: Final = (
    "import projections.runner as runner; runner.SCHEMA_VERSION = 5; "
    "from app.cli import cli; cli(['project', '--no-events'])"
)
# A writer that opens the set for each write and closes it between (no lock held).
INTERMITTENT_WRITER: Final = """
import sqlite3, sys, time
position = 1000
while True:
    position += 1
    connection = sqlite3.connect(sys.argv[1])
    with connection:
        connection.execute("UPDATE tracking SET notification_id = ?", [position])
    connection.close()
    time.sleep(0.05)
"""


class Deployment:
    """One ledger's stores, a few transfers in the log and this version's views of it."""

    def __init__(self, backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self.env = {"LEDGER_DATA_DIR": str(tmp_path / "var")}
        if backend == "postgres":
            url = str(request.getfixturevalue("postgres_url"))
            self.env |= {"LEDGER_EVENT_STORE": url, "LEDGER_READ_MODEL": url}
        self.settings = Settings(
            data_dir=tmp_path / "var",
            event_store=self.env.get("LEDGER_EVENT_STORE"),
            read_model=self.env.get("LEDGER_READ_MODEL"),
        )
        ledger = Ledger(self.settings.ledger_env())
        try:
            ledger.open_account(OpenAccount("issuance", "CREDITS", allow_negative=True))
            ledger.open_account(OpenAccount("alice", "CREDITS"))
            for number in range(5):
                ledger.record_transfer(RecordTransfer(f"t-{number}", "issuance", "alice", 10))
            self.head = ledger.recorder.max_notification_id() or 0
        finally:
            ledger.close()
        self.generation = GenerationPointer(self.settings.read_model_url).current
        runner = start_runner(
            self.settings.event_store_url, self.settings.read_model_url, self.generation
        )
        try:
            assert eventually(lambda: runner.view.checkpoint() >= self.head, 30)
        finally:
            runner.__exit__(None, None, None)
        self.current = self.name(self.generation, SCHEMA_VERSION)

    def name(self, generation: int, version: int | None) -> str:
        named = "" if version is None else f"_v{version}"
        if self.backend == "postgres":
            return f"ledger_views_g{generation}{named}"
        return f"views.g{generation}{named.replace('_', '.')}.sqlite"

    def run(self, *args: str) -> tuple[int, str, str]:
        clean = {k: None for k in os.environ if k.startswith("LEDGER_")}
        result = CliRunner().invoke(cli, list(args), env={**clean, **self.env})
        return result.exit_code, result.stdout, result.stderr

    def listed(self) -> dict[str, dict[str, Any]]:
        status, out, err = self.run("views", "list", "--format", "json")
        assert status == 0, err
        return {row["name"]: row for row in json.loads(out)}

    def add_unversioned_set(self) -> str:
        """A set where version 5 and before kept generation 1: a copy of the current
        one's tables that says version 5."""
        name = self.name(self.generation, None)
        if self.backend == "postgres":
            with psycopg.connect(self.settings.read_model_url, autocommit=True) as connection:
                connection.execute(f"CREATE SCHEMA {name}")
                for table in (TRACKING_TABLE, "commits", "entries", "view_schema"):
                    connection.execute(
                        f"CREATE TABLE {name}.{table} AS TABLE {self.current}.{table}"
                    )
                connection.execute(f"UPDATE {name}.view_schema SET version = {OLDER_VERSION}")
        else:
            with (
                closing(sqlite3.connect(self.path(self.current))) as current,
                closing(sqlite3.connect(self.path(name))) as lite,
            ):
                current.backup(lite)  # through the current set's WAL
                with lite:
                    lite.execute("UPDATE view_schema SET version = ?", [OLDER_VERSION])
        return name

    def path(self, name: str) -> Path:
        return self.settings.data_dir / name

    def exists(self, name: str) -> bool:
        if self.backend == "postgres":
            with psycopg.connect(self.settings.read_model_url, autocommit=True) as connection:
                row = connection.execute(
                    "SELECT count(*) FROM pg_namespace WHERE nspname = %s", [name]
                ).fetchone()
            return row is not None and row[0] == 1
        return self.path(name).exists()

    def current_views_answer(self) -> None:
        view = open_view(self.settings.read_model_url, self.generation)
        try:
            assert view.checkpoint() == self.head
            account = view.balance("alice")
            assert account is not None
            assert account.balance == 50
        finally:
            cast(Any, view).datastore.close()

    @contextmanager
    def older_ledger_projecting(self) -> Iterator[str]:
        """A running `ledger project` of version 5 that has caught its views up."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
        process = subprocess.Popen(
            [sys.executable, "-c", OLDER_PROJECT],
            env={**clean, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        name = self.name(self.generation, OLDER_VERSION)
        try:
            caught_up = eventually(
                lambda: self.listed().get(name, {}).get("checkpoint") == self.head,
                PROCESS_START_SECONDS,
            )
            assert caught_up, self.listed()
            yield name
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=PROCESS_START_SECONDS)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Deployment:
    return Deployment(request.param, tmp_path, request)


def test_the_list_shows_every_set_with_the_current_one_marked(deployment: Deployment) -> None:
    unversioned = deployment.add_unversioned_set()

    listed = deployment.listed()

    assert set(listed) == {deployment.current, unversioned}
    current = listed[deployment.current]
    assert current["state"] == "current"
    assert current["version"] == SCHEMA_VERSION
    assert current["generation"] == deployment.generation
    assert current["checkpoint"] == deployment.head
    assert current["size_bytes"] > 0
    assert current["reached_at"] is not None
    older = listed[unversioned]
    assert older["state"] == "other"
    assert older["version"] == OLDER_VERSION  # from its tables: its name has none
    assert older["checkpoint"] == deployment.head
    status, table, _ = deployment.run("views", "list")
    assert status == 0
    header, *lines = [line.split() for line in table.splitlines()]
    assert header[:4] == ["name", "version", "generation", "state"]
    assert {line[0]: line[3] for line in lines} == {
        deployment.current: "current",
        unversioned: "other",
    }


def test_without_yes_nothing_is_dropped(deployment: Deployment) -> None:
    unversioned = deployment.add_unversioned_set()

    status, out, err = deployment.run("views", "drop")

    assert status == 0
    assert f"would drop {unversioned}" in out
    assert deployment.current not in out
    assert "add --yes" in err
    assert deployment.exists(unversioned)
    assert deployment.exists(deployment.current)


def test_the_current_set_is_never_dropped(deployment: Deployment) -> None:
    status, _, err = deployment.run("views", "drop", deployment.current, "--yes", *WATCH)

    assert status == EXIT_CONFIGURATION
    assert_one_line_error(err, deployment.current, "current")
    assert deployment.exists(deployment.current)
    deployment.current_views_answer()
    status, out, _ = deployment.run("views", "drop", "--yes", *WATCH)  # all the others
    assert status == 0
    assert out == "no old view sets\n"
    deployment.current_views_answer()


def test_an_older_ledger_still_projecting_is_refused_and_an_idle_set_goes(
    deployment: Deployment,
) -> None:
    unversioned = deployment.add_unversioned_set()
    with deployment.older_ledger_projecting() as older:
        before = deployment.listed()[older]

        status, out, err = deployment.run("views", "drop", "--yes", *WATCH)

        assert status == EXIT_IN_USE
        assert_one_line_error(err, older, "in use")
        assert f"dropped {unversioned}" in out
        assert not deployment.exists(unversioned)
        after = deployment.listed()
        assert after[older]["checkpoint"] == before["checkpoint"] == deployment.head
        assert after[older]["in_use"] is not None
        assert set(after) == {deployment.current, older}
        deployment.current_views_answer()

    status, out, err = deployment.run("views", "drop", older, "--yes", *WATCH)

    assert status == 0, err
    assert out.startswith(f"dropped {older} (")
    assert set(deployment.listed()) == {deployment.current}
    deployment.current_views_answer()


def test_a_writer_that_holds_no_connection_is_seen_by_its_moving_checkpoint(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    deployment = Deployment("sqlite", tmp_path, request)
    unversioned = deployment.add_unversioned_set()
    writer = subprocess.Popen(
        [sys.executable, "-c", INTERMITTENT_WRITER, str(deployment.path(unversioned))]
    )
    try:
        status, _, err = deployment.run("views", "drop", "--yes", *WATCH)
    finally:
        writer.kill()
        writer.wait()

    assert status == EXIT_IN_USE
    assert_one_line_error(err, unversioned, "checkpoint moved")
    assert deployment.exists(unversioned)
    deployment.current_views_answer()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("views", "drop", "views.g9.v1.sqlite", "--yes"), "no view set named views.g9.v1.sqlite"),
        (("views", "list", "--format", "xml"), "--format must be table or json"),
    ],
)
def test_bad_input_is_one_line_and_drops_nothing(
    deployment: Deployment, args: tuple[str, ...], fragment: str
) -> None:
    unversioned = deployment.add_unversioned_set()

    status, _, err = deployment.run(*args)

    assert status == EXIT_CONFIGURATION
    assert_one_line_error(err, fragment)
    assert deployment.exists(unversioned)
    assert deployment.exists(deployment.current)
