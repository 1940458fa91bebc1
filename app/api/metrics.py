"""Prometheus metrics, in a registry per app (tests build many apps in one process)."""

from collections.abc import Callable, Iterator
from typing import Any

from litestar.connection import ASGIConnection
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.application.read_model import Lag
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


class Metrics:
    def __init__(
        self,
        lag: Callable[[], Lag] | None = None,
        workers: Callable[[], list[WorkerState]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
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
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
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
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        if lag is not None:
            self.registry.register(LagCollector(lag))
        if workers is not None:
            self.registry.register(WorkerCollector(workers))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        # Per request: the labelled children are looked up once and kept (the client
        # library builds and locks on every ``labels`` call).
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(method=method, route=route, status=str(status)),
                self.latency.labels(method=method, route=route),
            )
            self._children[key] = children
        count, latency = children
        count.inc()
        latency.observe(seconds)


def metrics_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Metrics:
    """The app's metrics, for code that has the connection at hand (the request
    middleware, hot handlers that avoid a second dependency)."""
    metrics: Metrics = connection.app.state.metrics
    return metrics
