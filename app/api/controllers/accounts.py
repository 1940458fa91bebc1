"""Accounts: open, read (now, as of a time, at a position), statement, close."""

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

from app.api.auth import requires
from app.api.errors import ApiError
from app.api.pagination import PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX, decode_cursor, next_cursor
from app.api.params import TimeQuery, utc_instant
from app.api.schemas import AccountCreate, AccountRead, EntryRead, Page
from app.api.services import Services
from app.application.commands import OpenAccount
from app.domain.values import check_id

Position = Annotated[int | None, Parameter(ge=0, le=2**63 - 1, required=False)]


def not_found(account_id: str) -> ApiError:
    return ApiError(404, "account_not_found", f"account {account_id} does not exist (yet)")


class AccountController(Controller):
    path = "/v1/accounts"
    tags = ["accounts"]  # noqa: RUF012

    @post(
        "/",
        guards=[requires("write")],
        sync_to_thread=True,
        status_code=201,
        summary="Open an account (idempotent on id)",
        operation_id="openAccount",
    )
    def open(
        self, data: JSONBody[AccountCreate], services: NamedDependency[Services]
    ) -> Response[AccountRead]:
        outcome = services.ledger.open_account(OpenAccount(**data.model_dump()))
        return Response(
            AccountRead.of(outcome.account, outcome.position),
            status_code=201 if outcome.created else 200,
            headers={"Location": f"/v1/accounts/{data.id}"} if outcome.created else None,
        )

    @get(
        "/{account_id:str}",
        guards=[requires("read")],
        sync_to_thread=True,
        summary="Balances now, as of a time, or at a log position",
        operation_id="getAccount",
    )
    def read(
        self,
        account_id: FromPath[str],
        services: NamedDependency[Services],
        as_of: TimeQuery = None,
        at_position: Position = None,
        min_position: Position = None,
    ) -> AccountRead:
        check_id(account_id, "account_id")
        if as_of is not None and at_position is not None:
            raise ApiError(422, "conflicting_parameters", "use as_of or at_position, not both")
        if at_position is not None:
            # A position inside a command's commit answers as of that commit's end: the
            # books balance between commits, never halfway through one. The whole commit
            # is in the log already, so the views are awaited up to the log's head.
            services.reach(at_position)  # refuses a position beyond the head
            view = services.reach(services.head())
            position = view.commit_end(at_position)
            row = view.balance_at_position(account_id, position)
            if row is None:
                raise not_found(account_id)
            return AccountRead.of(row, position)
        moment = utc_instant(as_of, "as_of")
        if moment is not None:
            if moment > services.now():
                raise ApiError(422, "as_of_in_future", "as_of must not be in the future")
            # Every event recorded up to as_of is at or before today's head.
            view = services.reach(max(services.head(), min_position or 0))
            row = view.balance_as_of(account_id, moment)
            if row is None:
                raise not_found(account_id)
            return AccountRead.of(row, row.position)
        view = services.reach(min_position)
        checkpoint = view.checkpoint()
        row = view.balance(account_id)
        if row is None:
            raise not_found(account_id)
        return AccountRead.of(row, max(checkpoint, row.position))

    @get(
        "/{account_id:str}/entries",
        guards=[requires("read")],
        sync_to_thread=True,
        summary="Statement lines, newest first",
        operation_id="listAccountEntries",
    )
    def entries(
        self,
        account_id: FromPath[str],
        services: NamedDependency[Services],
        cursor: Annotated[str | None, Parameter(required=False, max_length=200)] = None,
        limit: Annotated[int, Parameter(ge=1, le=PAGE_LIMIT_MAX)] = PAGE_LIMIT_DEFAULT,
        since: TimeQuery = None,
        until: TimeQuery = None,
        min_position: Position = None,
    ) -> Page[EntryRead]:
        check_id(account_id, "account_id")
        since_moment, until_moment = utc_instant(since, "since"), utc_instant(until, "until")
        view = services.reach(min_position)
        if view.balance(account_id) is None:
            raise not_found(account_id)
        rows = view.entries(
            account_id,
            before_position=decode_cursor(cursor),
            since=since_moment,
            until=until_moment,
            limit=limit,
        )
        return Page[EntryRead](
            items=[EntryRead.of(row) for row in rows],
            next_cursor=next_cursor([row.position for row in rows], limit),
        )

    @post(
        "/{account_id:str}/close",
        guards=[requires("write")],
        sync_to_thread=True,
        status_code=200,
        summary="Close an account (idempotent)",
        operation_id="closeAccount",
    )
    def close(self, account_id: FromPath[str], services: NamedDependency[Services]) -> AccountRead:
        outcome = services.ledger.close_account(account_id)
        return AccountRead.of(outcome.account, outcome.position)
