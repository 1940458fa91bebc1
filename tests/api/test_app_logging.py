"""Building the app leaves the process's logging alone: the command that runs it
configures logging once (bootstrap.configure_logging). Litestar's default logging config
replaced the root logger's handlers with one bound to the sys.stderr of that moment and
started a queue-listener thread per app; in the test process a later log line then went
to a stream pytest had closed ("ValueError: I/O operation on closed file")."""

import io
import logging
import sys
import threading
from pathlib import Path

import pytest

from app.api.app import create_app
from app.bootstrap import build_services, shutdown
from app.settings import Settings


def test_building_the_app_keeps_the_root_loggers_handlers_and_starts_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    services = build_services(Settings(data_dir=tmp_path), projections=False)
    try:
        root = logging.getLogger()
        handlers_before = list(root.handlers)
        threads_before = set(threading.enumerate())
        # The stream of the moment is a passing one (as pytest's captured streams are).
        monkeypatch.setattr(sys, "stderr", io.StringIO())
        create_app(services)
        assert root.handlers == handlers_before
        assert set(threading.enumerate()) - threads_before == set()
    finally:
        shutdown(services)
