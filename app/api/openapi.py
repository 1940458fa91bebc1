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

from pathlib import Path
from typing import Any, Final

from litestar import Litestar, Router
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import RedocRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.static_files import create_static_files_router
from pydantic import BaseModel

from app.api import schemas
from app.api.errors import API_CODES
from app.compat import openapi_document, serve_openapi_document
from app.domain import limits
from app.domain.account import Account
from app.domain.errors import all_error_codes

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
        operation_id_creator=derived_operation_id,
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


def derived_operation_id(handler: Any, _method: Any, components: list[Any]) -> str:
    """For a handler without an explicit ``operation_id``: its function name, camelCased,
    then the resource its path names (``create`` under /v1/webhooks → ``createWebhooks``).
    tests/api/test_docs.py checks every id is unique and camelCased."""
    first, *rest = str(handler.handler_name).split("_")
    statics = [c for c in components if isinstance(c, str) and c and c != "v1"]
    resource = statics[0].title().replace("-", "") if statics else ""
    return first + "".join(word.title() for word in rest) + resource


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
]
PAGES: Final[dict[str, type[BaseModel]]] = {
    "Page_EntryRead_": schemas.Page[schemas.EntryRead],
    "Page_TransferRead_": schemas.Page[schemas.TransferRead],
    "Page_AccountRead_": schemas.Page[schemas.AccountRead],
}
ERROR_STATUSES: Final = {
    "400": "Malformed JSON, cursor or query, or an unknown query parameter "
    "(code malformed_json, invalid_cursor, bad_request, unknown_parameter)",
    "401": "No API key, or an unknown or revoked one (code unauthorized), or an expired one "
    "(code api_key_expired)",
    "403": "The key's scope does not allow this (code forbidden)",
    "404": "No such account or transfer (code account_not_found, transfer_not_found)",
    "409": "Id reused with another body, conflict, or views not there yet "
    "(code idempotency_conflict, concurrency_conflict, position_not_reached)",
    "413": "Body or batch too large (code body_too_large, batch_too_large)",
    "422": "Invalid input or a rejected command (code validation_error, "
    "insufficient_funds, unit_mismatch, …)",
}
REPLAYED: Final = {
    ("/v1/accounts", "post"): "Already opened with the same body: the account as it is",
    ("/v1/transfers", "post"): "Idempotent replay: the same body as the first answer",
    ("/v1/transfers/{transfer_id}/reverse", "post"): "Idempotent replay of the reversal",
}
POSITION_PARAMETERS: Final = {"min_position", "at_position"}
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


def _declare_enum(components: dict[str, Any], model: str, field: str, values: list[str]) -> None:
    properties = components.get(model, {}).get("properties", {})
    if field in properties and "enum" not in properties[field]:
        properties[field]["enum"] = values


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
    for status, description in ERROR_STATUSES.items():
        responses[status] = {
            "description": description,
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
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
    operation_id = operation.get("operationId", "")
    for parameter in operation.get("parameters", []):
        name = parameter.get("name")
        if parameter.get("in") == "query":
            parameter["schema"] = _without_null(parameter.get("schema", {}))
        if name in POSITION_PARAMETERS:
            parameter["schema"] = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
        elif name in ID_PATH_PARAMETERS:  # in the path, or as a query filter
            parameter["schema"] = {
                "type": "string",
                "minLength": 1,
                "maxLength": limits.ID_LENGTH_MAX,
                "pattern": r"^[A-Za-z0-9._:-]+$",
            }
        if parameter.get("in") == "path" and name in PATH_EXAMPLES:
            parameter["example"] = PATH_EXAMPLE_OVERRIDES.get(
                (operation_id, name), PATH_EXAMPLES[name]
            )
    examples = REQUEST_EXAMPLES.get(operation_id)
    body = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if examples and body is not None:
        body["examples"] = {
            name: {"summary": summary, "value": value}
            for name, (summary, value) in examples.items()
        }
