"""Transcodings for the domain's own value types inside snapshots (the events carry
plain records already): an account's snapshot holds its live lots."""

from typing import Any

from eventsourcing.persistence import JSONTranscoder, Transcoding

from app.domain.account import lot_record, lots_of
from app.domain.lots import Lot, LotBook


class LotBookAsList(Transcoding):
    type = LotBook
    name = "lot_book"

    def encode(self, obj: LotBook) -> list[dict[str, Any]]:
        return [
            {**lot_record(lot), "remaining": lot.remaining, "reserved": lot.reserved}
            for lot in obj
            if lot.grant_id is not None
        ] + [
            {"grant_id": None, "remaining": obj.general.remaining, "reserved": obj.general.reserved}
        ]

    def decode(self, data: list[dict[str, Any]]) -> LotBook:
        *grants, general = data
        lots = [
            Lot(lot.grant_id, lot.terms, lot.amount, record["remaining"], record["reserved"])
            for lot, record in zip(lots_of(grants), grants, strict=True)
        ]
        book = LotBook(lots)
        book.restore_general(general["remaining"], general["reserved"])
        return book


def register_domain_transcodings(transcoder: JSONTranscoder) -> None:
    transcoder.register(LotBookAsList())
