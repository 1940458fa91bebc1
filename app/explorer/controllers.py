"""The explorer's pages: each handler turns the request into reads and a template's
context, nothing more (the rules live in ``pages``; the reads in ``reads``)."""

from datetime import datetime, timedelta
from typing import Annotated, Any, Final

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, QueryParameter
from litestar.response import Redirect, Template

from app.api.services import Services
from app.application.read_model import AccountFilter
from app.domain import limits
from app.explorer import pages
from app.explorer.reads import SEARCH_PAGE_SIZE, STATEMENT_PAGE_SIZE, ExplorerReads
from app.explorer.sessions import REASONS, Viewer, sign_in

SEARCH_TEXT_LENGTH_MAX: Final = 1024
POSITION_MAX: Final = 2**63 - 1
LoginForm = Annotated[dict[str, str], Body(media_type=RequestEncodingType.URL_ENCODED)]
SearchText = Annotated[
    str | None, QueryParameter(required=False, max_length=SEARCH_TEXT_LENGTH_MAX)
]
Cursor = Annotated[int | None, QueryParameter(required=False, ge=0, le=POSITION_MAX)]


def is_identifier(text: str) -> bool:
    return limits.ID_PATTERN.fullmatch(text) is not None


def missing(kind: str, identifier: str, viewer: Viewer, as_of: datetime | None = None) -> Template:
    return Template(
        "missing.html.j2",
        context={"kind": kind, "identifier": identifier, "viewer": viewer, "as_of": as_of},
        status_code=404,
    )


class SessionController(Controller):
    path = "/"
    include_in_schema = False

    @get("/login", sync_to_thread=False)
    def login_form(
        self,
        reason: SearchText = None,
        next_path: Annotated[
            str | None,
            QueryParameter(name="next", required=False, max_length=SEARCH_TEXT_LENGTH_MAX),
        ] = None,
    ) -> Template:
        return Template(
            "login.html.j2",
            context={
                "notice": REASONS.get(reason or "", ""),
                "problem": "",
                "next_path": pages.safe_next(next_path),
            },
        )

    @post("/login", sync_to_thread=True)
    def login(
        self, request: Request[Any, Any, Any], data: LoginForm, services: NamedDependency[Services]
    ) -> Template | Redirect:
        next_path = pages.safe_next(data.get("next"))
        problem = sign_in(request, services.keys, data.get("key", ""))
        if problem is None:
            return Redirect(next_path, status_code=303)
        return Template(
            "login.html.j2",
            context={"notice": "", "problem": problem, "next_path": next_path},
            status_code=401,
        )

    @post("/logout", sync_to_thread=False)
    def logout(self, request: Request[Any, Any, Any]) -> Redirect:
        request.clear_session()
        return Redirect("/explorer/login?reason=bye", status_code=303)


class PagesController(Controller):
    path = "/"
    include_in_schema = False

    @get("/", sync_to_thread=True)
    def search(
        self,
        viewer: NamedDependency[Viewer],
        services: NamedDependency[Services],
        prefix: SearchText = None,
        unit: SearchText = None,
        status: SearchText = None,
        meta_key: SearchText = None,
        meta_value: SearchText = None,
        after: SearchText = None,
    ) -> Template:
        query = AccountFilter(
            prefix=prefix or None,
            unit=unit or None,
            status="open" if status == "open" else "closed" if status == "closed" else None,
            metadata=pages.metadata_filter(meta_key, meta_value),
            after_id=after or None,
            limit=SEARCH_PAGE_SIZE,
        )
        searched = any([prefix, unit, status, meta_key, after])
        accounts = ExplorerReads.caught_up(services).search(query) if searched else []
        more = len(accounts) == query.limit
        return Template(
            "search.html.j2",
            context={
                "viewer": viewer,
                "form": {
                    "prefix": prefix or "",
                    "unit": unit or "",
                    "status": query.status or "",
                    "meta_key": meta_key or "",
                    "meta_value": meta_value or "",
                },
                "searched": searched,
                "accounts": accounts,
                "next_after": accounts[-1].account_id if more else None,
            },
        )

    @get("/accounts/{account_id:str}", sync_to_thread=True)
    def account(
        self,
        account_id: FromPath[str],
        viewer: NamedDependency[Viewer],
        services: NamedDependency[Services],
        as_of: SearchText = None,
        before: Cursor = None,
    ) -> Template:
        if not is_identifier(account_id):
            return missing("account", account_id, viewer)
        reads = ExplorerReads.caught_up(services)
        now = services.now()
        choice = pages.parse_as_of(as_of, now)
        row = reads.account(account_id, choice.moment)
        opened_at = reads.opened_at(account_id)
        if row is None or opened_at is None:
            return missing("account", account_id, viewer, choice.moment)
        window = pages.history_window(opened_at, choice.moment or now)
        history = reads.history(account_id, window)
        # A statement "as of" an instant holds every line up to where the instant cuts
        # the log (at or before it: strictly before the next microsecond; decision 0036).
        until = None if choice.moment is None else choice.moment + timedelta(microseconds=1)
        lines = reads.statement(account_id, before_position=before, until=until)
        more = len(lines) == STATEMENT_PAGE_SIZE
        return Template(
            "account.html.j2",
            context={
                "viewer": viewer,
                "account": row,
                "as_of": choice.moment,
                "as_of_problem": choice.problem,
                "as_of_query": "" if choice.moment is None else pages.rfc3339(choice.moment),
                "picker_value": pages.picker_value(choice.moment or now),
                "window": window,
                "window_since": pages.rfc3339(window.since),
                "window_until": pages.rfc3339(window.history_until),
                "chart": pages.balance_chart(
                    [(point.end, point.balance) for point in history], (window.until, row.balance)
                ),
                "holds": reads.open_holds(row, choice.moment),
                "lines": [(line, pages.line_lots(line)) for line in lines],
                "lots": reads.lots(row, choice.moment),
                "before": before,
                "next_before": lines[-1].position if more else None,
            },
        )

    @get("/transfers/{transfer_id:str}", sync_to_thread=True)
    def transfer(
        self,
        transfer_id: FromPath[str],
        viewer: NamedDependency[Viewer],
        services: NamedDependency[Services],
    ) -> Template:
        if not is_identifier(transfer_id):
            return missing("transfer", transfer_id, viewer)
        reads = ExplorerReads.caught_up(services)
        row = reads.transfer(transfer_id)
        if row is None:
            return missing("transfer", transfer_id, viewer)
        facts = reads.transfer_facts(transfer_id)
        return Template(
            "transfer.html.j2",
            context={
                "viewer": viewer,
                "transfer": row,
                "facts": facts,
                "allocations": pages.allocation_pairs(facts.allocations if facts else None),
                "steps": reads.transfer_history(transfer_id),
                "debit_after": reads.side_after(row.debit_account_id, row.position),
                "credit_after": reads.side_after(row.credit_account_id, row.position),
            },
        )

    @get("/ledger", sync_to_thread=True)
    def ledger(
        self, viewer: NamedDependency[Viewer], services: NamedDependency[Services]
    ) -> Template:
        reads = ExplorerReads.caught_up(services)
        return Template(
            "ledger.html.j2",
            context={
                "viewer": viewer,
                "totals": reads.totals(),
                "lag": reads.lag(),
                "recent": reads.recent_transfers(),
                "audit": reads.last_audit(),
                "now": services.now(),
            },
        )
