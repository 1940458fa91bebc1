"""Accounts: open, list and search, read (now, as of a time, at a position), update
metadata, statement, balance history, close. Controllers translate HTTP to the query
service and the ledger and back; the read policy lives in ``app.application.queries``."""

from typing import Annotated, Final, Literal

from litestar import Controller, Request, Response, get, patch, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from app.api.auth import requires
from app.api.consistency import (
    METADATA_FILTERS_OPT,
    MinPositionHeader,
    Position,
    metadata_filters,
    min_position_of,
    refuse_unknown_parameters,
    stamp_position,
)
from app.api.pagination import (
    PAGE_LIMIT_DEFAULT,
    PAGE_LIMIT_MAX,
    decode_cursor,
    decode_key_cursor,
    encode_key_cursor,
    next_cursor,
)
from app.api.params import RequiredTimeQuery, TimeQuery, utc_instant
from app.api.schemas import (
    AccountCreate,
    AccountRead,
    AccountUpdate,
    EntryRead,
    HistoryPointRead,
    HistoryRead,
    Page,
    Unit,
)
from app.api.services import Services
from app.application.read_model import AccountFilter
from app.domain import limits
from app.domain.times import parse_time

AFTER_ID: Final = "after_id"


class AccountController(Controller):
    path = "/v1/accounts"
    tags = ["accounts"]  # noqa: RUF012
    before_request = refuse_unknown_parameters  # type: ignore[assignment]
    after_request = stamp_position  # type: ignore[assignment]

    @post(
        "/",
        guards=[requires("write")],
        status_code=201,
        summary="Open an account (idempotent on id)",
        operation_id="openAccount",
    )
    async def open(
        self, data: JSONBody[AccountCreate], services: NamedDependency[Services]
    ) -> Response[AccountRead]:
        outcome = await services.ledger.open_account_async(data.command())
        return Response(
            AccountRead.of(outcome.account, outcome.position),
            status_code=201 if outcome.created else 200,
            headers={"Location": f"/v1/accounts/{data.id}"} if outcome.created else None,
        )

    @get(
        "/",
        guards=[requires("read")],
        sync_to_thread=True,
        summary="List and search accounts, ordered by id",
        opt={METADATA_FILTERS_OPT: True},
    )
    def list(
        self,
        request: Request,  # type: ignore[type-arg]
        services: NamedDependency[Services],
        prefix: Annotated[
            str | None, Parameter(required=False, max_length=limits.ID_LENGTH_MAX)
        ] = None,
        unit: Annotated[Unit | None, Parameter(required=False)] = None,
        status: Annotated[Literal["open", "closed"] | None, Parameter(required=False)] = None,
        cursor: Annotated[str | None, Parameter(required=False, max_length=400)] = None,
        limit: Annotated[int, Parameter(ge=1, le=PAGE_LIMIT_MAX)] = PAGE_LIMIT_DEFAULT,
        min_position: Position = None,
        min_position_header: MinPositionHeader = None,
    ) -> Page[AccountRead]:
        query = AccountFilter(
            prefix=prefix,
            unit=unit,
            status=status,
            metadata=metadata_filters(request),
            after_id=decode_key_cursor(cursor, AFTER_ID, str),
            limit=limit,
        )
        answer = services.queries.accounts(
            query, min_position=min_position_of(min_position, min_position_header)
        )
        accounts = answer.value
        return Page[AccountRead](
            items=[AccountRead.of(account, answer.position) for account in accounts],
            next_cursor=(
                encode_key_cursor(AFTER_ID, accounts[-1].id) if len(accounts) == limit else None
            ),
            position=answer.position,
        )

    @get(
        "/{account_id:str}",
        guards=[requires("read")],
        sync_to_thread=True,
        summary="Balances now (from the account's stream), as of a time, or at a position",
        operation_id="getAccount",
    )
    def read(
        self,
        account_id: FromPath[str],
        services: NamedDependency[Services],
        as_of: TimeQuery = None,
        at_position: Position = None,
        min_position: Position = None,
        min_position_header: MinPositionHeader = None,
    ) -> AccountRead:
        account = services.queries.account(
            account_id,
            as_of=utc_instant(as_of, "as_of"),
            at_position=at_position,
            min_position=min_position_of(min_position, min_position_header),
        )
        assert account.position is not None, "every read says its position"
        return AccountRead.of(account, account.position)

    @patch(
        "/{account_id:str}",
        guards=[requires("write")],
        summary="Update an account's metadata (JSON Merge Patch: null removes a key)",
    )
    async def update(
        self,
        account_id: FromPath[str],
        data: JSONBody[AccountUpdate],
        services: NamedDependency[Services],
    ) -> AccountRead:
        outcome = await services.ledger.update_account_async(data.command(account_id))
        return AccountRead.of(outcome.account, outcome.position)

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
        min_position_header: MinPositionHeader = None,
    ) -> Page[EntryRead]:
        answer = services.queries.statement(
            account_id,
            before_position=decode_cursor(cursor),
            since=utc_instant(since, "since"),
            until=utc_instant(until, "until"),
            limit=limit,
            min_position=min_position_of(min_position, min_position_header),
        )
        return Page[EntryRead](
            items=[EntryRead.of(line) for line in answer.value],
            next_cursor=next_cursor([line.position for line in answer.value], limit),
            position=answer.position,
        )

    @get(
        "/{account_id:str}/history",
        guards=[requires("read")],
        sync_to_thread=True,
        summary="The balance at the end of each hour, day or month",
    )
    def history(
        self,
        account_id: FromPath[str],
        services: NamedDependency[Services],
        since: RequiredTimeQuery,
        until: TimeQuery = None,
        interval: FromQuery[Literal["hour", "day", "month"]] = "day",
        min_position: Position = None,
        min_position_header: MinPositionHeader = None,
    ) -> HistoryRead:
        start = parse_time(since, "since")
        answer = services.queries.history(
            account_id,
            interval=interval,
            since=start,
            until=utc_instant(until, "until") or services.queries.clock(),
            min_position=min_position_of(min_position, min_position_header),
        )
        return HistoryRead(
            account_id=account_id,
            interval=interval,
            items=[HistoryPointRead.of(point) for point in answer.value],
            position=answer.position,
        )

    @post(
        "/{account_id:str}/close",
        guards=[requires("write")],
        status_code=200,
        summary="Close an account (idempotent)",
        operation_id="closeAccount",
    )
    async def close(
        self, account_id: FromPath[str], services: NamedDependency[Services]
    ) -> AccountRead:
        outcome = await services.ledger.close_account_async(account_id)
        return AccountRead.of(outcome.account, outcome.position)
