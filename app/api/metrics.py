"""Prometheus metrics, in a registry per app (tests build many apps in one process).

A request's count and latency are noted on the event loop as one ``deque.append`` and
folded into the client library's counter and histogram, by label and bucket, when the
registry is read (a scrape) or every ``PENDING_OBSERVATIONS_MAX`` requests: the library's
``inc`` and ``observe`` (a lock each, a Python loop over the buckets) cost the loop about
7% of a single transfer's instructions. The exposition is the same but for float
rounding of the latency sums (added by fold, not one by one)."""

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any, Final

from litestar.connection import ASGIConnection
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.application.read_model import Lag
from app.compat import add_to_histogram
from app.persistence.faults import STORE_ERRORS
from app.supervisor import WorkerState


class LagCollector(Collector):
    """Reads the projection lag at scrape time, so the figure is never stale."""

    def __init__(self, lag: Callable[[], Lag]) -> None:
        self.lag = lag

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            lag = self.lag()
        except STORE_ERRORS:
            return  # the store cannot say now; /v1/ready tells why

        yield GaugeMetricFamily(
            "ledger_projection_lag_positions",
            "Log positions the views are behind",
            value=lag.positions,
        )
        yield GaugeMetricFamily(
            "ledger_projection_lag_seconds",
            "Age of the oldest event the views lack",
            value=lag.seconds,
        )
        yield GaugeMetricFamily(
            "ledger_projection_checkpoint",
            "Last position applied to the views",
            value=lag.checkpoint,
        )


class WorkerCollector(Collector):
    """Each supervised worker's failures and whether it is up, read at scrape time."""

    def __init__(self, states: Callable[[], list[WorkerState]]) -> None:
        self.states = states

    def collect(self) -> Iterator[Metric]:
        failures = CounterMetricFamily(
            "ledger_worker_failures", "Failures of a supervised worker", labels=["worker"]
        )
        up = GaugeMetricFamily("ledger_worker_up", "1 when the worker runs", labels=["worker"])
        for state in self.states():
            failures.add_metric([state.name], state.failures)
            up.add_metric([state.name], 1 if state.up else 0)
        yield failures
        yield up


# Requests noted before the loop folds them itself (when nothing scrapes).
PENDING_OBSERVATIONS_MAX: Final = 4_096
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# The histogram's upper bounds, its implicit +Inf last: a latency's bucket is the first
# bound at least as large (the library's ``amount <= bound``), ``bisect_left``'s index.
_UPPER_BOUNDS: Final = (*(float(bound) for bound in LATENCY_BUCKETS), float("inf"))

_Children = tuple[Counter, Histogram]


class _Folding(Collector):
    """Registered first: a read of the registry folds the noted requests in before the
    counter and histogram are collected. Yields nothing itself."""

    def __init__(self, fold: Callable[[], None]) -> None:
        self.fold = fold

    def collect(self) -> Iterator[Metric]:
        self.fold()
        return iter(())


class Metrics:
    def __init__(
        self,
        lag: Callable[[], Lag] | None = None,
        workers: Callable[[], list[WorkerState]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        # (children, seconds) of requests not yet folded in: appended on the loop, taken
        # by ``popleft`` (each once, whichever thread folds).
        self._pending: deque[tuple[_Children, float]] = deque()
        self.registry.register(_Folding(self.fold))
        self.requests = Counter(
            "ledger_http_requests",
            "HTTP requests",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ledger_http_request_duration_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.transfers_recorded = Counter(
            "ledger_transfers_recorded",
            "Transfers recorded (replays excluded)",
            registry=self.registry,
        )
        self.rejections = Counter(
            "ledger_rejections",
            "Commands refused, by error code",
            ["code"],
            registry=self.registry,
        )
        # (method, route template, status) → its two children; bounded by the routes.
        self._children: dict[tuple[str, str, int], _Children] = {}
        if lag is not None:
            self.registry.register(LagCollector(lag))
        if workers is not None:
            self.registry.register(WorkerCollector(workers))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Note a request (folded in later). Its labelled children are made at its first
        request, as the library's ``labels`` makes them (their ``_created`` time)."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method=method, route=route, status=str(status)),
                self.latency.labels(method=method, route=route),
            )
            self._children[key] = children
        pending = self._pending
        pending.append((children, seconds))
        if len(pending) >= PENDING_OBSERVATIONS_MAX:
            self.fold()

    def fold(self) -> None:
        """Add the noted requests to the counter and histogram, by label and bucket."""
        folded: dict[_Children, list[float]] = {}  # [latency sum, count per bucket...]
        pending = self._pending
        while pending:
            try:
                children, seconds = pending.popleft()
            except IndexError:  # another thread folded the last one
                break
            row = folded.get(children)
            if row is None:
                row = folded[children] = [0.0] * (len(_UPPER_BOUNDS) + 1)
            row[0] += seconds
            row[1 + bisect_left(_UPPER_BOUNDS, seconds)] += 1
        for (count, latency), row in folded.items():
            buckets = [int(n) for n in row[1:]]
            count.inc(sum(buckets))
            add_to_histogram(latency, buckets, row[0])


def metrics_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Metrics:
    """The app's metrics, for code that has the connection at hand (the request
    middleware, hot handlers that avoid a second dependency)."""
    metrics: Metrics = connection.app.state.metrics
    return metrics
