"""Credit grants of an account: its lots, now or as they stood (time travel)."""

from typing import Annotated, Literal

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, Parameter

from app.api.auth import requires
from app.api.errors import ApiError
from app.api.pagination import PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, decode_cursor, encode_cursor
from app.api.params import TimeQuery, utc_instant
from app.api.schemas import LotPageRead, LotRead
from app.api.services import Services
from app.domain.values import check_id

Position = Annotated[int | None, Parameter(ge=0, le=2**63 - 1, required=False)]


class GrantController(Controller):
    path = "/v1/accounts/{account_id:str}/grants"
    tags = ["grants"]  # noqa: RUF012

    @get(
        "/",
        guards=[requires("read")],
        sync_to_thread=True,
        summary="Credit lots: original amount, remaining, reserved, expiry, status",
    )
    def list_grants(
        self,
        account_id: FromPath[str],
        services: NamedDependency[Services],
        status: FromQuery[Literal["live", "expired", "consumed", "all"]] = "live",
        as_of: TimeQuery = None,
        at_position: Position = None,
        min_position: Position = None,
        cursor: Annotated[str | None, Parameter(required=False, max_length=200)] = None,
        limit: Annotated[int, Parameter(ge=1, le=PAGE_LIMIT_MAX)] = PAGE_LIMIT_DEFAULT,
    ) -> LotPageRead:
        check_id(account_id, "account_id")
        if as_of is not None and at_position is not None:
            raise ApiError(422, "conflicting_parameters", "use as_of or at_position, not both")
        moment = utc_instant(as_of, "as_of")
        if moment is not None and moment > services.now():
            raise ApiError(422, "as_of_in_future", "as_of must not be in the future")
        position = None
        if at_position is not None or moment is not None:
            # As in GET /v1/accounts/{id}: time travel reads a view that has the whole log.
            if at_position is not None:
                services.reach(at_position)
            view = services.reach(max(services.head(), min_position or 0))
            if at_position is not None:
                position = view.commit_end(at_position)
        else:
            view = services.reach(min_position)
        checkpoint = view.checkpoint()
        account = (
            view.balance_at_position(account_id, position)
            if position is not None
            else view.balance_as_of(account_id, moment)
            if moment is not None
            else view.balance(account_id)
        )
        if account is None:
            raise ApiError(404, "account_not_found", f"account {account_id} does not exist (yet)")
        # The views always say when and where an account row stands.
        assert account.position is not None
        assert account.updated_at is not None
        if moment is not None:
            at, answered = moment, account.position
        elif position is not None:
            at, answered = view.time_at_position(position) or account.updated_at, position
        else:
            at, answered = services.now(), checkpoint
        page = view.lots(
            account_id,
            status=status,
            at=at,
            position=position,
            moment=moment,
            after_position=decode_cursor(cursor),
            limit=limit,
        )
        return LotPageRead(
            items=[LotRead.of(row) for row in page.items],
            next_cursor=None if page.next_after is None else encode_cursor(page.next_after),
            position=answered,
        )
