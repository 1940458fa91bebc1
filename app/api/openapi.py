"""Make the served OpenAPI document say exactly what the app does, and serve its pages.

Litestar derives the document from the handlers, but loses part of what the pydantic
models check (patterns, integer bounds, string-to-string metadata, refused unknown
fields) and documents its own error shape, not ours. After the app is built, this
replaces the model schemas with pydantic's own, documents every error as a problem
document whose ``code`` is an enum derived from the error classes, adds examples that
work in order on a fresh ledger ("Try it out"), and marks the probes as needing no key.

The documentation pages (Swagger UI at /schema and /schema/swagger, Redoc at
/schema/redoc) load their scripts from assets vendored into the package
(``docs_assets``, see scripts/vendor_docs_assets.py): they render without internet.
"""

import re
from pathlib import Path
from typing import Any, Final

from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from pydantic import BaseModel

from app.api import event_schemas, schemas
from app.api.consistency import MIN_POSITION_HEADER
from app.api.errors import API_CODES, STATUS_BY_KIND, TITLES
from app.compat import openapi_document, serve_openapi_document
from app.domain import limits
from app.domain.account import ACCOUNT_TYPES, Account
from app.domain.errors import all_error_codes, error_kinds
from app.domain.values import LEDGER_TRANSFER_PREFIXES
from app.events.feed import CURSOR_DIGITS_MAX, TYPES_PARAMETER_LENGTH_MAX
from app.events.schema import EVENT_TYPES

DOCS_ASSETS: Final = Path(__file__).parent / "docs_assets"
DOCS_ASSETS_PATH: Final = "/schema/assets"
FAVICON: Final = f"<link rel='icon' type='image/png' href='{DOCS_ASSETS_PATH}/favicon-32x32.png'>"


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="Credits ledger",
        version="1.0.0",
        description="Event-sourced double-entry ledger. Errors are "
        "application/problem+json with a stable `code`. Times: RFC 3339 with an offset, "
        "or a date (midnight UTC). Try it out: open the three example accounts "
        "(issuer, wallet, revenue), then record the example transfers in order.",
        components=Components(
            security_schemes={
                "BearerAuth": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="An API key from `ledger keys create`",
                )
            }
        ),
        security=[{"BearerAuth": []}],
        operation_id_creator=chosen_operation_id,
        render_plugins=[
            SwaggerRenderPlugin(
                path=["/", "/swagger"],
                js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
                css_url=f"{DOCS_ASSETS_PATH}/swagger-ui.css",
                standalone_preset_js_url=f"{DOCS_ASSETS_PATH}/swagger-ui-standalone-preset.js",
                favicon=FAVICON,
            ),
            RedocRenderPlugin(
                path="/redoc",
                js_url=f"{DOCS_ASSETS_PATH}/redoc.standalone.js",
                google_fonts=False,
                favicon=FAVICON,
            ),
        ],
    )


def docs_assets_router() -> Router:
    return create_static_files_router(
        path=DOCS_ASSETS_PATH, directories=[DOCS_ASSETS], name="docs-assets"
    )


# The operations' names (Stripe-like verb + resource), for handlers that do not name
# themselves with ``operation_id=``; generated clients call them by these names.
OPERATION_IDS: Final = {
    ("GET", "/v1/accounts"): "listAccounts",
    ("PATCH", "/v1/accounts/{account_id}"): "updateAccount",
    ("GET", "/v1/accounts/{account_id}/grants"): "listAccountGrants",
    ("GET", "/v1/accounts/{account_id}/history"): "getAccountHistory",
    ("GET", "/v1/events"): "listEvents",
    ("GET", "/v1/events/stream"): "streamEvents",
    ("GET", "/v1/ledger/totals"): "getLedgerTotals",
    ("GET", "/v1/monitors"): "listMonitors",
    ("POST", "/v1/monitors"): "createMonitor",
    ("GET", "/v1/monitors/{monitor_id}"): "getMonitor",
    ("DELETE", "/v1/monitors/{monitor_id}"): "deleteMonitor",
    ("GET", "/v1/webhooks"): "listWebhooks",
    ("POST", "/v1/webhooks"): "createWebhook",
    ("GET", "/v1/webhooks/{webhook_id}"): "getWebhook",
    ("PATCH", "/v1/webhooks/{webhook_id}"): "updateWebhook",
    ("DELETE", "/v1/webhooks/{webhook_id}"): "deleteWebhook",
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): "listWebhookDeliveries",
    ("POST", "/v1/webhooks/{webhook_id}/replay"): "replayWebhook",
}


def chosen_operation_id(_handler: Any, method: Any, components: list[Any]) -> str:
    """For a handler without an explicit ``operation_id``: its name in OPERATION_IDS. A
    new operation without a chosen name fails the app's start (and every test)."""
    path = "/" + "/".join(
        part if isinstance(part, str) else "{" + str(part.name) + "}" for part in components
    )
    verb = str(getattr(method, "value", method)).upper()
    name = OPERATION_IDS.get((verb, path))
    if name is None:
        raise LookupError(f"{verb} {path} has no chosen operationId (app/api/openapi.py)")
    return name


MODELS: Final[list[type[BaseModel]]] = [
    schemas.AccountCreate,
    schemas.AccountRead,
    schemas.TransferCreate,
    schemas.TransferRead,
    schemas.BatchCreate,
    schemas.BatchItemResult,
    schemas.BatchRead,
    schemas.PostPending,
    schemas.VoidPending,
    schemas.ReverseTransfer,
    schemas.EntryRead,
    schemas.AccountUpdate,
    schemas.HistoryRead,
    schemas.HistoryPointRead,
    schemas.TotalsRead,
    schemas.UnitTotalsRead,
    schemas.Problem,
    schemas.Health,
    schemas.Readiness,
    event_schemas.WebhookCreate,
    event_schemas.WebhookUpdate,
    event_schemas.WebhookReplay,
    event_schemas.MonitorCreate,
]
PAGES: Final[dict[str, type[BaseModel]]] = {
    "Page_EntryRead_": schemas.Page[schemas.EntryRead],
    "Page_TransferRead_": schemas.Page[schemas.TransferRead],
    "Page_AccountRead_": schemas.Page[schemas.AccountRead],
}
# The refusals each operation can answer (4xx; 5xx answers are the store's or the
# server's, any operation may give them). Served as the operation's error responses, each
# listing its codes in ``x-problem-codes`` (and its description).
AUTH: Final = frozenset({"unauthorized", "api_key_expired", "forbidden"})
QUERY: Final = frozenset({"unknown_parameter", "validation_error"}) | AUTH
BODY: Final = frozenset({"malformed_json", "body_too_large"}) | QUERY
VIEW_READ: Final = frozenset({"position_out_of_range", "position_not_reached"}) | QUERY
TIME_TRAVEL: Final = frozenset({"conflicting_parameters", "as_of_in_future"}) | VIEW_READ
PAGE: Final = frozenset({"invalid_cursor"})
TRANSFER_WRITE: Final = BODY | {
    "account_not_found",
    "account_closed",
    "unit_mismatch",
    "insufficient_funds",
    "overdraft_limit_exceeded",
    "balance_overflow",
    "idempotency_conflict",
    "concurrency_conflict",
}
RECORD_TRANSFER: Final = TRANSFER_WRITE | {
    "same_account",
    "invalid_time_range",
    "live_lot_limit_exceeded",
}
PENDING_WRITE: Final = TRANSFER_WRITE | {
    "transfer_not_found",
    "transfer_not_pending",
    "transfer_already_posted",
    "transfer_already_voided",
    "transfer_expired",
}
OPERATION_CODES: Final[dict[str, frozenset[str]]] = {
    "openAccount": BODY | {"idempotency_conflict", "concurrency_conflict"},
    "listAccounts": VIEW_READ | PAGE,
    "getAccount": TIME_TRAVEL | {"account_not_found"},
    "updateAccount": BODY | {"account_not_found", "account_closed", "concurrency_conflict"},
    "listAccountEntries": VIEW_READ | PAGE | {"account_not_found"},
    "listAccountGrants": TIME_TRAVEL | PAGE | {"account_not_found"},
    "getAccountHistory": VIEW_READ
    | {"account_not_found", "invalid_time_range", "too_many_intervals"},
    "closeAccount": QUERY
    | {"account_not_found", "account_has_pending_transfers", "concurrency_conflict"},
    "recordTransfer": RECORD_TRANSFER,
    "recordTransferBatch": RECORD_TRANSFER | {"batch_too_large"},
    "listTransfers": VIEW_READ | PAGE,
    "getTransfer": VIEW_READ | {"transfer_not_found"},
    "postPendingTransfer": PENDING_WRITE | {"post_amount_exceeds_pending"},
    "voidPendingTransfer": PENDING_WRITE,
    "reverseTransfer": TRANSFER_WRITE
    | {
        "transfer_not_found",
        "transfer_not_reversible",
        "transfer_already_reversed",
        "amount_out_of_range",
        "grant_consumed",
        "grant_expired",
        "grant_reserved",
        "grant_remaining_exceeded",
    },
    "getLedgerTotals": TIME_TRAVEL,
    "listEvents": QUERY | {"invalid_cursor", "unknown_event_type", "filter_too_large"},
    "streamEvents": QUERY | {"invalid_cursor", "unknown_event_type", "filter_too_large"},
    "createWebhook": BODY | {"unknown_event_type"},
    "listWebhooks": QUERY,
    "getWebhook": QUERY | {"webhook_not_found"},
    "updateWebhook": BODY | {"webhook_not_found", "unknown_event_type"},
    "deleteWebhook": QUERY | {"webhook_not_found"},
    "listWebhookDeliveries": QUERY | {"webhook_not_found"},
    "replayWebhook": BODY | {"webhook_not_found"},
    "createMonitor": BODY | {"account_not_found", "too_many_monitors"},
    "listMonitors": QUERY,
    "getMonitor": QUERY | {"monitor_not_found"},
    "deleteMonitor": QUERY | {"monitor_not_found"},
}
# Codes that say the request is not what the schema admits (or too large to read): a
# request the schema admits never gets one. Every other declared refusal is about the
# ledger's state (no such account, not enough funds) or a rule no schema can state (the
# two accounts of a transfer differ, a cursor the API did not hand out).
INPUT_CODES: Final = frozenset(
    {
        "validation_error",
        "malformed_json",
        "bad_request",
        "unknown_parameter",
        "body_too_large",
        "batch_too_large",
        "unknown_event_type",
        "filter_too_large",
    }
)
# The status of each code the HTTP layer answers with (the domain's follow their kind).
API_CODE_STATUSES: Final = {
    "unauthorized": 401,
    "api_key_expired": 401,
    "forbidden": 403,
    "unknown_parameter": 400,
    "malformed_json": 400,
    "bad_request": 400,
    "invalid_cursor": 400,
    "body_too_large": 413,
    "webhook_not_found": 404,
    "monitor_not_found": 404,
    "too_many_monitors": 409,
    "unknown_event_type": 422,
    "filter_too_large": 422,
}
REPLAYED: Final = {
    ("/v1/accounts", "post"): "Already opened with the same body: the account as it is",
    ("/v1/transfers", "post"): "Idempotent replay: the same body as the first answer",
    ("/v1/transfers/{transfer_id}/reverse", "post"): "Idempotent replay of the reversal",
}
POSITION_PARAMETERS: Final = {"min_position", "at_position", MIN_POSITION_HEADER}
POSITION_SCHEMA: Final = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
# Cursors are opaque, but their alphabet is not: base64url for the views' pages, the feed
# sequence in decimal for the event feed and webhook deliveries (any such number is a
# cursor the API could have handed out: the page after it).
CURSOR_PATTERNS: Final = {
    ("listEvents", "after"): f"^[0-9]{{0,{CURSOR_DIGITS_MAX}}}$",
    ("streamEvents", "after"): f"^[0-9]{{0,{CURSOR_DIGITS_MAX}}}$",
    ("listWebhookDeliveries", "cursor"): f"^[0-9]{{1,{CURSOR_DIGITS_MAX}}}$",
}
OPAQUE_CURSOR_PATTERN: Final = "^[A-Za-z0-9_-]+$"
OPAQUE_CURSOR_OPERATIONS: Final = {
    "listAccounts",
    "listAccountEntries",
    "listAccountGrants",
    "listTransfers",
}
ID_PATH_PARAMETERS: Final = {"account_id", "transfer_id"}
PROBES: Final = {"/v1/health", "/v1/ready"}


# "Try it out" on a fresh ledger, in this order: open the accounts, record the grant and
# the two holds, post one hold, void the other, reverse the posted one, close the trial.
ISSUER: Final = "issuance:credits"
WALLET: Final = "user:42:credits"
REVENUE: Final = "revenue:credits"
TRIAL: Final = "trial:43:credits"
GRANT: Final = "grant:2026-03:user-42"
HOLD: Final = "hold:order-981"
HOLD_TO_VOID: Final = "hold:order-982"
REQUEST_EXAMPLES: Final[dict[str, dict[str, tuple[str, dict[str, Any]]]]] = {
    "openAccount": {
        "issuer": (
            "The issuer: credits are minted from it (no floor)",
            {"id": ISSUER, "unit": "CREDITS", "allow_negative": True},
        ),
        "wallet": (
            "A customer's wallet",
            {"id": WALLET, "unit": "CREDITS", "metadata": {"customer": "42", "plan": "pro"}},
        ),
        "revenue": ("Where spent credits go", {"id": REVENUE, "unit": "CREDITS"}),
        "trial": ("An account to close", {"id": TRIAL, "unit": "CREDITS"}),
    },
    "recordTransfer": {
        "grant": (
            "Grant 500 credits to the wallet",
            {
                "id": GRANT,
                "debit_account_id": ISSUER,
                "credit_account_id": WALLET,
                "amount": 500,
                "metadata": {"reason": "monthly plan"},
            },
        ),
        "hold": (
            "Reserve 120 credits for an order (two-phase)",
            {
                "id": HOLD,
                "debit_account_id": WALLET,
                "credit_account_id": REVENUE,
                "amount": 120,
                "pending": True,
                "timeout_seconds": 3600,
                "metadata": {"order": "981"},
            },
        ),
        "hold_to_void": (
            "Reserve 30 credits for an order that will be cancelled",
            {
                "id": HOLD_TO_VOID,
                "debit_account_id": WALLET,
                "credit_account_id": REVENUE,
                "amount": 30,
                "pending": True,
                "metadata": {"order": "982"},
            },
        ),
    },
    "recordTransferBatch": {
        "atomic": (
            "Two usage charges, all or nothing",
            {
                "atomic": True,
                "transfers": [
                    {
                        "id": "usage:2026-03-02:42:api",
                        "debit_account_id": WALLET,
                        "credit_account_id": REVENUE,
                        "amount": 7,
                    },
                    {
                        "id": "usage:2026-03-02:42:storage",
                        "debit_account_id": WALLET,
                        "credit_account_id": REVENUE,
                        "amount": 3,
                    },
                ],
            },
        ),
    },
    "postPendingTransfer": {
        "whole": ("Post the whole hold", {}),
        "partial": ("Post part of it (the rest is released)", {"amount": 100}),
    },
    "voidPendingTransfer": {"void": ("Release the hold", {})},
    "reverseTransfer": {
        "refund": ("Refund the posted order", {"id": "refund:order-981"}),
    },
}
# Path parameters: one default per name, and where an operation needs another transfer.
PATH_EXAMPLES: Final = {"account_id": WALLET, "transfer_id": GRANT}
PATH_EXAMPLE_OVERRIDES: Final = {
    ("postPendingTransfer", "transfer_id"): HOLD,
    ("voidPendingTransfer", "transfer_id"): HOLD_TO_VOID,
    ("reverseTransfer", "transfer_id"): HOLD,
    ("closeAccount", "account_id"): TRIAL,
}


def code_status(code: str) -> int:
    kind = error_kinds().get(code)
    return STATUS_BY_KIND.get(kind, 422) if kind is not None else API_CODE_STATUSES[code]


def refusals(operation_id: str) -> dict[int, list[str]]:
    """The operation's refusal codes by status."""
    by_status: dict[int, list[str]] = {}
    for code in sorted(OPERATION_CODES[operation_id]):
        by_status.setdefault(code_status(code), []).append(code)
    return dict(sorted(by_status.items()))


def error_codes() -> list[str]:
    """Every code a problem document can carry: the domain's error classes and the HTTP
    layer's own."""
    return sorted(all_error_codes() | API_CODES)


def statement_kinds() -> list[str]:
    """What a statement line can record: one kind per balance-changing account event."""
    kinds: set[str] = set()
    pending = [Account.BalanceChanged]
    while pending:
        event_class = pending.pop()
        for subclass in event_class.__subclasses__():
            kinds.add(subclass.__name__)
            pending.append(subclass)
    return sorted(kinds)


def refine(app: Litestar) -> None:
    document = openapi_document(app)
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name, model in [(m.__name__, m) for m in MODELS] + list(PAGES.items()):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[name] = schema
    _declare_enum(components, "Problem", "code", error_codes())
    _declare_enum(components, "EntryRead", "kind", statement_kinds())
    _declare_rules(components)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if isinstance(operation, dict):
                _refine_operation(path, method, operation)
    serve_openapi_document(app, document)  # served as refined from now on


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a value, never null: ``oneOf [T, null]`` → ``T``."""
    choices = schema.get("oneOf", [])
    kept = [choice for choice in choices if choice.get("type") != "null"]
    if len(choices) != 2 or len(kept) != 1:
        return schema
    return {**kept[0], **{k: v for k, v in schema.items() if k != "oneOf"}}


def _described(schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": schema["description"]} if "description" in schema else {}


def _declare_enum(components: dict[str, Any], model: str, field: str, values: list[str]) -> None:
    properties = components.get(model, {}).get("properties", {})
    if field in properties and "enum" not in properties[field]:
        properties[field]["enum"] = values


def _declare_rules(components: dict[str, Any]) -> None:
    """Rules the handlers check themselves (with their own codes), stated in the schema."""
    _name_enum(components, "EventType", list(EVENT_TYPES))
    _name_enum(components, "AccountType", list(ACCOUNT_TYPES))
    for model in ("WebhookCreate", "WebhookUpdate"):
        properties = components[model]["properties"]
        for choice in _choices(properties["types"]):
            if choice.get("type") == "array":  # unknown_event_type otherwise
                choice["items"] = {"$ref": "#/components/schemas/EventType"}
        for choice in _choices(properties["url"]):
            if choice.get("type") == "string":
                choice["pattern"] = event_schemas.WEBHOOK_URL_PATTERN
    # Exactly one threshold (the handler's "give exactly one of below or above"): with
    # below, no above; without below, an above.
    components["MonitorCreate"].update(
        {
            "if": {"required": ["below"], "properties": {"below": {"type": "integer"}}},
            "then": {"properties": {"above": {"type": "null"}}},
            "else": {"required": ["above"], "properties": {"above": {"type": "integer"}}},
        }
    )
    # batch_too_large (413) otherwise
    components["BatchCreate"]["properties"]["transfers"]["maxItems"] = limits.BATCH_SIZE_MAX
    # Transfer ids the ledger writes itself (expiry, breakage) are not the client's.
    reserved = {"pattern": "^(" + "|".join(re.escape(p) for p in LEDGER_TRANSFER_PREFIXES) + ")"}
    for model in ("TransferCreate", "ReverseTransfer"):
        components[model]["properties"]["id"]["not"] = reserved
    components["TransferCreate"]["allOf"] = [
        {  # a timeout only on a pending transfer
            "anyOf": [
                {"required": ["pending"], "properties": {"pending": {"const": True}}},
                {"properties": {"timeout_seconds": {"type": "null"}}},
            ]
        },
        {  # a grant never pending: its lot opens when it is recorded
            "anyOf": [
                {"properties": {"pending": {"const": False}}},
                {"properties": {"grant": {"type": "null"}}},
            ]
        },
    ]


def _name_enum(components: dict[str, Any], name: str, values: list[str]) -> None:
    """One named component for an enum several models use (one class in generated
    clients): every property whose schema, or one of its alternatives, lists exactly
    these values refers to it instead."""
    components[name] = {"type": "string", "enum": values}
    reference = {"$ref": f"#/components/schemas/{name}"}
    for model in components.values():
        for field, schema in model.get("properties", {}).items():
            if set(schema.get("enum", [])) == set(values):
                model["properties"][field] = {**reference, **_described(schema)}
            for choice in schema.get("anyOf", []):
                if set(choice.get("enum", [])) == set(values):
                    choice.clear()
                    choice.update(reference)


def _choices(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A property's schema and, for an optional one, its alternatives."""
    return [schema, *schema.get("anyOf", [])]


def _event_types_pattern() -> str:
    """``types`` of the feed: known event types, comma-separated."""
    one = "(" + "|".join(name.replace(".", "\\.") for name in EVENT_TYPES) + ")"
    return f"^{one}(,{one})*$"


def _refine_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    if path in PROBES:
        operation["security"] = []
        if path == "/v1/ready":
            responses["503"] = {
                "description": "Not ready: store unreachable or views lagging",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Readiness"}}
                },
            }
        return
    operation_id = operation.get("operationId", "")
    for status, codes in refusals(operation_id).items():
        responses[str(status)] = {
            "description": f"{TITLES[status]}: code {', '.join(codes)}",
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
            "x-problem-codes": codes,
        }
    if (path, method) in REPLAYED and "201" in responses:
        responses["200"] = {**responses["201"], "description": REPLAYED[(path, method)]}
    if "201" in responses:
        responses["201"]["headers"] = {
            "Location": {
                "description": "Where the created resource is read",
                "schema": {"type": "string"},
            }
        }
    for parameter in operation.get("parameters", []):
        _refine_parameter(operation_id, parameter)
    examples = REQUEST_EXAMPLES.get(operation_id)
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if examples and body is not None:
        body["examples"] = {
            name: {"summary": summary, "value": value}
            for name, (summary, value) in examples.items()
        }


def _refine_parameter(operation_id: str, parameter: dict[str, Any]) -> None:
    name = str(parameter.get("name", ""))
    if parameter.get("in") == "query":
        parameter["schema"] = _without_null(parameter.get("schema", {}))
    if name in POSITION_PARAMETERS:
        parameter["schema"] = {**POSITION_SCHEMA, **_described(parameter["schema"])}
    elif (operation_id, name) in CURSOR_PATTERNS:
        parameter["schema"]["pattern"] = CURSOR_PATTERNS[(operation_id, name)]
    elif name == "cursor" and operation_id in OPAQUE_CURSOR_OPERATIONS:
        parameter["schema"]["pattern"] = OPAQUE_CURSOR_PATTERN
    elif name == "types" and parameter.get("in") == "query":
        parameter["schema"]["pattern"] = _event_types_pattern()
        parameter["schema"]["maxLength"] = TYPES_PARAMETER_LENGTH_MAX
    elif name in ID_PATH_PARAMETERS:  # in the path, or as a query filter
        parameter["schema"] = {
            "type": "string",
            "minLength": 1,
            "maxLength": limits.ID_LENGTH_MAX,
            "pattern": r"^[A-Za-z0-9._:-]+$",
        }
    if parameter.get("in") == "path" and name in PATH_EXAMPLES:
        parameter["example"] = PATH_EXAMPLE_OVERRIDES.get((operation_id, name), PATH_EXAMPLES[name])
