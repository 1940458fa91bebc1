"""A request's count and latency are noted on the loop and folded into the registry's
counter and histogram when it is read (app.api.metrics): the exposition is the one the
client library's own ``inc`` and ``observe`` per request give."""

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from app.api.metrics import LATENCY_BUCKETS, PENDING_OBSERVATIONS_MAX, Metrics

# Latencies exact in binary (the folded sums then equal the one-by-one sums exactly),
# one per bucket and beyond the last bound.
LATENCIES = (0.0009765625, 0.001953125, 0.00390625, 0.0078125, 0.015625, 0.25, 8.0)
ROUTES = (("POST", "/v1/transfers", 201), ("POST", "/v1/transfers", 422), ("GET", "/x", 200))


def exposition(registry: CollectorRegistry, name: str = "ledger_http_request") -> list[str]:
    """The lines (help and type included) of the metrics whose names hold ``name``."""
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if name in line and "_created" not in line]


def one_by_one(requests: list[tuple[str, str, int, float]]) -> list[str]:
    """The exposition of the same requests counted by the library, one call each."""
    registry = CollectorRegistry()
    count = Counter(
        "ledger_http_requests", "HTTP requests", ["method", "route", "status"], registry=registry
    )
    latency = Histogram(
        "ledger_http_request_duration_seconds",
        "HTTP request latency",
        ["method", "route"],
        registry=registry,
        buckets=LATENCY_BUCKETS,
    )
    for method, route, status, seconds in requests:
        count.labels(method=method, route=route, status=str(status)).inc()
        latency.labels(method=method, route=route).observe(seconds)
    return exposition(registry)


def folded(requests: list[tuple[str, str, int, float]]) -> list[str]:
    metrics = Metrics()
    for method, route, status, seconds in requests:
        metrics.observe(method, route, status, seconds)
    return exposition(metrics.registry)


def requests_of(number: int) -> list[tuple[str, str, int, float]]:
    return [(*ROUTES[n % len(ROUTES)], LATENCIES[n % len(LATENCIES)]) for n in range(number)]


def test_folded_requests_are_exposed_as_counted_one_by_one() -> None:
    requests = requests_of(50)
    assert folded(requests) == one_by_one(requests)


def test_requests_beyond_the_pending_bound_are_all_exposed_once() -> None:
    requests = requests_of(PENDING_OBSERVATIONS_MAX * 2 + 7)  # folded by the loop, twice
    assert folded(requests) == one_by_one(requests)


def test_each_read_of_the_registry_shows_the_requests_so_far() -> None:
    metrics = Metrics()
    metrics.observe("POST", "/v1/transfers", 201, 0.002)
    first = exposition(metrics.registry, "ledger_http_requests_total{")
    metrics.observe("POST", "/v1/transfers", 201, 0.002)
    second = exposition(metrics.registry, "ledger_http_requests_total{")
    assert first == [
        'ledger_http_requests_total{method="POST",route="/v1/transfers",status="201"} 1.0'
    ]
    assert second == [
        'ledger_http_requests_total{method="POST",route="/v1/transfers",status="201"} 2.0'
    ]
