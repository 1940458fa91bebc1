"""A command is checked once, when it is submitted: never again when a conflict with
another process makes the ledger run it again."""

from pathlib import Path
from typing import Any

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.persistence.stores import sqlite_env


def test_a_transfer_is_checked_once_even_when_a_conflict_makes_it_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sqlite_env(str(tmp_path / "events.sqlite"))
    with Ledger(env) as first, Ledger(env) as second:
        first.open_account(OpenAccount("bank", "CREDITS", allow_negative=True))
        first.open_account(OpenAccount("alice", "CREDITS"))
        first.record_transfer(RecordTransfer("warm", "bank", "alice", 1))  # first knows them
        # Another process moves both streams: the first ledger's next write of them
        # meets a version conflict and runs the command again on fresh state.
        second.record_transfer(RecordTransfer("elsewhere", "bank", "alice", 1))
        checks: list[str] = []
        original = RecordTransfer.checked

        def counted(command: RecordTransfer) -> Any:
            checks.append(command.id)
            return original(command)

        monkeypatch.setattr(RecordTransfer, "checked", counted)
        conflicts_before = first.conflicts
        outcome = first.record_transfer(RecordTransfer("t", "bank", "alice", 5))
        assert outcome.created
        assert first.conflicts > conflicts_before, "the write did meet a conflict and ran again"
        assert checks == ["t"]
        assert first.get_account("alice").credits_posted == 7
