"""The API documentation as a newcomer meets it: the pages render with the network off
(assets vendored in the package), every operation has a chosen name, the examples work
in order on a fresh ledger, codes and statement kinds are enums derived from the code,
and the answers carry the headers HTTP promises (Location on 201, Allow on 405)."""

import ast
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from app.api import openapi
from app.api.app import create_app
from app.api.errors import API_CODES, PROBLEM_MEDIA_TYPE
from app.bootstrap import build_services, shutdown
from app.domain.errors import all_error_codes
from app.domain.times import TIME_PATTERN, TIME_TEXT_LENGTH_MAX
from app.settings import Settings
from tests.e2e.test_serve import admin_key_of, serving

ROOT: Final = Path(__file__).resolve().parents[2]
CHROMIUM: Final = Path("/usr/bin/chromium")
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
]
OPERATION_ID: Final = re.compile(r"[a-z][a-zA-Z]+")
# The order a reader follows in "Try it out" (see app.api.openapi.REQUEST_EXAMPLES).
TRY_IT_OUT_ORDER: Final = [
    ("openAccount", "issuer"),
    ("openAccount", "wallet"),
    ("openAccount", "revenue"),
    ("openAccount", "trial"),
    ("recordTransfer", "grant"),
    ("recordTransfer", "hold"),
    ("recordTransfer", "hold_to_void"),
    ("postPendingTransfer", "whole"),
    ("voidPendingTransfer", "void"),
    ("reverseTransfer", "refund"),
    ("recordTransferBatch", "atomic"),
    ("closeAccount", None),
    ("getAccount", None),
    ("listAccountEntries", None),
    ("getTransfer", None),
    ("listTransfers", None),
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Litestar, str]]:
    services = build_services(
        Settings(data_dir=tmp_path_factory.mktemp("docs"), log_format="console"),
        projections=True,
    )
    try:
        yield create_app(services), services.keys.create("admin")
    finally:
        shutdown(services)


@pytest.fixture(scope="module")
def client(app: tuple[Litestar, str]) -> Iterator[TestClient[Litestar]]:
    with TestClient(app=app[0]) as test_client:
        test_client.headers["Authorization"] = f"Bearer {app[1]}"
        yield test_client


@pytest.fixture(scope="module")
def document(client: TestClient[Litestar]) -> dict[str, Any]:
    answer = client.get("/schema/openapi.json")
    assert answer.status_code == 200
    loaded: dict[str, Any] = answer.json()
    return loaded


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


def test_every_operation_has_a_chosen_unique_camel_case_name(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids)), ids
    for operation_id in ids:
        assert OPERATION_ID.fullmatch(operation_id), operation_id
    assert {"openAccount", "recordTransfer", "postPendingTransfer", "listTransfers"} <= set(ids)


def test_problem_codes_and_statement_kinds_are_enums_derived_from_the_code(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    codes = schemas["Problem"]["properties"]["code"]["enum"]
    assert set(codes) == all_error_codes() | API_CODES
    assert {"insufficient_funds", "unauthorized", "api_key_expired"} <= set(codes)
    kinds = schemas["EntryRead"]["properties"]["kind"]["enum"]
    assert set(kinds) == set(openapi.statement_kinds())
    assert {"Debited", "Credited", "DebitReserved"} <= set(kinds)


CODE: Final = re.compile(r"[a-z]+(_[a-z]+)+")


def literal_codes_raised_in_the_app() -> set[str]:
    """Every snake_case literal handed to an error's constructor (``ApiError(404,
    "account_not_found", …)``, ``FeedInputError("unknown_event_type", …)``) or to
    ``problem(…)`` anywhere under app/: the codes problem documents can carry."""
    found: set[str] = set()
    for path in (ROOT / "app").rglob("*.py"):
        if "explorer" in path.parts:  # HTML pages: their reasons are not problem codes
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = str(getattr(node.func, "id", getattr(node.func, "attr", "")))
            if not (name.endswith("Error") or name == "problem"):
                continue
            for argument in [*node.args, *(k.value for k in node.keywords if k.arg == "code")]:
                if isinstance(argument, ast.Constant) and CODE.fullmatch(str(argument.value)):
                    found.add(str(argument.value))
    return found


def test_every_code_the_http_layer_raises_is_in_the_schema_enum() -> None:
    raised = literal_codes_raised_in_the_app()
    assert {"invalid_cursor", "malformed_json"} <= raised
    assert raised <= set(openapi.error_codes()), raised - set(openapi.error_codes())


def test_query_filters_declare_the_id_pattern_and_times_the_time_syntax(
    document: dict[str, Any],
) -> None:
    parameters = {
        (operation["operationId"], parameter["name"]): parameter["schema"]
        for _, _, operation in operations(document)
        for parameter in operation.get("parameters", [])
    }
    assert parameters[("listTransfers", "account_id")]["pattern"] == r"^[A-Za-z0-9._:-]+$"
    as_of = parameters[("getAccount", "as_of")]
    assert as_of == {
        "type": "string",
        "pattern": TIME_PATTERN,
        "maxLength": TIME_TEXT_LENGTH_MAX,
        "description": as_of["description"],
    }
    assert "midnight UTC" in as_of["description"]


def test_the_examples_are_distinct_and_work_in_order_on_a_fresh_ledger(
    document: dict[str, Any], client: TestClient[Litestar]
) -> None:
    by_id = {
        operation["operationId"]: (path, method, operation)
        for path, method, operation in operations(document)
    }
    transfer = by_id["recordTransfer"][2]["requestBody"]["content"]["application/json"]
    for example in transfer["examples"].values():
        value = example["value"]
        assert value["debit_account_id"] != value["credit_account_id"], value
    for operation_id, example_name in TRY_IT_OUT_ORDER:
        path, method, operation = by_id[operation_id]
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                path = path.replace("{" + parameter["name"] + "}", parameter["example"])
        body = None
        if example_name is not None:
            content = operation["requestBody"]["content"]["application/json"]
            body = content["examples"][example_name]["value"]
        answer = client.request(method.upper(), path, json=body)
        assert 200 <= answer.status_code < 300, (operation_id, example_name, answer.text)
        documented = operation["responses"][str(answer.status_code)]
        if answer.status_code == 201:
            assert "Location" in documented["headers"]
            location = answer.headers["location"]
            after = {"min_position": answer.json()["position"]}
            assert client.get(location, params=after).status_code == 200, location


def test_a_wrong_method_answers_405_with_allow_as_a_problem(
    client: TestClient[Litestar],
) -> None:
    answer = client.delete("/v1/transfers")
    assert answer.status_code == 405
    assert answer.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)
    assert answer.json()["code"] == "method_not_allowed"
    assert set(answer.headers["allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_the_vendored_assets_are_served_and_match_their_manifest(
    client: TestClient[Litestar],
) -> None:
    manifest = json.loads((openapi.DOCS_ASSETS / "MANIFEST.json").read_text())
    assert {"swagger-ui-bundle.js", "redoc.standalone.js", "swagger-ui.css"} <= set(manifest)
    for name, entry in manifest.items():
        served = client.get(f"{openapi.DOCS_ASSETS_PATH}/{name}")
        assert served.status_code == 200, name
        assert hashlib.sha256(served.content).hexdigest() == entry["sha256"], name
    for page in ("/schema", "/schema/swagger", "/schema/redoc"):
        html = client.get(page).text
        external = re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", html)
        assert external == [], (page, external)


@pytest.mark.slow
def test_the_docs_pages_render_in_chromium_with_the_network_off(tmp_path: Path) -> None:
    from playwright.sync_api import Route, sync_playwright  # noqa: PLC0415  # browser tests only

    assert CHROMIUM.exists(), "chromium is installed by .ci/run"
    with serving(tmp_path / "var") as server, sync_playwright() as playwright:
        admin_key_of(server)
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        refused: list[str] = []

        def only_the_server(route: Route) -> None:
            if route.request.url.startswith(server.url):
                route.continue_()
            else:
                refused.append(route.request.url)
                route.abort("internetdisconnected")

        context = browser.new_context(offline=False)
        context.route("**/*", only_the_server)
        page = context.new_page()
        page.goto(f"{server.url}/schema")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = set(page.locator(".opblock-summary-path").all_inner_texts())
        assert {"/v1/transfers", "/v1/accounts/{account_id}"} <= {p.strip() for p in paths}
        page.locator(".opblock-summary-path", has_text="/v1/transfers/batch").first.click()
        page.wait_for_selector(".opblock-body", timeout=10_000)

        page.goto(f"{server.url}/schema/redoc")
        page.wait_for_selector("h2:has-text('Record a transfer')", timeout=30_000)
        headings = set(page.locator("h2").all_inner_texts())
        assert {"Open an account (idempotent on id)", "Void a pending transfer"} <= headings
        browser.close()
        assert refused == [], f"the docs pages reached out to the network: {refused}"
