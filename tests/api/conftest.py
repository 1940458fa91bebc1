"""API fixtures: a real app on SQLite files in a temp dir, projections in-process."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app.api.app import create_app
from app.api.services import Services
from app.bootstrap import build_services, shutdown
from app.settings import Settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, read_wait_seconds=2.0, log_format="console")


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings, projections=True)
    yield built
    shutdown(built)


@pytest.fixture
def app(services: Services) -> Litestar:
    return create_app(services)


@pytest.fixture
def keys(services: Services) -> dict[str, str]:
    return {scope: services.keys.create(scope) for scope in ("read", "write", "admin")}


@pytest.fixture
def client(app: Litestar, keys: dict[str, str]) -> Iterator[TestClient[Litestar]]:
    with TestClient(app=app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {keys['admin']}"
        yield test_client
