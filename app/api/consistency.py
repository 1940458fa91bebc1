"""HTTP around the read policy: which position a read needs (``min_position`` or the
``Ledger-Min-Position`` header), which one its answer reflects (``position`` in the body
and the ``Ledger-Position`` header), and query parameters no handler knows (400
``unknown_parameter``, naming them, rather than silently ignoring a typo'd filter)."""

import re
from typing import Annotated, Any, Final

from litestar import Request, Response
from litestar.enums import ParamType
from litestar.handlers import HTTPRouteHandler
from litestar.params import HeaderParameter, Parameter, ParameterKwarg
from pydantic import BaseModel

from app.api.errors import ApiError
from app.domain import limits
from app.domain.errors import ValidationError

POSITION_HEADER: Final = "Ledger-Position"
MIN_POSITION_HEADER: Final = "Ledger-Min-Position"
METADATA_PREFIX: Final = "metadata."
# A list may filter on this many metadata pairs at once (each is an indexed join).
METADATA_FILTERS_MAX: Final = 8
# Handlers whose ``opt`` has this key accept ``metadata.KEY=VALUE`` query parameters.
METADATA_FILTERS_OPT: Final = "metadata_filters"
# Names Litestar fills from the connection, never from the query string.
_RESERVED: Final = frozenset(
    {"self", "request", "scope", "state", "headers", "cookies", "query", "data", "socket", "body"}
)
_NOT_QUERY: Final = frozenset({ParamType.HEADER, ParamType.COOKIE, ParamType.PATH})
_PATH_PARAMETER: Final = re.compile(r"{(\w+)(?::\w+)?}")
# Where a route handler keeps the query parameters it takes (``known_query_parameters``).
_KNOWN_QUERY_PARAMETERS_OPT: Final = "known_query_parameters"

Position = Annotated[int | None, Parameter(ge=0, le=2**63 - 1, required=False)]
MinPositionHeader = Annotated[
    int | None,
    HeaderParameter(
        name=MIN_POSITION_HEADER,
        ge=0,
        le=2**63 - 1,
        required=False,
        description="Like min_position: wait until the views reach this log position",
    ),
]


def min_position_of(query: int | None, header: int | None) -> int | None:
    """The position a read needs: the larger of the parameter and the header."""
    if query is None:
        return header
    return query if header is None else max(query, header)


def known_query_parameters(handler: HTTPRouteHandler) -> frozenset[str]:
    """The query parameters ``handler`` takes, worked out once and kept in the handler's
    own ``opt`` (a dictionary of its own, made when the app registered it). Not a
    module-level cache keyed by the handler: that kept every handler ever asked about
    alive, and through it its app, services and ledger, in a process that builds more
    than one app (the test suite held hundreds, and its collector passes grew to seconds)."""
    known = handler.opt.get(_KNOWN_QUERY_PARAMETERS_OPT)
    if known is None:
        known = _known_query_parameters(handler)
        handler.opt[_KNOWN_QUERY_PARAMETERS_OPT] = known
    return known


def _known_query_parameters(handler: HTTPRouteHandler) -> frozenset[str]:
    path_names = {name for path in handler.paths for name in _PATH_PARAMETER.findall(path)}
    dependencies = set(handler.resolve_dependencies())
    known = set()
    for name, parameter in handler.parsed_fn_signature.parameters.items():
        if name in _RESERVED or name in path_names or name in dependencies:
            continue
        definition = parameter.kwarg_definition
        if isinstance(definition, ParameterKwarg):
            if definition.header or definition.cookie or definition.param_type in _NOT_QUERY:
                continue
            known.add(definition.query or definition.name or name)
        else:
            known.add(name)
    return frozenset(known)


async def refuse_unknown_parameters(request: Request[Any, Any, Any]) -> None:
    """``before_request`` of every API controller (async: Litestar runs a sync hook in a
    worker thread, a hop per request for a few dictionary lookups)."""
    handler = request.route_handler
    if not isinstance(handler, HTTPRouteHandler):
        return
    known = known_query_parameters(handler)
    takes_metadata = bool(handler.opt.get(METADATA_FILTERS_OPT))
    unknown = sorted(
        name
        for name in request.query_params
        if name not in known and not (takes_metadata and name.startswith(METADATA_PREFIX))
    )
    if unknown:
        raise ApiError(
            400,
            "unknown_parameter",
            f"unknown query parameter(s): {', '.join(unknown)}; this endpoint takes "
            f"{', '.join(sorted(known)) or 'none'}" + (", metadata.KEY" if takes_metadata else ""),
        )


def metadata_filters(request: Request[Any, Any, Any]) -> dict[str, str]:
    """``metadata.KEY=VALUE`` pairs of the query string (each key at most once)."""
    pairs: dict[str, str] = {}
    for name, values in request.query_params.dict().items():
        if not name.startswith(METADATA_PREFIX):
            continue
        key = name.removeprefix(METADATA_PREFIX)
        if not 1 <= len(key) <= limits.METADATA_KEY_LENGTH_MAX:
            raise ValidationError(f"metadata filter key {key!r} is empty or too long")
        if len(values) != 1:
            raise ValidationError(f"metadata.{key} is given {len(values)} times")
        if len(values[0]) > limits.METADATA_VALUE_LENGTH_MAX:
            raise ValidationError(f"metadata.{key} value is too long")
        pairs[key] = values[0]
    if len(pairs) > METADATA_FILTERS_MAX:
        raise ValidationError(f"at most {METADATA_FILTERS_MAX} metadata filters")
    return pairs


async def stamp_position(response: Response[Any]) -> Response[Any]:
    """``after_request``: the position the body reflects, as a header too (async, like
    ``refuse_unknown_parameters``)."""
    content = response.content
    position = getattr(content, "position", None) if isinstance(content, BaseModel) else None
    if isinstance(position, int):
        response.headers[POSITION_HEADER] = str(position)
    return response
