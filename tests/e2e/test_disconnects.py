"""Finding 5: a client that disconnects mid-request is not a server error. It is logged
at info, without a traceback, and counted with status 499 (client closed request),
never as a 5xx. Over a real socket against `ledger serve`, and at the ASGI level."""

import asyncio
import socket
import time
from pathlib import Path
from typing import Any, Final

import pytest
from prometheus_client import generate_latest

from app.api.app import create_app
from app.bootstrap import build_services, shutdown
from app.settings import Settings
from tests.e2e.test_serve import admin_key_of, json_logs, serving

ANNOUNCED_BODY_BYTES: Final = 1000
LOG_WAIT_SECONDS: Final = 10.0


def metrics_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("ledger_http_requests_total")]


def test_a_disconnect_at_the_asgi_level_is_a_499_logged_at_info(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    services = build_services(Settings(data_dir=tmp_path, log_format="json"), projections=False)
    app = create_app(services)
    key = services.keys.create("write")
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/transfers",
        "raw_path": b"/v1/transfers",
        "query_string": b"",
        "headers": [
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(ANNOUNCED_BODY_BYTES).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "root_path": "",
        "state": {},
    }
    try:
        asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
        counted = metrics_lines(generate_latest(app.state.metrics.registry).decode())
    finally:
        shutdown(services)
    assert 'ledger_http_requests_total{method="POST",route="/v1/transfers",status="499"} 1.0' in (
        counted
    )
    assert not any('status="5' in line for line in counted)
    logged = capsys.readouterr()
    assert "Traceback" not in logged.err + logged.out
    assert "request.client_disconnected" in logged.err + logged.out


@pytest.mark.slow
def test_a_client_leaving_mid_body_is_logged_at_info_and_never_counted_as_5xx(
    tmp_path: Path,
) -> None:
    with serving(tmp_path / "var") as server:
        key = admin_key_of(server)
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            raw.sendall(
                b"POST /v1/transfers HTTP/1.1\r\n"
                b"Host: 127.0.0.1\r\n"
                + f"Authorization: Bearer {key}\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {ANNOUNCED_BODY_BYTES}\r\n\r\n".encode()
                + b'{"id": "half'
            )
            time.sleep(0.3)
        deadline = time.monotonic() + LOG_WAIT_SECONDS
        while "client_disconnected" not in server.stderr:
            assert time.monotonic() < deadline, server.stderr[-3000:]
            time.sleep(0.1)
        with server.client(key) as http:
            counted = metrics_lines(http.get("/metrics").text)
    records = json_logs(server.stderr)
    disconnects = [r for r in records if r.get("event") == "request.client_disconnected"]
    assert disconnects
    assert all(r["level"] == "info" for r in disconnects)
    assert "Traceback" not in server.stderr
    assert any('status="499"' in line for line in counted), counted
    assert not any('status="5' in line for line in counted), counted
