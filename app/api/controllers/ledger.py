"""The ledger as a whole: per-unit totals, now or in the past."""

from litestar import Controller, get
from litestar.di import NamedDependency

from app.api.auth import requires
from app.api.consistency import (
    MinPositionHeader,
    Position,
    min_position_of,
    refuse_unknown_parameters,
    stamp_position,
)
from app.api.params import TimeQuery, utc_instant
from app.api.schemas import TotalsRead, UnitTotalsRead
from app.api.services import Services


class LedgerController(Controller):
    path = "/v1/ledger"
    tags = ["ledger"]  # noqa: RUF012
    before_request = refuse_unknown_parameters  # type: ignore[assignment]
    after_request = stamp_position  # type: ignore[assignment]

    @get(
        "/totals",
        guards=[requires("read")],
        sync_to_thread=True,
        summary="Per unit: debits, credits, balance sum (always 0), account count",
    )
    def totals(
        self,
        services: NamedDependency[Services],
        as_of: TimeQuery = None,
        at_position: Position = None,
        min_position: Position = None,
        min_position_header: MinPositionHeader = None,
    ) -> TotalsRead:
        answer = services.queries.totals(
            as_of=utc_instant(as_of, "as_of"),
            at_position=at_position,
            min_position=min_position_of(min_position, min_position_header),
        )
        return TotalsRead(
            units=[UnitTotalsRead.of(totals) for totals in answer.value],
            position=answer.position,
        )
