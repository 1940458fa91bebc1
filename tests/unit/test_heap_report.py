"""The heap report plugin (``-p tests.support.heap_report``) counts only the collector's
full passes, and keeps the largest heap it sampled and the test after which it was."""

import gc

from app.application.ledger import collector_paused
from tests.support.heap_report import FULL_GENERATION, HeapReport


def test_only_full_passes_are_counted_and_the_longest_kept() -> None:
    report = HeapReport()
    report.on_collection("start", {"generation": 0})
    report.on_collection("stop", {"generation": 0})
    assert report.full_passes == 0
    for _ in range(2):
        report.on_collection("start", {"generation": FULL_GENERATION})
        report.on_collection("stop", {"generation": FULL_GENERATION})
    assert report.full_passes == 2
    assert 0 <= report.longest_full_pass <= report.full_pass_seconds


def test_the_peak_is_the_largest_heap_sampled_and_names_its_test() -> None:
    report = HeapReport()
    # Earlier tests' garbage collected first, and no pass between the samples: a pass
    # there freed more than the lists added (a CI run: 520,632 objects, then 425,446).
    gc.collect()
    with collector_paused():
        first = report.sample("tests/a.py::one")
        kept: list[list[int]] = [[] for _ in range(100_000)]  # lists: tracked objects
        second = report.sample("tests/a.py::two")
        assert second > first
        assert report.peak_objects == second
        assert report.peak_test == "tests/a.py::two"
        del kept
        report.sample("tests/a.py::three")
        assert report.peak_test == "tests/a.py::two"
