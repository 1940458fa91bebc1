"""The composition root: settings → ledger, views, workers, keys → the ASGI app."""

import logging
import sys

import structlog
from litestar import Litestar

from app.api.app import create_app
from app.api.services import Services, ViewSource
from app.application.ledger import Ledger
from app.persistence.keys import KeyStore
from app.settings import Settings
from projections.runner import GenerationPointer, ProjectionWorkers


def configure_logging(settings: Settings) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        else structlog.dev.ConsoleRenderer()
    )
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def build_services(settings: Settings, *, projections: bool) -> Services:
    ledger = Ledger(settings.ledger_env())
    keys = KeyStore(settings.keys_url)
    GenerationPointer(settings.read_model_url)  # creates the pointer on first start
    if projections:
        workers = ProjectionWorkers(
            settings.event_store_url, settings.read_model_url, ledger
        ).start()
        return Services(settings=settings, ledger=ledger, keys=keys, workers=workers)
    source = ViewSource(settings.read_model_url)
    return Services(settings=settings, ledger=ledger, keys=keys, source=source)


def shutdown(services: Services) -> None:
    if services.workers is not None:
        services.workers.stop()
    services.ledger.close()


def build_app(settings: Settings, *, projections: bool) -> Litestar:
    services = build_services(settings, projections=projections)
    return create_app(services, on_shutdown=[lambda: shutdown(services)])


def asgi_app() -> Litestar:
    """For ``uvicorn --factory app.bootstrap:asgi_app`` with several worker processes:
    API only; the projections run in their own ``ledger project`` process."""
    settings = Settings()
    configure_logging(settings)
    return build_app(settings, projections=False)
