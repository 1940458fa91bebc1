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
holds the two ways to the same bytes.

The chain's time stamp (``TimeStamper(fmt="iso", utc=True)``: a time-zone aware
``datetime.now`` formatted by ``isoformat``, about a sixth of the line's cost) is made
here by ``IsoUtcClock``, the date and time to the second formatted once a second."""

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import structlog
from structlog.contextvars import get_contextvars
from structlog.processors import TimeStamper
from structlog.typing import Processor

ACCESS_EVENT: Final = "request"
ACCESS_LEVEL: Final = "info"

LOGGER_NAME: Final = "app.api"
TIMESTAMP_KEY: Final = "timestamp"
_MICROS_PER_SECOND: Final = 1_000_000
_NANOS_PER_MICRO: Final = 1_000


class IsoUtcClock:
    """The time now as ``TimeStamper(fmt="iso", utc=True)`` writes it
    (``2026-12-01T00:10:04.701462Z``; no fraction at a whole second, as ``isoformat``),
    to the microsecond, truncated as ``datetime.now`` truncates the system clock."""

    __slots__ = ("_second",)

    def __init__(self) -> None:
        self._second: tuple[int, str] = (-1, "")  # a whole second and its text, together

    def now(self) -> str:
        return self.text(time.time_ns() // _NANOS_PER_MICRO)

    def text(self, micros: int) -> str:
        """The text of an instant given in microseconds since the epoch."""
        second, micro = divmod(micros, _MICROS_PER_SECOND)
        known, prefix = self._second
        if second != known:
            prefix = datetime.fromtimestamp(second, UTC).isoformat().removesuffix("+00:00")
            self._second = (second, prefix)
        return f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"


def iso_utc_clock(stamp: TimeStamper) -> IsoUtcClock | None:
    """A clock for ``stamp``'s text when it is the ISO, UTC one of the key ``timestamp``."""
    fmt = stamp.fmt or ""
    if fmt.upper() == "ISO" and stamp.utc and stamp.key == TIMESTAMP_KEY:
        return IsoUtcClock()
    return None


@dataclass(frozen=True)
class JsonLines:
    """What the product's chain does to an access line, its parts taken from the chain."""

    configured: tuple[Any, ...]  # ``configuration()`` when this was set up
    stamp: TimeStamper  # its time stamper
    render: Processor  # its renderer (to one text line)
    logger: Any  # where its lines go (a structlog WriteLogger)
    clock: IsoUtcClock | None = None  # ``stamp``'s text made cheaper, when it has one


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
    clock = lines.clock
    if clock is None:
        logger.msg(lines.render(logger, ACCESS_LEVEL, lines.stamp(logger, ACCESS_LEVEL, event)))
        return
    event[TIMESTAMP_KEY] = clock.now()  # as the stamp
    logger.msg(lines.render(logger, ACCESS_LEVEL, event))


def through_structlog(method: str, path: str, status: int, ms: float) -> None:
    """The access line as any other line: through a logger bound to structlog's
    configuration of the moment."""
    log = structlog.get_logger(LOGGER_NAME)
    log.info(ACCESS_EVENT, method=method, path=path, status=status, ms=ms)
