"""Make the served OpenAPI document say exactly what the app does.

Litestar derives the document from the handlers, but loses part of what the pydantic
models check (patterns, integer bounds, string-to-string metadata, refused unknown
fields) and documents its own error shape, not ours. After the app is built, this
replaces the model schemas with pydantic's own, documents every error as a problem
document, and marks the probes as needing no key.
"""

from typing import Any, Final

from litestar import Litestar
from litestar._openapi.plugin import OpenAPIPlugin
from pydantic import BaseModel

from app.api import schemas
from app.domain import limits

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
    schemas.Problem,
    schemas.Health,
    schemas.Readiness,
]
PAGES: Final[dict[str, type[BaseModel]]] = {
    "Page_EntryRead_": schemas.Page[schemas.EntryRead],
    "Page_TransferRead_": schemas.Page[schemas.TransferRead],
}
ERROR_STATUSES: Final = {
    "400": "Malformed JSON or cursor (code malformed_json, invalid_cursor)",
    "401": "No API key, or an unknown or revoked one (code unauthorized)",
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


def refine(app: Litestar) -> None:
    plugin = app.plugins.get(OpenAPIPlugin)
    document = plugin.provide_openapi_schema()
    components = document.setdefault("components", {}).setdefault("schemas", {})
    for name, model in [(m.__name__, m) for m in MODELS] + list(PAGES.items()):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(schema.pop("$defs", {}))
        components[name] = schema
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if isinstance(operation, dict):
                _refine_operation(path, method, operation)
    plugin._openapi_schema = document  # served as refined from now on


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
    for parameter in operation.get("parameters", []):
        name = parameter.get("name")
        if name in POSITION_PARAMETERS:
            parameter["schema"] = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
        elif name in ID_PATH_PARAMETERS and parameter.get("in") == "path":
            parameter["schema"] = {
                "type": "string",
                "minLength": 1,
                "maxLength": limits.ID_LENGTH_MAX,
                "pattern": r"^[A-Za-z0-9._:-]+$",
            }
