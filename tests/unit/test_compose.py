"""docker-compose.yml: the services the README names exist, pass only settings the app
reads, and every stateful service keeps its data in a volume and has a health check."""

import re
from pathlib import Path
from typing import Any

import yaml

from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
STATEFUL = {"kurrentdb", "postgres", "kurrentdb-1", "kurrentdb-2", "kurrentdb-3"}
LEDGER_SERVICES = {"ledger-api", "ledger-projections", "ledger-deliver"}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_service_the_readme_names_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Production stack", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z0-9-]+)`", section)) & (STATEFUL | LEDGER_SERVICES)
    assert named >= {"kurrentdb", "postgres", "ledger-api", "ledger-projections"}
    assert named <= set(compose()["services"])


def test_the_ledger_services_pass_only_settings_the_app_reads() -> None:
    known = {f"LEDGER_{name.upper()}" for name in Settings.model_fields}
    for name in LEDGER_SERVICES:
        environment = compose()["services"][name]["environment"]
        assert environment, name
        assert set(environment) <= known, set(environment) - known
        assert environment["LEDGER_EVENT_STORE"].startswith("kurrentdb://")
        assert environment["LEDGER_READ_MODEL"].startswith("postgresql://")


def test_the_settings_accept_the_environment_compose_passes() -> None:
    environment = compose()["services"]["ledger-api"]["environment"]
    settings = Settings(
        **{key.removeprefix("LEDGER_").lower(): value for key, value in environment.items()}
    )
    assert settings.event_store_url == environment["LEDGER_EVENT_STORE"]
    assert settings.ledger_env()["PERSISTENCE_MODULE"].startswith("app.persistence.kurrentdb")


def test_every_stateful_service_has_a_volume_and_a_health_check() -> None:
    services = compose()["services"]
    declared_volumes = set(compose()["volumes"])
    for name in STATEFUL | LEDGER_SERVICES:
        service = services[name]
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        if name in STATEFUL or name in LEDGER_SERVICES:
            volumes = [volume.split(":", 1)[0] for volume in service.get("volumes", [])]
            assert volumes, f"{name} keeps no data in a volume"
            assert set(volumes) <= declared_volumes, name


def test_the_dockerfile_installs_the_package_and_runs_the_ledger() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install" in dockerfile
    assert '"ledger", "serve"' in dockerfile
    assert "HEALTHCHECK" in dockerfile
