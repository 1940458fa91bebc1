"""Mounts the explorer on the API's Litestar app: its router at ``/explorer``, its
templates, its static files and its session store (one init plugin, so ``create_app``
only has to list it)."""

from pathlib import Path
from typing import Any, Final

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Request, Router
from litestar.config.app import AppConfig
from litestar.di import Provide
from litestar.exceptions import PermissionDeniedException
from litestar.middleware import DefineMiddleware
from litestar.middleware.csrf import CSRFMiddleware
from litestar.plugins import InitPluginProtocol
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.stores.file import FileStore
from litestar.template.config import TemplateConfig

from app.api.services import Services
from app.domain.errors import LedgerError
from app.explorer import pages
from app.explorer.controllers import PagesController, SessionController
from app.explorer.sessions import (
    SESSION_STORE,
    SignInRequiredError,
    Viewer,
    csrf_config,
    csrf_secret,
    current_viewer,
    forget_empty_sessions,
    fresh_session_on_sign_in,
    refuse_ledger_error,
    refuse_stale_form,
    security_headers,
    session_config,
    to_sign_in,
)

PACKAGE_DIR: Final = Path(__file__).parent
TEMPLATES_DIR: Final = PACKAGE_DIR / "templates"
STATIC_DIR: Final = PACKAGE_DIR / "static"


def template_environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,  # every value is escaped unless a template says otherwise (none do)
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        amount=pages.amount_text,
        signed=pages.signed_amount_text,
        instant=pages.instant_text,
        rfc3339=pages.rfc3339,
        entry_words=pages.entry_words,
    )
    return environment


class ExplorerPlugin(InitPluginProtocol):
    def __init__(self, services: Services) -> None:
        self.services = services

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        settings = self.services.settings
        keys = self.services.keys
        csrf = csrf_config(csrf_secret(settings.data_dir))

        def viewer(request: Request[Any, Any, Any]) -> Viewer:
            return current_viewer(request, keys)

        router = Router(
            path="/explorer",
            route_handlers=[SessionController, PagesController],
            dependencies={"viewer": Provide(viewer, sync_to_thread=True)},
            middleware=[
                security_headers,
                fresh_session_on_sign_in,
                session_config().middleware,
                forget_empty_sessions,
                DefineMiddleware(CSRFMiddleware, config=csrf),
            ],
            exception_handlers={
                SignInRequiredError: to_sign_in,
                PermissionDeniedException: refuse_stale_form,
                LedgerError: refuse_ledger_error,
            },
            include_in_schema=False,
        )
        static = create_static_files_router(
            path="/explorer/static",
            directories=[STATIC_DIR],
            middleware=[security_headers],
            include_in_schema=False,
        )
        app_config.route_handlers.extend([router, static])
        app_config.template_config = TemplateConfig(
            instance=JinjaTemplateEngine.from_environment(template_environment())
        )
        sessions = FileStore(settings.explorer_sessions_path, create_directories=True)
        app_config.stores = {
            **(app_config.stores if isinstance(app_config.stores, dict) else {}),
            SESSION_STORE: sessions,
        }
        app_config.on_startup.append(sessions.delete_expired)
        return app_config
