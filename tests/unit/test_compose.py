"""The production files as an operator meets them: `docker-compose config` (Debian's
docker-compose, installed by .ci/run) accepts the stack; the services the README names
exist and pass only settings the app reads; no database or event-store port is
published unless docker-compose.local.yml is added (and then on loopback only); no
credential sits in a committed file; the first admin key comes from a Docker secret;
the cluster profile starts three nodes (not the single one) and the ledger reaches them
with a URL kurrentdbclient accepts; images are pinned; the image's own default command
is safe alone; the Python dependencies are locked."""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from kurrentdbclient.connection_spec import ConnectionSpec
from packaging.requirements import Requirement

from app.cli import GRACEFUL_SHUTDOWN_SECONDS
from app.settings import Settings

ROOT: Final = Path(__file__).resolve().parents[2]
STATEFUL: Final = {"kurrentdb", "postgres", "kurrentdb-1", "kurrentdb-2", "kurrentdb-3"}
LEDGER_SERVICES: Final = {"ledger-api", "ledger-projections", "ledger-deliver"}
CLUSTER_URL: Final = (
    "kurrentdb://kurrentdb-1:2113,kurrentdb-2:2113,kurrentdb-3:2113?Tls=false&NodePreference=leader"
)
PASSWORD: Final = "test-only-password"
PINNED_TAG: Final = re.compile(r".+:\d+\.\d+(\.\d+)?(-[a-z0-9.-]+)?")


def compose_config(*files: str, **env: str) -> dict[str, Any]:
    """The stack as `docker-compose config` resolves it (interpolation, merges, anchors)."""
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is installed by .ci/run"
    arguments = [binary]
    for name in files or ("docker-compose.yml",):
        arguments += ["-f", str(ROOT / name)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "LEDGER_"))}
    resolved = subprocess.run(
        [*arguments, "config"],
        cwd=ROOT,
        env={**clean, "POSTGRES_PASSWORD": PASSWORD, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert resolved.returncode == 0, resolved.stderr
    loaded: dict[str, Any] = yaml.safe_load(resolved.stdout)
    return loaded


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return compose_config()


def service_environment(stack: dict[str, Any], name: str) -> dict[str, str]:
    environment: dict[str, str] = stack["services"][name]["environment"]
    return environment


def test_docker_compose_config_accepts_the_stack_and_the_readme_names_its_services(
    stack: dict[str, Any],
) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Production stack", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z0-9-]+)`", section)) & (STATEFUL | LEDGER_SERVICES)
    assert named >= {"kurrentdb", "postgres", "ledger-api", "ledger-projections"}
    assert set(stack["services"]) == STATEFUL | LEDGER_SERVICES


def test_the_stack_refuses_to_start_without_its_password(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    assert binary
    clean = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    refused = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config"],
        cwd=tmp_path,  # no .env here either
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode != 0
    assert "POSTGRES_PASSWORD" in refused.stderr


def test_no_credential_is_committed() -> None:
    committed = (ROOT / "docker-compose.yml").read_text()
    assert "POSTGRES_PASSWORD: ledger" not in committed
    assert re.search(r"postgresql://\w+:\w+@", committed) is None
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert "secrets/" in (ROOT / ".gitignore").read_text().split()
    example = (ROOT / ".env.example").read_text()
    assert "POSTGRES_PASSWORD=" in example
    assert "COMPOSE_PROFILES=single" in example


def test_the_ledger_services_pass_only_settings_the_app_reads(stack: dict[str, Any]) -> None:
    known = {f"LEDGER_{name.upper()}" for name in Settings.model_fields}
    for name in LEDGER_SERVICES:
        environment = service_environment(stack, name)
        assert set(environment) <= known, set(environment) - known
        assert environment["LEDGER_EVENT_STORE"].startswith("kurrentdb://")
        assert environment["LEDGER_READ_MODEL"] == (
            f"postgresql://ledger:{PASSWORD}@postgres:5432/ledger"
        )
        settings = Settings.model_validate(
            {key.removeprefix("LEDGER_").lower(): value for key, value in environment.items()}
        )
        assert settings.ledger_env()["PERSISTENCE_MODULE"].startswith("app.persistence.kurrentdb")
    assert stack["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == PASSWORD


def test_the_first_admin_key_comes_from_a_docker_secret(stack: dict[str, Any]) -> None:
    api = stack["services"]["ledger-api"]
    secret_path = service_environment(stack, "ledger-api")["LEDGER_BOOTSTRAP_ADMIN_KEY_FILE"]
    assert secret_path == "/run/secrets/ledger_admin_key"
    assert [s if isinstance(s, str) else s["source"] for s in api["secrets"]] == [
        "ledger_admin_key"
    ]
    assert stack["secrets"]["ledger_admin_key"]["file"].endswith("secrets/ledger_admin_key")


def test_no_store_port_is_published_unless_the_local_file_is_added(
    stack: dict[str, Any],
) -> None:
    for name in STATEFUL:
        assert "ports" not in stack["services"][name], name
    assert stack["services"]["ledger-api"]["ports"]
    local = compose_config("docker-compose.yml", "docker-compose.local.yml")
    for name in ("kurrentdb", "postgres"):
        ports = local["services"][name]["ports"]
        assert ports, name
        for port in ports:
            text = port if isinstance(port, str) else f"{port.get('host_ip')}:{port}"
            assert text.startswith("127.0.0.1:"), (name, port)


def test_the_cluster_profile_starts_three_nodes_and_the_ledger_names_all_three(
    stack: dict[str, Any],
) -> None:
    services = stack["services"]
    assert services["kurrentdb"]["profiles"] == ["single"]
    for node in ("kurrentdb-1", "kurrentdb-2", "kurrentdb-3"):
        assert services[node]["profiles"] == ["cluster"]
        seeds = services[node]["environment"]["KURRENTDB_GOSSIP_SEED"].split(",")
        assert len(seeds) == 2
        assert node not in {seed.split(":")[0] for seed in seeds}
    for name in LEDGER_SERVICES:  # the ledger depends on neither profile's nodes
        assert set(services[name].get("depends_on", {})) == {"postgres"}

    cluster = compose_config(COMPOSE_PROFILES="cluster", LEDGER_EVENT_STORE=CLUSTER_URL)
    url = service_environment(cluster, "ledger-api")["LEDGER_EVENT_STORE"]
    assert url == CLUSTER_URL
    assert CLUSTER_URL in (ROOT / ".env.example").read_text()
    spec = ConnectionSpec(url)  # the client's own parser accepts it: three gossip seeds
    assert spec.targets == ["kurrentdb-1:2113", "kurrentdb-2:2113", "kurrentdb-3:2113"]
    assert spec.options.node_preference == "leader"
    with pytest.raises(ValueError, match="More than one target"):
        ConnectionSpec(url.replace("kurrentdb://", "kurrentdb+discover://"))


def test_every_image_is_pinned_and_every_service_has_a_volume_and_a_health_check(
    stack: dict[str, Any],
) -> None:
    declared_volumes = set(stack["volumes"])
    for name, service in stack["services"].items():
        assert PINNED_TAG.fullmatch(service["image"]), (name, service["image"])
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        volumes = [
            volume["source"] if isinstance(volume, dict) else volume.split(":", 1)[0]
            for volume in service.get("volumes", [])
        ]
        assert volumes, f"{name} keeps no data in a volume"
        assert set(volumes) <= declared_volumes, name
    base = re.search(r"^FROM (\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert base is not None
    assert PINNED_TAG.fullmatch(base.group(1)), base.group(1)


def test_the_images_default_command_is_safe_alone_and_installs_from_the_lock() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    command = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert command is not None
    assert command.group(1) == '["ledger", "serve", "--host", "0.0.0.0", "--port", "8000"]'
    assert "--no-projections" not in command.group(1)
    assert "pip install --no-cache-dir --require-hashes -r requirements.lock" in dockerfile
    assert "--no-deps ." in dockerfile
    assert "HEALTHCHECK" in dockerfile


def locked(path: Path) -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9._-]+)==([^\s\\]+)", path.read_text(), re.MULTILINE)
    return {name.lower().replace("_", "-"): version for name, version in pins}


@pytest.mark.parametrize(
    ("lock", "extra"), [("requirements.lock", None), ("requirements-dev.lock", "dev")]
)
def test_the_lock_files_pin_every_dependency_within_its_range(lock: str, extra: str | None) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    if extra:
        wanted += project["optional-dependencies"][extra]
    pins = locked(ROOT / lock)
    for text in wanted:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in {lock}: regenerate it (README, Dependencies)"
        assert requirement.specifier.contains(pins[name], prereleases=True), (name, pins[name])
    if extra is None:
        assert "--hash=sha256:" in (ROOT / lock).read_text()


def grace_seconds(text: str) -> float:
    """A compose duration as `docker-compose config` writes it back (e.g. 45s, 1m30s)."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(text))
    assert parts is not None, text
    assert any(parts.groups()), text
    minutes, seconds = parts.groups()
    return int(minutes or 0) * 60 + float(seconds or 0)


def test_docker_waits_for_every_ledger_service_to_drain_before_killing_it(
    stack: dict[str, Any],
) -> None:
    for name in LEDGER_SERVICES:
        service = stack["services"][name]
        assert "stop_grace_period" in service, name  # Docker's default 10 s is shorter
        assert grace_seconds(service["stop_grace_period"]) > GRACEFUL_SHUTDOWN_SECONDS, name
