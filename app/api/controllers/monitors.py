"""Balance monitors: thresholds that emit ``balance.threshold_crossed``."""

from typing import Annotated

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody, Parameter

from app.api.auth import requires
from app.api.consistency import refuse_unknown_parameters
from app.api.controllers.events import events_of
from app.api.errors import ApiError
from app.api.event_schemas import MonitorCreate, MonitorRead
from app.api.schemas import Page
from app.api.services import Services
from app.domain.values import check_id
from app.events.monitors import MONITORS_PAGE_LIMIT_MAX, Operator, TooManyMonitorsError

MONITORS_LIMIT_DEFAULT = 100


def not_found(monitor_id: str) -> ApiError:
    return ApiError(404, "monitor_not_found", f"monitor {monitor_id[:64]} does not exist")


class MonitorController(Controller):
    path = "/v1/monitors"
    tags = ["monitors"]  # noqa: RUF012
    before_request = refuse_unknown_parameters  # type: ignore[assignment]

    @post(
        "/",
        guards=[requires("write")],
        sync_to_thread=True,
        status_code=201,
        summary="Watch an account's balance or available against a threshold",
    )
    def create(
        self, data: JSONBody[MonitorCreate], services: NamedDependency[Services]
    ) -> MonitorRead:
        if (data.below is None) == (data.above is None):
            raise ApiError(422, "validation_error", "give exactly one of below or above")
        # The account must exist: a monitor on a typo would never fire.
        services.ledger.get_account(data.account_id)
        operator: Operator = "below" if data.below is not None else "above"
        threshold = data.below if data.below is not None else data.above
        assert threshold is not None
        try:
            monitor = events_of(services).monitors.create(
                data.account_id,
                data.field,
                operator,
                threshold,
                data.description,
                since_position=services.head(),
            )
        except TooManyMonitorsError as error:
            raise ApiError(409, "too_many_monitors", str(error)) from None
        return MonitorRead.of(monitor)

    @get("/", guards=[requires("read")], sync_to_thread=True, summary="List monitors (by id)")
    def page(
        self,
        services: NamedDependency[Services],
        account_id: Annotated[str | None, Parameter(required=False)] = None,
        cursor: Annotated[str | None, Parameter(required=False, max_length=64)] = None,
        limit: Annotated[int, Parameter(ge=1, le=MONITORS_PAGE_LIMIT_MAX)] = MONITORS_LIMIT_DEFAULT,
    ) -> Page[MonitorRead]:
        if account_id is not None:
            check_id(account_id, "account_id")
        monitors = events_of(services).monitors.page(account_id, cursor or "", limit)
        return Page(
            items=[MonitorRead.of(monitor) for monitor in monitors],
            next_cursor=monitors[-1].id if len(monitors) == limit else None,
        )

    @get("/{monitor_id:str}", guards=[requires("read")], sync_to_thread=True, summary="One")
    def read(self, monitor_id: FromPath[str], services: NamedDependency[Services]) -> MonitorRead:
        monitor = events_of(services).monitors.get(monitor_id)
        if monitor is None:
            raise not_found(monitor_id)
        return MonitorRead.of(monitor)

    @delete(
        "/{monitor_id:str}",
        guards=[requires("write")],
        sync_to_thread=True,
        status_code=204,
        summary="Stop watching",
    )
    def remove(self, monitor_id: FromPath[str], services: NamedDependency[Services]) -> None:
        if not events_of(services).monitors.delete(monitor_id):
            raise not_found(monitor_id)
