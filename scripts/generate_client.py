"""Regenerate the typed Python client (clients/python) from the schema the app serves.

Writes clients/python/openapi.json (the served document, canonical JSON) and generates
the package ``credits_ledger_client`` from it with openapi-python-client. CI checks both
are current (tests/api/test_client.py): after changing the API, run

    python scripts/generate_client.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Final

from litestar.testing import TestClient

from app.api.app import create_app
from app.bootstrap import build_services, shutdown
from app.settings import Settings

ROOT: Final = Path(__file__).resolve().parents[1]
CLIENT_DIR: Final = ROOT / "clients" / "python"
SCHEMA_FILE: Final = CLIENT_DIR / "openapi.json"
PACKAGE: Final = "credits_ledger_client"
# Caches the generator's hooks and Python leave behind: never copied, never compared.
NOT_GENERATED: Final = (".ruff_cache", "__pycache__")
CONFIG: Final = {"project_name_override": "credits-ledger-client", "package_name_override": PACKAGE}


def served_schema() -> dict[str, Any]:
    """The document a freshly built app serves at /schema/openapi.json."""
    with tempfile.TemporaryDirectory() as folder:
        services = build_services(
            Settings(data_dir=Path(folder), log_format="console"), projections=False
        )
        try:
            with TestClient(app=create_app(services)) as client:
                answer = client.get("/schema/openapi.json")
                answer.raise_for_status()
                schema: dict[str, Any] = answer.json()
                return schema
        finally:
            shutdown(services)


def canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def generate(schema_file: Path, output: Path) -> None:
    """The client package generated from ``schema_file`` into ``output/PACKAGE``."""
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "config.json"
        config.write_text(json.dumps(CONFIG))
        generated = Path(folder) / "out"
        subprocess.run(
            [
                str(Path(sys.executable).with_name("openapi-python-client")),
                "generate",
                "--path",
                str(schema_file),
                "--output-path",
                str(generated),
                "--config",
                str(config),
                "--meta",
                "none",
                "--overwrite",
            ],
            check=True,
            capture_output=True,
            text=True,
            # Its post-generation hooks (ruff) come from this environment too.
            env={
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            },
        )
        target = output / PACKAGE
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(generated, target, ignore=shutil.ignore_patterns(*NOT_GENERATED))


def main() -> None:
    CLIENT_DIR.mkdir(parents=True, exist_ok=True)
    SCHEMA_FILE.write_text(canonical(served_schema()))
    generate(SCHEMA_FILE, CLIENT_DIR)
    print(f"wrote {SCHEMA_FILE.relative_to(ROOT)} and {(CLIENT_DIR / PACKAGE).relative_to(ROOT)}")


if __name__ == "__main__":
    main()
