"""The composition root: settings → ledger, views, workers, keys → the ASGI app.

Everything a setting names is opened here, inside ``opening``: a store that cannot be
used becomes one ``StartupError`` that says what, where (the setting and its value,
passwords masked) and why, never a library traceback.
"""

import gc
import logging
import sqlite3
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import orjson
import psycopg
import structlog
from eventsourcing.persistence import PersistenceError
from kurrentdbclient.exceptions import KurrentDBClientError
from litestar import Litestar

from app.api.access_log import JsonLines, configuration, iso_utc_clock, use_json_lines
from app.api.app import create_app
from app.api.services import Services
from app.application.ledger import Ledger
from app.application.queries import Queries
from app.domain.errors import StoreUnavailableError
from app.events.service import EventServices
from app.heap import SettledHeap
from app.persistence.keys import KeyStore
from app.persistence.stores import StoreURLError, sqlite_path
from app.persistence.tcp_liveness import tcp_liveness
from app.settings import ConfigurationError, Settings
from app.writer.client import WriterClient
from projections.runner import GenerationPointer, GenerationReader, ProjectionWorkers

# A PostgreSQL server that does not answer within this is reported as unreachable.
CONNECT_TIMEOUT_SECONDS: Final = 10
# A server's cyclic collector starts a young-generation pass once this many more
# tracked objects were made than freed (Python's default: 700). A batch of 1,000
# transfers makes and frees some tens of thousands (its body's items, its commands, its
# answer, the writer's events and rows), none of them cyclic garbage: at 700, about
# fifteen passes per batch, every tenth of which walked the middle generation and every
# hundredth the whole heap (the writer's cache): about a tenth of serve's CPU per batch
# transfer (docs/benchmarks.md). The middle and old thresholds stay Python's.
COLLECTOR_YOUNG_THRESHOLD: Final = 10_000
# What goes wrong when a setting names something unusable (no programming errors here).
UNUSABLE_STORE_ERRORS: Final = (
    StoreURLError,
    OSError,
    sqlite3.Error,
    psycopg.Error,
    PersistenceError,
    KurrentDBClientError,
    StoreUnavailableError,
)


class StartupError(ConfigurationError):
    """A setting names something this process cannot use."""

    def __init__(self, what: str, setting: str, value: str, why: str) -> None:
        super().__init__(f"cannot use the {what} {redact(value)} (from {setting}): {why}")


def redact(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def one_line(error: BaseException) -> str:
    """An error's message on one line (psycopg's span several), with its cause's when
    the library wrapped it in a vaguer one."""
    text = " ".join(str(error).split()) or type(error).__name__
    cause = error.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({' '.join(str(cause).split())})"
    return text


@contextmanager
def opening(what: str, setting: str, value: str) -> Iterator[None]:
    try:
        yield
    except UNUSABLE_STORE_ERRORS as error:
        raise StartupError(what, setting, value, one_line(error)) from error


def _check_reachable(url: str) -> None:
    """PostgreSQL: connect once with a short timeout, for the server's own reason
    (the library's pool would wait half a minute and then only say it timed out)."""
    if urlsplit(url).scheme in ("postgresql", "postgres"):
        liveness = tcp_liveness(CONNECT_TIMEOUT_SECONDS, url)
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_SECONDS, **liveness):
            pass


def _sqlite_file(url: str) -> Path | None:
    if urlsplit(url).scheme != "sqlite":
        return None
    return Path(sqlite_path(url))


def open_ledger(settings: Settings, *, must_hold_ledger: bool = False) -> Ledger:
    """The ledger over the configured event store. ``must_hold_ledger`` (the audit tools):
    refuse a store that does not exist or holds no event yet, rather than create one."""
    url, setting = settings.event_store_url, settings.event_store_setting
    with opening("event store", setting, url):
        if must_hold_ledger:
            path = _sqlite_file(url)
            if path is not None and not path.is_file():
                raise StartupError("event store", setting, url, f"no ledger at {path}")
        _check_reachable(url)
        ledger = Ledger(settings.ledger_env())
        try:
            head = ledger.recorder.max_notification_id() or 0
        except BaseException:
            ledger.close()
            raise
    if must_hold_ledger and head == 0:
        ledger.close()
        raise StartupError("event store", setting, url, "it holds no ledger (no event yet)")
    return ledger


def open_keys(settings: Settings) -> KeyStore:
    with opening("API key store", settings.read_model_setting, settings.keys_url):
        _check_reachable(settings.keys_url)
        return KeyStore(settings.keys_url)


@contextmanager
def opening_read_model(settings: Settings) -> Iterator[None]:
    with opening("read model", settings.read_model_setting, settings.read_model_url):
        _check_reachable(settings.read_model_url)
        yield


def _orjson_text(event: Any, **options: Any) -> str:
    """JSON log lines by orjson (a line per request: the standard encoder took 10 µs);
    ``options`` carries structlog's fallback for values JSON has no form for."""
    return orjson.dumps(event, default=options.get("default")).decode()


def configure_logging(settings: Settings) -> None:
    json_lines = settings.log_format == "json"
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_text)
        if json_lines
        else structlog.dev.ConsoleRenderer()
    )
    stamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        stamper,
        structlog.processors.format_exc_info,
        renderer,
    ]
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    # A line and its newline in one ``write`` (what ``WriteLogger`` does, under the
    # stream's lock): ``PrintLogger``'s ``print`` writes them apart, and on a stream that
    # writes through (``PYTHONUNBUFFERED``, as the image sets) each is a system call, two
    # per HTTP request for the access line alone; ``print`` also costs the access line
    # some 3 µs more than one ``write`` does.
    structlog.configure(
        processors=processors,
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    if json_lines:  # the access log writes this chain's lines itself (app.api.access_log)
        logger = structlog.WriteLogger(sys.stderr)
        clock = iso_utc_clock(stamper)
        use_json_lines(JsonLines(configuration(), stamper, renderer, logger, clock))


def build_services(
    settings: Settings, *, projections: bool, writer_socket: Path | None = None
) -> Services:
    # What is built is closed again if a later step fails (the last first), not left to
    # the garbage collector: a caller holding the error holds it all, the projections'
    # workers running and their sessions open.
    with ExitStack() as built:
        ledger = open_ledger(settings)
        built.callback(ledger.close)
        if writer_socket is not None:
            # An API worker of ``serve --workers N``: its writes go to the writer process.
            ledger.use_writer(WriterClient(str(writer_socket), ledger.committer.timeout_seconds))
        keys = open_keys(settings)
        built.callback(keys.close)
        with opening_read_model(settings):
            GenerationPointer(settings.read_model_url).close()  # made on first start
            workers: ProjectionWorkers | None = None
            if projections:
                workers = ProjectionWorkers(
                    settings.event_store_url, settings.read_model_url, ledger
                ).start()
                built.callback(workers.stop)
                source: ProjectionWorkers | GenerationReader = workers
            else:
                source = GenerationReader(settings.read_model_url, ledger)
                built.callback(source.close)
            queries = Queries(ledger, source, wait_seconds=settings.read_wait_seconds)
            # With the projections, the feed projector and webhook deliveries run beside
            # the view workers.
            events = EventServices.build(settings, ledger, run_workers=projections)
        built.pop_all()
    return Services(
        settings=settings,
        ledger=ledger,
        keys=keys,
        queries=queries,
        workers=workers,
        events=events,
    )


def shutdown(services: Services) -> None:
    """Close what ``build_services`` built, in this order: the events' workers and
    database, the projections' workers or the reader, the ledger, the keys. Each close
    runs even when one before it fails (a runner whose last batch failed as the store
    went away raises at its stop), that error raised after the rest are closed."""
    with ExitStack() as closing:  # the callbacks run last first
        closing.callback(services.keys.close)
        closing.callback(services.ledger.close)
        if isinstance(services.queries.source, GenerationReader):
            closing.callback(services.queries.source.close)
        if services.workers is not None:
            closing.callback(services.workers.stop)
        if services.events is not None:
            closing.callback(services.events.close)


def build_app(
    settings: Settings, *, projections: bool, writer_socket: Path | None = None
) -> Litestar:
    services = build_services(settings, projections=projections, writer_socket=writer_socket)
    return create_app(services, on_shutdown=[lambda: shutdown(services)])


def asgi_app(writer_socket: Path | None = None) -> Litestar:
    """For ``uvicorn --factory app.bootstrap:asgi_app`` with several worker processes:
    API only; the projections run in their own ``ledger project`` process. With
    ``writer_socket`` (``serve --workers N``), its writes go to that writer process."""
    settings = Settings()
    configure_logging(settings)
    app = build_app(settings, projections=False, writer_socket=writer_socket)
    settle_heap()
    return app


def settle_heap() -> None:
    """Once a server is built, before it serves: what start-up made (modules, classes,
    the app and its schemas, tens of thousands of objects that live as long as the
    process) is collected once and then left out of the cyclic collector's passes
    (``gc.freeze``). The collector runs on whichever thread allocates; on the event loop
    a batch of 1,000 transfers triggered a full pass every ten batches or so, each
    walking all of start-up's objects again: with the write stubbed, the collector took
    11.6 of the loop's 20.7 ms per batch, 2.4 of 11.4 after freezing (docs/benchmarks.md).
    From then on the young generation's passes start only every
    ``COLLECTOR_YOUNG_THRESHOLD`` objects, and what survives each full collection is
    frozen too (``SettledHeap``)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(COLLECTOR_YOUNG_THRESHOLD, middle, old)
    SettledHeap().install()
