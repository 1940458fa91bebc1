"""Transfers: record (one or a batch), read, list, and the two-phase and refund verbs."""

from typing import Annotated, Any, Final, Literal

import orjson
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, Parameter

from app.api.auth import requires
from app.api.consistency import (
    METADATA_FILTERS_OPT,
    POSITION_HEADER,
    MinPositionHeader,
    Position,
    metadata_filters,
    min_position_of,
    refuse_unknown_parameters,
    stamp_position,
)
from app.api.errors import ledger_error_body, status_of
from app.api.fast_lane import TRANSFERS_PATH, transfer_fast_lane
from app.api.metrics import metrics_of
from app.api.pagination import (
    PAGE_LIMIT_DEFAULT,
    PAGE_LIMIT_MAX,
    decode_cursor,
    decode_key_cursor,
    encode_key_cursor,
)
from app.api.params import TimeQuery, utc_instant
from app.api.schemas import (
    BatchCreate,
    BatchItemResult,
    BatchRead,
    Page,
    PostPending,
    Problem,
    ReverseTransfer,
    TransferCreate,
    TransferRead,
    VoidPending,
    transfer_document,
)
from app.api.services import Services
from app.application.commands import RecordTransfer, VoidPendingTransfer
from app.application.read_model import TransferFilter
from app.application.views import TransferOutcome
from app.domain import limits
from app.domain.errors import LedgerError

# Descending pages continue before a position, ascending ones after it.
CURSOR_KEYS: Final = {"desc": "before", "asc": "after"}


def batch_command(item: TransferCreate) -> RecordTransfer:
    """An item the rules across fields refuse is handed over as it came, unchecked: the
    ledger refuses it with the same error at its index (atomic: the whole batch), as it
    does any Python caller's. Only refused items are checked twice."""
    try:
        return item.command()
    except LedgerError:
        return item.unchecked_command()


def transfer_response(outcome: TransferOutcome) -> Response[Any]:
    """A write's answer, encoded by orjson from plain values (``TransferRead`` documents
    it; tests/api check both say the same): a model built, validated and dumped again
    per request was a tenth of the event loop's time for a transfer."""
    headers = {"Location": f"/v1/transfers/{outcome.transfer.id}"} if outcome.created else {}
    # The position as a header too, as every answer says it (stamp_position reads models).
    headers[POSITION_HEADER] = str(outcome.position)
    return encoded_json(
        transfer_document(outcome.transfer, outcome.position),
        status_code=201 if outcome.created else 200,
        headers=headers,
    )


def encoded_json(
    document: dict[str, Any], status_code: int = 200, headers: dict[str, str] | None = None
) -> Response[Any]:
    """A JSON answer encoded by orjson as it stands (times as RFC 3339 with ``Z`` for UTC,
    as pydantic writes them); the handler's declared model still documents it."""
    return Response(
        content=orjson.dumps(document, option=orjson.OPT_UTC_Z),
        media_type=MediaType.JSON,
        status_code=status_code,
        headers=headers,
    )


class TransferController(Controller):
    path = TRANSFERS_PATH
    tags = ["transfers"]  # noqa: RUF012
    before_request = refuse_unknown_parameters  # type: ignore[assignment]
    after_request = stamp_position  # type: ignore[assignment]

    @post(
        "/",
        guards=[requires("write")],
        status_code=201,
        summary="Record a transfer (201; an idempotent replay answers 200, same body)",
        operation_id="recordTransfer",
        # An ordinary request is answered before this handler's machinery (app.api.fast_lane).
        middleware=[transfer_fast_lane],
    )
    async def record(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[TransferCreate],
        services: NamedDependency[Services],
    ) -> Response[TransferRead]:
        # Awaited on the event loop: no worker thread per request, the committer wakes
        # the loop when the transfer is durable.
        outcome = await services.ledger.record_transfer_async(data.command())
        if outcome.created:
            # From the app's state, not a second dependency: Litestar resolves two
            # dependencies of one handler in an anyio task group, per request.
            metrics_of(request).transfers_recorded.inc()
        return transfer_response(outcome)

    @post(
        "/batch",
        guards=[requires("write")],
        status_code=200,
        summary="Record a batch: atomic (all or nothing) or one result per item",
        operation_id="recordTransferBatch",
    )
    async def batch(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[BatchCreate],
        services: NamedDependency[Services],
    ) -> Response[BatchRead]:
        metrics = metrics_of(request)
        commands = [batch_command(item) for item in data.transfers]
        outcome = await services.ledger.record_batch_async(commands, atomic=data.atomic)
        # The answer is encoded straight from plain values (transfer_document): as
        # models, 1,000 answers cost a batch more CPU than writing it.
        results: list[dict[str, Any]] = []
        created = 0
        for index, result in enumerate(outcome.results):
            if isinstance(result, LedgerError):
                metrics.rejections.labels(code=result.code).inc()
                rejected = BatchItemResult(
                    status=status_of(result),
                    error=Problem(**{**ledger_error_body(result), "index": index}),
                )
                results.append(rejected.model_dump(mode="json"))
                continue
            assert isinstance(result, TransferOutcome)
            created += result.created
            results.append(
                {
                    "status": 201 if result.created else 200,
                    "transfer": transfer_document(result.transfer, result.position),
                    "error": None,
                }
            )
        metrics.transfers_recorded.inc(created)
        return encoded_json({"results": results})

    @get(
        "/{transfer_id:str}",
        guards=[requires("read")],
        sync_to_thread=True,
        summary="One transfer, with its status",
        operation_id="getTransfer",
    )
    def read(
        self,
        transfer_id: FromPath[str],
        services: NamedDependency[Services],
        min_position: Position = None,
        min_position_header: MinPositionHeader = None,
    ) -> TransferRead:
        transfer = services.queries.transfer(
            transfer_id, min_position=min_position_of(min_position, min_position_header)
        )
        assert transfer.position is not None, "the views know where a transfer was recorded"
        return TransferRead.of(transfer, transfer.position)

    @get(
        "/",
        guards=[requires("read")],
        sync_to_thread=True,
        summary="Transfers in log order (newest first by default), filtered",
        opt={METADATA_FILTERS_OPT: True},
        operation_id="listTransfers",
    )
    def list(
        self,
        request: Request,  # type: ignore[type-arg]
        services: NamedDependency[Services],
        account_id: Annotated[
            str | None, Parameter(required=False, max_length=limits.ID_LENGTH_MAX)
        ] = None,
        status: Annotated[
            Literal["posted", "pending", "voided", "expired"] | None, Parameter(required=False)
        ] = None,
        since: TimeQuery = None,
        until: TimeQuery = None,
        order: FromQuery[Literal["asc", "desc"]] = "desc",
        cursor: Annotated[str | None, Parameter(required=False, max_length=200)] = None,
        limit: Annotated[int, Parameter(ge=1, le=PAGE_LIMIT_MAX)] = PAGE_LIMIT_DEFAULT,
        min_position: Position = None,
        min_position_header: MinPositionHeader = None,
    ) -> Page[TransferRead]:
        key = CURSOR_KEYS[order]
        after_or_before = (
            decode_cursor(cursor) if key == "before" else decode_key_cursor(cursor, key, int)
        )
        query = TransferFilter(
            account_id=account_id,
            status=status,
            since=utc_instant(since, "since"),
            until=utc_instant(until, "until"),
            metadata=metadata_filters(request),
            order=order,
            cursor=after_or_before,
            limit=limit,
        )
        answer = services.queries.transfers(
            query, min_position=min_position_of(min_position, min_position_header)
        )
        positions = [t.position for t in answer.value if t.position is not None]
        return Page[TransferRead](
            items=[TransferRead.of(t, t.position or answer.position) for t in answer.value],
            next_cursor=encode_key_cursor(key, positions[-1]) if len(positions) == limit else None,
            position=answer.position,
        )

    @post(
        "/{transfer_id:str}/post",
        guards=[requires("write")],
        status_code=200,
        summary="Post a pending transfer, whole or a smaller amount",
        operation_id="postPendingTransfer",
    )
    async def post_pending(
        self,
        transfer_id: FromPath[str],
        services: NamedDependency[Services],
        data: JSONBody[PostPending | None] = None,
    ) -> TransferRead:
        # No body at all means {}: posting the whole hold (retry-safe, docs/writes.md).
        command = (data or PostPending()).command(transfer_id)
        outcome = await services.ledger.post_pending_async(command)
        return TransferRead.of(outcome.transfer, outcome.position)

    @post(
        "/{transfer_id:str}/void",
        guards=[requires("write")],
        status_code=200,
        summary="Void a pending transfer",
        operation_id="voidPendingTransfer",
    )
    async def void_pending(
        self,
        transfer_id: FromPath[str],
        services: NamedDependency[Services],
        data: JSONBody[VoidPending | None] = None,
    ) -> TransferRead:
        del data  # the body is {} or absent by contract; extra fields are refused
        command = VoidPendingTransfer(transfer_id).checked_beyond_body()
        outcome = await services.ledger.void_pending_async(command)
        return TransferRead.of(outcome.transfer, outcome.position)

    @post(
        "/{transfer_id:str}/reverse",
        guards=[requires("write")],
        status_code=201,
        summary="Reverse (refund) a posted transfer with a new transfer",
        operation_id="reverseTransfer",
    )
    async def reverse(
        self,
        request: Request[Any, Any, Any],
        transfer_id: FromPath[str],
        data: JSONBody[ReverseTransfer],
        services: NamedDependency[Services],
    ) -> Response[TransferRead]:
        outcome = await services.ledger.reverse_transfer_async(data.command(transfer_id))
        if outcome.created:
            metrics_of(request).transfers_recorded.inc()
        return transfer_response(outcome)
