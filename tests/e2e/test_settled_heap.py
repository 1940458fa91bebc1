"""A server leaves what its start-up made out of the cyclic collector's passes
(``app.bootstrap.settle_heap``): ``ledger serve`` just before it serves, and each
``--workers`` process once its app is built."""

import gc
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from app import cli as cli_module
from app.bootstrap import COLLECTOR_YOUNG_THRESHOLD, asgi_app, settle_heap, shutdown
from app.cli import cli
from app.heap import SettledHeap


@pytest.fixture(autouse=True)
def heap_and_logging_as_found() -> Iterator[None]:
    """The test process's own heap is handed back to the collector afterwards, and the
    logging the commands configured (onto a captured stream that closes) undone."""
    handlers = list(logging.getLogger().handlers)
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = handlers


def kept_settled() -> bool:
    """Whether the heap is kept settled from now on (conftest removes the keeper)."""
    return any(isinstance(callback, SettledHeap) for callback in gc.callbacks)


class Holder:
    """An object the collector tracks, as start-up's are."""

    def __init__(self) -> None:
        self.itself = self


def test_settling_the_heap_takes_what_exists_out_of_the_collectors_passes() -> None:
    kept = Holder()
    assert any(tracked is kept for tracked in gc.get_objects())
    assert not kept_settled()
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert kept_settled()
    assert not any(tracked is kept for tracked in gc.get_objects())
    made_after = Holder()
    assert any(tracked is made_after for tracked in gc.get_objects())


def test_a_settled_heap_starts_young_passes_less_often_keeping_the_older_ones() -> None:
    gc.set_threshold(700, 10, 10)
    settle_heap()
    assert gc.get_threshold() == (COLLECTOR_YOUNG_THRESHOLD, 10, 10)
    assert COLLECTOR_YOUNG_THRESHOLD > 700


def test_serve_settles_the_heap_just_before_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen_when_served: list[int] = []
    thresholds_when_served: list[int] = []
    kept_when_served: list[bool] = []

    def serving(server: Any) -> None:
        frozen_when_served.append(gc.get_freeze_count())
        thresholds_when_served.append(gc.get_threshold()[0])
        kept_when_served.append(kept_settled())

    monkeypatch.setattr(cli_module.StreamEndingServer, "run", serving)
    result = CliRunner().invoke(
        cli,
        ["serve", "--no-projections"],
        env={"LEDGER_DATA_DIR": str(tmp_path), "LEDGER_LOG_FORMAT": "console"},
    )
    assert result.exit_code == 0, result.output
    assert len(frozen_when_served) == 1
    assert frozen_when_served[0] > 0
    assert thresholds_when_served == [COLLECTOR_YOUNG_THRESHOLD]
    assert kept_when_served == [True]  # and kept settled while it serves


def test_a_worker_process_settles_its_heap_once_its_app_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("LEDGER_LOG_FORMAT", "console")
    assert gc.get_freeze_count() == 0
    assert not kept_settled()
    app = asgi_app()
    try:
        assert gc.get_freeze_count() > 0
        assert kept_settled()
    finally:
        shutdown(app.state.services)
