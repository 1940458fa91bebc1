"""The `ledger` command as a newcomer meets it: every configuration or connection failure
is one line on stderr (what, where, why) and a non-zero exit, never a traceback; the
audit tools refuse a store that does not exist or holds no ledger and a position past
the head; tables wrap ids instead of cutting them; keys have names and expiry, and an
expired key is refused by the API."""

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import pytest
import structlog
from litestar.testing import TestClient
from typer.testing import CliRunner

from app.api.app import create_app
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.bootstrap import build_services, shutdown
from app.cli import EXIT_CONFIGURATION, cli
from app.events import store as feed
from app.events.database import Database, events_database_url
from app.persistence.keys import KeyStore
from app.persistence.stores import event_store_env, sqlite_url
from app.settings import Settings
from tests.support import ports

LEDGER: Final = [str(Path(sys.executable).with_name("ledger"))]
LONG_ID: Final = "user:0123456789abcdef:credits:wallet:main"
BRIEF_KEY_SECONDS: Final = 8
AUDIT_TOOLS: Final = [["audit"], ["replay"], ["explain", LONG_ID], ["export"]]


def run_process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    return subprocess.run(
        [*LEDGER, *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """The command in this process (no start-up cost), with exactly this environment."""
    clean = {k: None for k in os.environ if k.startswith("LEDGER_")}
    result = CliRunner().invoke(cli, list(args), env={**clean, **env})
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ledger: error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, stderr)


def closed_port() -> int:
    """A port nothing listens on, kept so (reserved: ``tests.support.ports``)."""
    return ports.free_port()


@pytest.fixture(autouse=True)
def logging_left_as_found() -> Iterator[None]:
    """`serve` and `project` run here configure logging onto the runner's captured
    stderr, which closes after the command: undo that for the tests that follow."""
    handlers = list(logging.getLogger().handlers)
    yield
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers


@pytest.fixture
def written(tmp_path: Path) -> dict[str, str]:
    """A data dir whose ledger holds two accounts and one transfer."""
    env = {"LEDGER_DATA_DIR": str(tmp_path / "var"), "LEDGER_LOG_FORMAT": "console"}
    ledger = Ledger(Settings(data_dir=tmp_path / "var").ledger_env())
    ledger.open_account(OpenAccount("issuance", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount(LONG_ID, "CREDITS"))
    ledger.record_transfer(RecordTransfer("grant-1", "issuance", LONG_ID, 100))
    ledger.close()
    return env


# Configuration and connection failures ----------------------------------------------------


def test_a_bad_event_store_url_is_one_line_naming_the_variable(tmp_path: Path) -> None:
    process = run_process({"LEDGER_EVENT_STORE": "bogus://x"}, "replay")
    assert process.returncode == EXIT_CONFIGURATION
    assert_one_line_error(process.stderr, "LEDGER_EVENT_STORE", "bogus://x", "unsupported")
    assert process.stdout == ""


def test_an_unreachable_postgresql_is_one_line_with_the_servers_reason_and_no_password() -> None:
    url = f"postgresql://ledger:s3cret@127.0.0.1:{closed_port()}/ledger"
    for args in (["serve"], ["project"], ["audit"], ["keys", "list"]):
        store = "LEDGER_READ_MODEL" if args == ["keys", "list"] else "LEDGER_EVENT_STORE"
        started = time.monotonic()
        status, _, stderr = run({store: url}, *args)
        assert status == EXIT_CONFIGURATION, (args, stderr)
        assert_one_line_error(stderr, store, "Connection refused", "ledger:***@127.0.0.1")
        assert "s3cret" not in stderr
        assert time.monotonic() - started < 15, "an unreachable server was waited for too long"


def test_an_unwritable_data_dir_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for args in (["serve"], ["keys", "create", "--scope", "read"], ["project"]):
        status, _, stderr = run({"LEDGER_DATA_DIR": str(blocker / "var")}, *args)
        assert status == EXIT_CONFIGURATION, (args, stderr)
        assert_one_line_error(stderr, "LEDGER_DATA_DIR", "Not a directory")


def test_a_setting_out_of_its_range_is_one_line_naming_it() -> None:
    process = run_process({"LEDGER_LOG_FORMAT": "xml"}, "keys", "list")
    assert process.returncode == EXIT_CONFIGURATION
    assert_one_line_error(process.stderr, "LEDGER_LOG_FORMAT='xml'")


def test_an_unreadable_bootstrap_key_file_is_one_line(tmp_path: Path) -> None:
    env = {
        "LEDGER_DATA_DIR": str(tmp_path),
        "LEDGER_BOOTSTRAP_ADMIN_KEY_FILE": str(tmp_path / "missing"),
    }
    status, _, stderr = run(env, "serve")
    assert status == EXIT_CONFIGURATION
    assert_one_line_error(stderr, "LEDGER_BOOTSTRAP_ADMIN_KEY_FILE", "No such file")
    status, _, stderr = run(
        {"LEDGER_DATA_DIR": str(tmp_path)} | {"LEDGER_BOOTSTRAP_ADMIN_KEY": "too-short"}, "serve"
    )
    assert status == EXIT_CONFIGURATION
    assert_one_line_error(stderr, "bootstrap admin key", "lk_<id>_<secret>")
    assert "too-short" not in stderr
    assert KeyStore(sqlite_url(tmp_path / "keys.sqlite")).list() == []


# The audit tools never create a ledger ----------------------------------------------------


@pytest.mark.parametrize("args", AUDIT_TOOLS, ids=lambda args: args[0])
def test_the_audit_tools_refuse_a_store_that_does_not_exist(
    tmp_path: Path, args: list[str]
) -> None:
    missing = tmp_path / "typo" / "events.sqlite"
    status, stdout, stderr = run({"LEDGER_EVENT_STORE": sqlite_url(missing)}, *args)
    assert status == EXIT_CONFIGURATION
    assert_one_line_error(stderr, "no ledger at", str(missing))
    assert "RESULT: OK" not in stdout
    assert not missing.parent.exists(), "an audit tool created the store it was asked to read"


@pytest.mark.parametrize("args", AUDIT_TOOLS, ids=lambda args: args[0])
def test_the_audit_tools_refuse_a_store_that_holds_no_ledger(
    tmp_path: Path, args: list[str]
) -> None:
    empty = tmp_path / "events.sqlite"
    Ledger(event_store_env(sqlite_url(empty))).close()  # the tables, no event
    status, stdout, stderr = run({"LEDGER_EVENT_STORE": sqlite_url(empty)}, *args)
    assert status == EXIT_CONFIGURATION
    assert_one_line_error(stderr, "holds no ledger")
    assert "RESULT: OK" not in stdout


@pytest.mark.parametrize("tool", ["audit", "replay", "export"])
def test_a_position_past_the_head_is_refused_as_the_api_refuses_it(
    written: dict[str, str], tool: str
) -> None:
    status, stdout, stderr = run(written, tool, "--at-position", "99999")
    assert status == EXIT_CONFIGURATION
    assert_one_line_error(stderr, "--at-position 99999 is past the head of the log")
    assert stdout == ""


def test_the_command_line_reads_times_as_the_api_does(written: dict[str, str]) -> None:
    for naive in ("2026-03-01T00:00:00", "yesterday", "2026-03-01T00:00Z"):
        status, _, stderr = run(written, "replay", "--as-of", naive, "--format", "csv")
        assert status == EXIT_CONFIGURATION, naive
        assert_one_line_error(stderr, "is not a time", "midnight UTC")
    future = (datetime.now(tz=UTC) + timedelta(days=2)).date().isoformat()
    status, _, stderr = run(written, "replay", "--as-of", future)
    assert status == EXIT_CONFIGURATION
    assert_one_line_error(stderr, "in the future")
    # A date alone is midnight UTC: the same answer as the explicit instant.
    today = datetime.now(tz=UTC).date().isoformat()
    by_date = run(written, "replay", "--as-of", today, "--format", "json")
    explicit = run(written, "replay", "--as-of", f"{today}T00:00:00Z", "--format", "json")
    assert by_date[0] == explicit[0] == 0, by_date
    assert json.loads(by_date[1]) == json.loads(explicit[1])


def test_tables_wrap_long_ids_instead_of_cutting_them(written: dict[str, str]) -> None:
    narrow = {**written, "COLUMNS": "60"}
    # (command, the table column that holds the long id)
    for args, column in ((["replay"], 1), (["explain", "issuance"], 4)):
        process = run_process(narrow, *args)
        assert process.returncode == 0, process.stderr
        assert "…" not in process.stdout, process.stdout
        cells = "".join(
            line.split("│")[column].strip()
            for line in process.stdout.splitlines()
            if line.startswith("│")
        )
        assert LONG_ID in cells, process.stdout


# Keys -------------------------------------------------------------------------------------


def test_keys_have_names_and_expiry_and_the_list_has_a_header(tmp_path: Path) -> None:
    env = {"LEDGER_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    status, stdout, stderr = run(
        env, "keys", "create", "--scope", "write", "--name", "billing-service", "--expires", "90d"
    )
    assert status == 0, stderr
    key = stdout.strip().splitlines()[-1]
    assert "valid until" in stderr
    status, stdout, _ = run(env, "keys", "create", "--scope", "read", "--expires", "2999-01-01")
    assert status == 0
    status, stdout, _ = run(env, "keys", "list")
    header = stdout.splitlines()[1]
    for column in ("key_id", "name", "scope", "state", "created_at", "expires_at"):
        assert column in header
    assert "billing-service" in stdout
    listed = json.loads(run(env, "keys", "list", "--format", "json")[1])
    by_name = {row["name"]: row for row in listed}
    billing = by_name["billing-service"]
    assert billing["key_id"] == key.split("_")[1]
    assert (billing["scope"], billing["state"]) == ("write", "active")
    expires = datetime.fromisoformat(billing["expires_at"])
    assert timedelta(days=89) < expires - datetime.now(tz=UTC) <= timedelta(days=90)
    assert by_name[None]["expires_at"].startswith("2999-01-01T00:00:00")

    for bad in ("2020-01-01", "next week", "0x"):
        status, stdout, stderr = run(env, "keys", "create", "--scope", "read", "--expires", bad)
        assert status == EXIT_CONFIGURATION, bad
        assert_one_line_error(stderr, "expir" if bad == "2020-01-01" else "duration")
        assert stdout == ""
    assert len(json.loads(run(env, "keys", "list", "--format", "json")[1])) == 2


def test_an_expired_key_is_refused_by_the_api(tmp_path: Path) -> None:
    services = build_services(Settings(data_dir=tmp_path, log_format="console"), projections=False)
    try:
        with TestClient(app=create_app(services)) as client:
            # Keys made once the app is up: a slow start must not eat the brief key's second.
            lasting = services.keys.create("read", name="lasting")
            # Long enough that a loaded machine still makes the first requests in time.
            expires_at = datetime.now(tz=UTC) + timedelta(seconds=BRIEF_KEY_SECONDS)
            brief = services.keys.create("read", name="brief", expires_at=expires_at)
            for key in (lasting, brief):
                answer = client.get("/v1/transfers", headers={"Authorization": f"Bearer {key}"})
                assert answer.status_code == 200, answer.text
            time.sleep(max(0.0, (expires_at - datetime.now(tz=UTC)).total_seconds()) + 0.2)
            refused = client.get("/v1/transfers", headers={"Authorization": f"Bearer {brief}"})
            assert refused.status_code == 401
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert refused.json()["code"] == "api_key_expired"
            still = client.get("/v1/transfers", headers={"Authorization": f"Bearer {lasting}"})
            assert still.status_code == 200
        states = {key.name: key.state(datetime.now(tz=UTC)) for key in services.keys.list()}
        assert states == {"lasting": "active", "brief": "expired"}
    finally:
        shutdown(services)


def test_an_events_database_upgraded_by_a_newer_ledger_is_one_line_and_left_as_it_was(
    written: dict[str, str],
) -> None:
    settings = Settings(data_dir=Path(written["LEDGER_DATA_DIR"]))
    database = Database(events_database_url(settings.read_model_url))
    try:
        database.create(feed.SCHEMA)
        with database.transaction(write=True) as cursor:
            cursor.execute("UPDATE ledger_events_schema SET version = 99 WHERE part = 'feed'")
    finally:
        database.close()
    process = run_process(written, "serve", "--port", str(closed_port()))
    assert process.returncode == EXIT_CONFIGURATION, process.stderr
    assert_one_line_error(process.stderr, "feed", "version 99", "newer ledger")
    database = Database(events_database_url(settings.read_model_url))
    try:
        with database.transaction() as cursor:
            cursor.execute("SELECT part, version FROM ledger_events_schema ORDER BY part")
            assert cursor.fetchall() == [("feed", 99)]
    finally:
        database.close()
