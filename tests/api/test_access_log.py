"""The access log writes the line structlog's configured chain writes, without the
bound logger's per-call work; under any other structlog configuration the line goes
through structlog itself (app.api.access_log)."""

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final
from unittest.mock import patch

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.processors import TimeStamper
from structlog.testing import capture_logs

from app.api import access_log
from app.api.access_log import iso_utc_clock, log_request
from app.bootstrap import configure_logging
from app.settings import Settings
from tests.api.helpers import Client, open_issuer

# Instants up to the year 9999 (``isoformat`` writes four-digit years).
EPOCH_MICROS_MAX: Final = 253_402_300_799_999_999
TIMESTAMP: Final = re.compile(r'"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"')


class Opaque:
    """A bound value JSON has no form for (the renderer falls back to its repr)."""

    def __repr__(self) -> str:
        return "<opaque>"


class Writes(io.StringIO):
    """A buffer that also keeps the text of each ``write`` it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def stderr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Writes]:
    """The process's logging configured as ``ledger serve`` does, onto a buffer."""
    handlers = list(logging.getLogger().handlers)
    buffer = Writes()
    monkeypatch.setattr(sys, "stderr", buffer)
    configure_logging(Settings(data_dir=tmp_path))
    yield buffer
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.getLogger().handlers[:] = handlers


def lines_of(buffer: io.StringIO) -> list[str]:
    written = buffer.getvalue().splitlines()
    buffer.seek(0)
    buffer.truncate()
    return written


def test_the_access_line_is_the_configured_chains_line_byte_for_byte(
    stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    fields: dict[str, Any] = {"method": "POST", "path": "/v1/transfers", "status": 201, "ms": 1.25}
    structlog.contextvars.bind_contextvars(request_id="req-1", tenant=Opaque(), level="x")
    structlog.get_logger("app.api").info("request", **fields)
    (by_structlog,) = lines_of(stderr)

    def not_called(*_: Any, **__: Any) -> None:
        raise AssertionError("the access line went through structlog's bound logger")

    monkeypatch.setattr(access_log, "through_structlog", not_called)
    log_request(**fields)
    (by_access_log,) = lines_of(stderr)
    assert TIMESTAMP.search(by_access_log), by_access_log
    assert TIMESTAMP.sub("", by_access_log) == TIMESTAMP.sub("", by_structlog)
    assert json.loads(by_access_log) == {
        **fields,
        "event": "request",
        "request_id": "req-1",
        "tenant": "<opaque>",
        "level": "info",
        "timestamp": json.loads(by_access_log)["timestamp"],
    }


def test_each_log_line_reaches_the_stream_in_one_write(stderr: Writes) -> None:
    """``print`` (structlog's ``PrintLogger``) writes a line and its newline apart: on a
    stream that writes through (``PYTHONUNBUFFERED``) two system calls per line, the
    access line's included. The configured logger writes both at once."""
    log_request("POST", "/v1/transfers", 201, 1.25)
    structlog.get_logger("app.api").warning("slow", seconds=2)
    assert [json.loads(text)["event"] for text in stderr.writes] == ["request", "slow"]
    assert all(text.count("\n") == 1 and text.endswith("\n") for text in stderr.writes)


def test_under_another_structlog_configuration_the_access_line_goes_through_structlog(
    stderr: io.StringIO,
) -> None:
    with capture_logs() as captured:
        log_request("GET", "/v1/health", 200, 0.5)
    assert captured == [
        {
            "event": "request",
            "method": "GET",
            "path": "/v1/health",
            "status": 200,
            "ms": 0.5,
            "log_level": "info",
        }
    ]
    assert lines_of(stderr) == []


def test_each_request_writes_one_access_line_with_its_request_id(
    stderr: io.StringIO, client: Client
) -> None:
    open_issuer(client)
    given = client.get("/v1/health", headers={"X-Request-ID": "req-42"})
    made = client.get("/v1/health")
    accesses = [json.loads(line) for line in lines_of(stderr) if '"event":"request"' in line]
    assert [(line["method"], line["path"], line["status"]) for line in accesses] == [
        ("POST", "/v1/accounts", 201),
        ("GET", "/v1/health", 200),
        ("GET", "/v1/health", 200),
    ]
    assert given.headers["x-request-id"] == accesses[1]["request_id"] == "req-42"
    made_id = made.headers["x-request-id"]
    assert re.fullmatch("[0-9a-f]{32}", made_id), made_id
    assert accesses[2]["request_id"] == made_id
    assert accesses[0]["request_id"] not in (made_id, "req-42")


@settings(max_examples=300)
@given(
    micros=st.integers(min_value=0, max_value=EPOCH_MICROS_MAX)
    | st.integers(min_value=0, max_value=EPOCH_MICROS_MAX // 10**6).map(lambda s: s * 10**6)
)
def test_the_access_lines_clock_writes_the_chains_time_stamp_of_an_instant(micros: int) -> None:
    """``IsoUtcClock`` writes what ``TimeStamper(fmt="iso", utc=True)`` writes at the same
    instant (``isoformat`` of the aware time, "+00:00" as "Z", no fraction at a whole
    second), also for a second it had already formatted."""
    instant = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    stamped = TimeStamper(fmt="iso", utc=True)
    with patch("structlog.processors.datetime.datetime") as frozen:
        frozen.now.return_value = instant
        expected = stamped(None, "info", {})["timestamp"]
    clock = iso_utc_clock(stamped)
    assert clock is not None
    assert clock.text(micros) == expected
    assert clock.text(micros) == expected  # its second now known


def test_another_time_stamp_gets_no_clock_of_the_access_lines() -> None:
    assert iso_utc_clock(TimeStamper(fmt="iso", utc=False)) is None
    assert iso_utc_clock(TimeStamper(fmt="%Y", utc=True)) is None
    assert iso_utc_clock(TimeStamper(fmt="iso", utc=True, key="ts")) is None
    assert iso_utc_clock(TimeStamper(fmt="iso", utc=True)) is not None
