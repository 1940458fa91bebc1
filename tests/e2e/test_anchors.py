"""Anchored history (invariant 8): `ledger anchor` records the head of the log's running
digest; `ledger audit --anchors` proves the log still extends every anchor, and names
the first position that disagrees when a tail was cut, or an event edited or removed.
Finding 4: deleting the newest transfer's events passed the audit; with an anchor it
fails. The digest worker keeps checkpoints that make anchors cheap and survive as
evidence."""

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Final

import pytest
from typer.testing import CliRunner

import app.cli
from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.audit.anchors import GENESIS, Anchor, check_against, take_anchor
from app.domain.values import transfer_uuid
from app.persistence.stores import event_store_env
from projections.digest import DigestCheckpoints
from projections.runner import ProjectionWorkers

TRANSFERS: Final = 12
WAIT_SECONDS: Final = 15.0


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def env(folder: Path) -> dict[str, str]:
    return {
        "LEDGER_EVENT_STORE": f"sqlite:///{folder / 'events.sqlite'}",
        "LEDGER_READ_MODEL": f"sqlite:///{folder / 'views.sqlite'}",
        "LEDGER_DATA_DIR": str(folder),
        "LEDGER_LOG_FORMAT": "console",
    }


@pytest.fixture
def ledger(env: dict[str, str]) -> Iterator[Ledger]:
    ledger = Ledger(event_store_env(env["LEDGER_EVENT_STORE"]))
    ledger.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
    ledger.open_account(OpenAccount("alice", "CREDITS"))
    for number in range(TRANSFERS):
        ledger.record_transfer(RecordTransfer(f"t{number}", "bank", "alice", number + 1))
    yield ledger
    ledger.close()


def ledger_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app.cli.cli, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def delete_events(folder: Path, where: str, parameters: tuple[object, ...]) -> int:
    with closing(sqlite3.connect(folder / "events.sqlite")) as connection, connection:
        return connection.execute(f"DELETE FROM stored_events WHERE {where}", parameters).rowcount


def test_the_digest_is_a_chain_over_the_log_in_position_order(ledger: Ledger) -> None:
    head = take_anchor(ledger.recorder)
    assert head.position == ledger.recorder.max_notification_id()
    assert head.events == 2 + 3 * TRANSFERS
    assert take_anchor(ledger.recorder).digest == head.digest  # deterministic
    ledger.record_transfer(RecordTransfer("later", "bank", "alice", 1))
    later = take_anchor(ledger.recorder)
    assert later.digest != head.digest
    # Continuing from an earlier head gives what digesting from the genesis gives.
    assert take_anchor(ledger.recorder, head).digest == later.digest
    assert take_anchor(ledger.recorder, Anchor(0, GENESIS, 0)).digest == later.digest
    assert check_against(ledger.recorder, [head, later]) is None


def test_ledger_anchor_prints_and_appends_and_a_healthy_log_extends_it(
    ledger: Ledger, env: dict[str, str], folder: Path
) -> None:
    anchors = folder / "kept-elsewhere" / "anchors.jsonl"
    code, out, _ = ledger_cli(env, "anchor", "--append", str(anchors))
    assert code == 0
    printed = json.loads(out)
    assert printed["position"] == ledger.recorder.max_notification_id()
    assert json.loads(anchors.read_text().splitlines()[-1]) == printed
    ledger.record_transfer(RecordTransfer("after-anchor", "bank", "alice", 1))
    code, out, _ = ledger_cli(env, "anchor", "--append", str(anchors))
    assert code == 0
    assert len(anchors.read_text().splitlines()) == 2
    code, out, _ = ledger_cli(env, "audit", "--no-projections", "--anchors", str(anchors))
    assert code == 0, out
    assert "the log extends every anchor" in out


def test_deleting_the_newest_transfer_is_caught_by_the_anchor(
    ledger: Ledger, env: dict[str, str], folder: Path
) -> None:
    anchors = folder / "anchors.jsonl"
    assert ledger_cli(env, "anchor", "--append", str(anchors))[0] == 0
    anchor = json.loads(anchors.read_text())
    newest = f"t{TRANSFERS - 1}"
    # The transfer's event and its two legs: the three newest events of the log.
    removed = delete_events(folder, "rowid > (SELECT MAX(rowid) - 3 FROM stored_events)", ())
    assert removed == 3
    assert ledger.recorder.max_notification_id() == anchor["position"] - 3
    code, out, _ = ledger_cli(env, "audit", "--no-projections")
    assert code == 0, "without an anchor, the cut is invisible (finding 4)"
    code, out, _ = ledger_cli(env, "audit", "--no-projections", "--anchors", str(anchors))
    assert code == 1, out
    assert f"anchors: BROKEN (cut_tail) at position {anchor['position']}" in out
    assert ledger.recorder.select_events(transfer_uuid(newest)) == []


def test_an_edited_event_is_reported_with_the_stretch_it_lies_in(
    ledger: Ledger, env: dict[str, str], folder: Path
) -> None:
    early = take_anchor(ledger.recorder)
    ledger.record_transfer(RecordTransfer("late", "bank", "alice", 7))
    late = take_anchor(ledger.recorder)
    with closing(sqlite3.connect(folder / "events.sqlite")) as connection, connection:
        connection.execute(
            "UPDATE stored_events SET state = CAST(REPLACE(CAST(state AS TEXT), '7', '8') AS BLOB) "
            "WHERE rowid = ?",
            (late.position,),
        )
    found = check_against(ledger.recorder, [early, late])
    assert found is not None
    assert found.kind == "digest_mismatch"
    assert found.position == late.position
    assert found.agrees_until == early.position


def test_a_removed_event_in_the_middle_is_reported_where_it_was(
    ledger: Ledger, env: dict[str, str], folder: Path
) -> None:
    anchors = folder / "anchors.jsonl"
    workers = ProjectionWorkers(
        env["LEDGER_EVENT_STORE"], env["LEDGER_READ_MODEL"], ledger, expire_holds=False
    ).start()
    try:
        checkpoints = DigestCheckpoints(env["LEDGER_READ_MODEL"])
        head = ledger.recorder.max_notification_id()
        deadline = time.monotonic() + WAIT_SECONDS
        while (checkpoints.newest() or Anchor(0, GENESIS, 0)).position != head:
            assert time.monotonic() < deadline, "the digest worker never caught up"
            time.sleep(0.05)
        # The worker's checkpoint is the head the anchor command computes.
        assert checkpoints.newest() == Anchor(
            head or 0, take_anchor(ledger.recorder).digest, 2 + 3 * TRANSFERS
        )
    finally:
        workers.stop()
    assert ledger_cli(env, "anchor", "--append", str(anchors))[0] == 0
    assert delete_events(folder, "rowid = ?", (5,)) == 1
    code, out, _ = ledger_cli(env, "audit", "--no-projections", "--anchors", str(anchors))
    assert code == 1
    assert "anchors: BROKEN" in out
    found = check_against(
        ledger.recorder, [*checkpoints.all(), *[Anchor(**json.loads(anchors.read_text()))]]
    )
    assert found is not None
    assert found.position >= 5
