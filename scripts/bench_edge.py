"""CPU of the HTTP edge: a request body to the command the ledger writes.

Compares, in one run and alternating rounds, the edge as it is (the body model checks each
field while parsing, ``command()`` runs the rules across fields, the ledger's ``checked()``
trusts the result) with the edge it replaced (the same body model, then ``model_dump``
into a plain command that ``checked()`` checked field by field a second time).

Per body kind (a transfer with metadata, a grant, an account, a batch of 1,000 transfers):
decode (msgspec, as Litestar does) + validate + build + ``checked()``, CPU time per body,
the median of alternating rounds. (Through the whole app, the saving is a few microseconds
of a request's milliseconds: below what a run on a loaded machine can tell apart.)

Run from the repository root::

    .venv/bin/python scripts/bench_edge.py
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchlib import machine

from app.api.controllers.transfers import batch_command
from app.api.schemas import AccountCreate, BatchCreate, TransferCreate
from app.application.commands import OpenAccount, RecordTransfer

Build = Callable[[Any], object]
ROUNDS: Final = 7
BODIES_PER_ROUND: Final = 5_000
METADATA: Final = {"order": "o-981", "customer": "c-42"}
TRANSFER: Final = {
    "id": "t-000001",
    "debit_account_id": "user:42:credits",
    "credit_account_id": "merchant:7",
    "amount": 1_250,
    "metadata": METADATA,
}
GRANT: Final = {
    **TRANSFER,
    "grant": {"expires_at": "2027-01-01T00:00:00Z", "effective_at": "2026-01-01", "priority": 5},
}
ACCOUNT: Final = {"id": "user:42:credits", "unit": "CREDITS", "metadata": METADATA}
BATCH_SIZE: Final = 1_000
BATCHES_PER_ROUND: Final = 20
BATCH: Final = {
    "atomic": True,
    "transfers": [{**TRANSFER, "id": f"t-{n:06}"} for n in range(BATCH_SIZE)],
}


def old_transfer(data: TransferCreate) -> RecordTransfer:
    """The replaced edge: a plain command from the dumped model, checked again."""
    fields = data.model_dump(exclude={"grant"})
    grant = None if data.grant is None else data.grant.terms()  # as the old grant_of did
    return RecordTransfer(**fields, grant=grant).checked()


def new_transfer(data: TransferCreate) -> RecordTransfer:
    return data.command().checked()


def old_account(data: AccountCreate) -> OpenAccount:
    return OpenAccount(**data.model_dump()).checked()


def new_account(data: AccountCreate) -> OpenAccount:
    return data.command().checked()


def old_batch(data: BatchCreate) -> list[RecordTransfer]:
    return [old_transfer(item) for item in data.transfers]


def new_batch(data: BatchCreate) -> list[RecordTransfer]:
    return [batch_command(item).checked() for item in data.transfers]


def cpu_per_body(raw: bytes, model: Any, build: Callable[[Any], object], bodies: int) -> float:
    decoder = msgspec.json.Decoder()
    start = time.process_time()
    for _ in range(bodies):
        build(model.model_validate(decoder.decode(raw)))
    return (time.process_time() - start) / bodies


def compare() -> None:
    cases: list[tuple[str, dict[str, Any], Any, Build, Build, int]] = [
        ("transfer", TRANSFER, TransferCreate, old_transfer, new_transfer, BODIES_PER_ROUND),
        ("grant", GRANT, TransferCreate, old_transfer, new_transfer, BODIES_PER_ROUND),
        ("account", ACCOUNT, AccountCreate, old_account, new_account, BODIES_PER_ROUND),
        ("batch", BATCH, BatchCreate, old_batch, new_batch, BATCHES_PER_ROUND),
    ]
    print(f"{ROUNDS} rounds each side, alternating; CPU per body (batch: of {BATCH_SIZE:,})")
    for name, body, model, old, new, bodies in cases:
        raw = orjson.dumps(body)
        assert old(model.model_validate(body)) == new(model.model_validate(body))
        olds, news = [], []
        for _ in range(ROUNDS):
            olds.append(cpu_per_body(raw, model, old, bodies))
            news.append(cpu_per_body(raw, model, new, bodies))
        old_us, new_us = statistics.median(olds) * 1e6, statistics.median(news) * 1e6
        print(
            f"  {name:8} old {old_us:9.2f} us  new {new_us:9.2f} us  "
            f"new/old CPU {new_us / old_us:.2f}  (old/new {old_us / new_us:.2f}x)"
        )


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    print(machine())
    compare()
    print(machine())


if __name__ == "__main__":
    main()
