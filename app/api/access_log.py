"""The access log: one structured line per HTTP request, the line structlog writes, for
a fraction of what a ``log.info`` call costs the event loop.

A ``log.info`` call goes through structlog's bound logger (its context copied, its
arguments packed and unpacked) and every processor of the chain, some of which have
nothing to do for this line: it carries no exception, its level is always ``info``.
When the process's logging is the chain ``app.bootstrap.configure_logging`` builds (and
still is: the check is one public ``structlog.get_config()``), the line is made here
from that chain's own time stamper and renderer and written through the same kind of
logger, so its bytes are the chain's: the request's fields, ``event``, the
context-local values bound with structlog (the request id), ``level``, ``timestamp``.
With any other configuration (a test that configured structlog its own way, or reset
it), the line goes through structlog as any other. ``tests/api/test_access_log.py``
holds the two ways to the same bytes."""

from dataclasses import dataclass
from typing import Any, Final

import structlog
from structlog.contextvars import get_contextvars
from structlog.processors import TimeStamper
from structlog.typing import Processor

ACCESS_EVENT: Final = "request"
ACCESS_LEVEL: Final = "info"

LOGGER_NAME: Final = "app.api"


@dataclass(frozen=True)
class JsonLines:
    """What the product's chain does to an access line, its parts taken from the chain."""

    configured: tuple[Any, ...]  # ``configuration()`` when this was set up
    stamp: TimeStamper  # its time stamper
    render: Processor  # its renderer (to one text line)
    logger: Any  # where its lines go (a structlog PrintLogger)


def configuration() -> tuple[Any, ...]:
    """What decides how structlog writes a line now: its processors (a list it may
    change in place, as ``structlog.testing.capture_logs`` does), its logger factory and
    its bound logger class (which filters levels)."""
    config = structlog.get_config()
    return (*config["processors"], config["logger_factory"], config["wrapper_class"])


_lines: JsonLines | None = None


def use_json_lines(lines: JsonLines) -> None:
    """Called by the logging setup that built ``lines.processors`` (configured now)."""
    global _lines  # noqa: PLW0603  # mirrors structlog's own process-wide configuration
    _lines = lines


def log_request(method: str, path: str, status: int, ms: float) -> None:
    """The access line of one request."""
    lines = _lines
    context = get_contextvars()
    if (
        lines is None
        or configuration() != lines.configured
        or "exc_info" in context  # the chain would render it: let it
    ):
        through_structlog(method, path, status, ms)
        return
    event: dict[str, Any] = {
        "method": method,
        "path": path,
        "status": status,
        "ms": ms,
        "event": ACCESS_EVENT,
    }
    for key, value in context.items():  # as merge_contextvars
        event.setdefault(key, value)
    event["level"] = ACCESS_LEVEL  # as add_log_level
    logger = lines.logger
    logger.msg(lines.render(logger, ACCESS_LEVEL, lines.stamp(logger, ACCESS_LEVEL, event)))


def through_structlog(method: str, path: str, status: int, ms: float) -> None:
    """The access line as any other line: through a logger bound to structlog's
    configuration of the moment."""
    log = structlog.get_logger(LOGGER_NAME)
    log.info(ACCESS_EVENT, method=method, path=path, status=status, ms=ms)
