"""A pytest plugin that reports how large a test process's heap grew and how long the
cyclic collector's full passes over it took: ``pytest -p tests.support.heap_report``
(with xdist, each worker reports its own). A heap that keeps growing (an app, a ledger,
a cache kept after its test) shows as a peak far above the end's count and as full
passes of seconds, which stall every thread of the process at once.

Lines go to the file named by ``HEAP_REPORT_FILE`` (appended, one JSON document per
process), else to standard error at the end of the session."""

import gc
import json
import os
import resource
import sys
import time
from typing import Any, Final

import pytest

# How often (in tests) the heap's objects are counted: a count walks the whole heap.
SAMPLE_EVERY_TESTS: Final = 20
REPORT_FILE_VARIABLE: Final = "HEAP_REPORT_FILE"
FULL_GENERATION: Final = 2


class HeapReport:
    def __init__(self) -> None:
        self.tests = 0
        self.peak_objects = 0
        self.peak_test = ""
        self.full_passes = 0
        self.full_pass_seconds = 0.0
        self.longest_full_pass = 0.0
        # The same passes in CPU time of the collecting thread: wall time also counts
        # the waits of a loaded machine, CPU time only the pass's own work.
        self.full_pass_cpu_seconds = 0.0
        self._pass_started: tuple[float, float] | None = None

    def on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != FULL_GENERATION:
            return
        if phase == "start":
            self._pass_started = (time.perf_counter(), time.thread_time())
        elif self._pass_started is not None:
            started, cpu_started = self._pass_started
            seconds = time.perf_counter() - started
            self._pass_started = None
            self.full_passes += 1
            self.full_pass_seconds += seconds
            self.full_pass_cpu_seconds += time.thread_time() - cpu_started
            self.longest_full_pass = max(self.longest_full_pass, seconds)

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        self.tests += 1
        if self.tests % SAMPLE_EVERY_TESTS == 0:
            self.sample(nodeid)

    def sample(self, nodeid: str) -> int:
        objects = len(gc.get_objects()) + gc.get_freeze_count()
        if objects > self.peak_objects:
            self.peak_objects, self.peak_test = objects, nodeid
        return objects

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        ended_with = self.sample("(end)")
        gc.callbacks.remove(self.on_collection)
        line = json.dumps(
            {
                "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
                "tests": self.tests,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "peak_objects": self.peak_objects,
                "peak_after": self.peak_test,
                "objects_at_end": ended_with,
                "full_passes": self.full_passes,
                "full_pass_seconds": round(self.full_pass_seconds, 2),
                "longest_full_pass_seconds": round(self.longest_full_pass, 3),
                "full_pass_cpu_seconds": round(self.full_pass_cpu_seconds, 2),
            }
        )
        path = os.environ.get(REPORT_FILE_VARIABLE)
        if path:
            with open(path, "a", encoding="utf-8") as report:
                report.write(line + "\n")
        else:
            sys.stderr.write(f"\nheap: {line}\n")


def pytest_configure(config: pytest.Config) -> None:
    report = HeapReport()
    gc.callbacks.append(report.on_collection)
    config.pluginmanager.register(report, "heap-report")
