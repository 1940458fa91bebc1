"""A store fault in the writer process's commit reaches an API worker's caller as the
same answer as in one process (decision 0035): ``storage_full`` for a full disk,
``store_unavailable`` for a store gone, never the 500 of a writer's bug; for an
independent batch of which nothing committed, the fault is the batch's answer, as in
process."""

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from app.application.commands import OpenAccount, RecordTransfer
from app.application.ledger import Ledger
from app.domain.errors import LedgerError, StorageFullError, StoreUnavailableError
from app.persistence.faults import store_fault
from app.persistence.stores import event_store_env
from app.writer.client import WriterClient
from tests.unit.test_writer_link import running_writer

TIMEOUT_SECONDS: Final = 10.0
FAULTS: Final = [
    pytest.param(
        lambda: sqlite3.OperationalError("database or disk is full"),
        StorageFullError,
        id="disk full",
    ),
    pytest.param(
        lambda: ConnectionError("server closed the connection"),
        StoreUnavailableError,
        id="store gone",
    ),
]


def failing_writes(ledger: Ledger, make_error: Any) -> None:
    """Every group write of ``ledger`` fails with a fresh ``make_error()``."""

    def write_group(group: list[Any]) -> list[Any]:
        raise make_error()

    ledger.committer._write_group = write_group


@pytest.fixture
def ledgers() -> Iterator[tuple[Ledger, Ledger, Ledger]]:
    """A ledger alone (in process), a writer's ledger and an API worker's ledger."""
    opened = [Ledger(event_store_env("memory://")) for _ in range(3)]
    alone, writing, _ = opened
    for ledger in (alone, writing):
        ledger.open_account(OpenAccount("bank", "EUR", allow_negative=True))
        ledger.open_account(OpenAccount("alice", "EUR"))
    yield opened[0], opened[1], opened[2]
    for ledger in opened:
        ledger.close()


def answer_in_process(ledger: Ledger, write: Any) -> LedgerError:
    """What the API answers in one process: the raw store error mapped by store_fault."""
    with pytest.raises(Exception) as raised:  # noqa: PT011  # any store error, mapped below
        asyncio.run(write(ledger))
    fault = store_fault(raised.value)
    assert fault is not None, raised.value
    return fault


def answer_through_the_hop(writing: Ledger, api: Ledger, path: Path, write: Any) -> LedgerError:
    with running_writer(writing, path):
        api.use_writer(WriterClient(str(path), TIMEOUT_SECONDS))
        with pytest.raises(LedgerError) as raised:
            asyncio.run(write(api))
    return raised.value


WRITES: Final = [
    pytest.param(
        lambda ledger: ledger.record_transfer_async(RecordTransfer("t", "bank", "alice", 1)),
        id="transfer",
    ),
    pytest.param(lambda ledger: ledger.open_account_async(OpenAccount("bob", "EUR")), id="open"),
    pytest.param(
        lambda ledger: ledger.record_batch_async(
            [RecordTransfer(f"b{n}", "bank", "alice", 1) for n in range(3)], atomic=False
        ),
        id="independent batch",
    ),
]


@pytest.mark.parametrize(("make_error", "expected"), FAULTS)
@pytest.mark.parametrize("write", WRITES)
def test_a_store_fault_in_the_writers_commit_is_answered_as_in_one_process(
    ledgers: tuple[Ledger, Ledger, Ledger],
    tmp_path: Path,
    make_error: Any,
    expected: type[LedgerError],
    write: Any,
) -> None:
    alone, writing, api = ledgers
    failing_writes(alone, make_error)
    failing_writes(writing, make_error)
    in_process = answer_in_process(alone, write)
    through = answer_through_the_hop(writing, api, tmp_path / "writer.sock", write)
    assert type(through) is type(in_process) is expected
    assert (through.code, through.kind) == (in_process.code, in_process.kind)
    assert writing.get_account("alice").balance == 0  # nothing written
