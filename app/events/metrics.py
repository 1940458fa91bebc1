"""The feed's and the webhook deliveries' figures for /metrics, read at scrape time."""

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.events.lag import EventsLag


class EventsCollector(Collector):
    def __init__(self, lag: Callable[[], EventsLag]) -> None:
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        lag = self.lag()
        yield GaugeMetricFamily(
            "ledger_feed_lag_positions",
            "Log positions the public event feed is behind",
            value=lag.feed_positions,
        )
        yield GaugeMetricFamily(
            "ledger_webhook_lag_events",
            "Feed events the furthest-behind enabled webhook endpoint has yet to pass",
            value=lag.webhook_events,
        )
        attempts = CounterMetricFamily(
            "ledger_webhook_attempts",
            "Webhook delivery attempts by this process, by outcome",
            labels=["outcome"],
        )
        attempts.add_metric(["delivered"], lag.delivered)
        attempts.add_metric(["failed"], lag.failed)
        yield attempts
        yield GaugeMetricFamily(
            "ledger_webhook_endpoints_failing",
            "Enabled endpoints whose last attempt failed",
            value=lag.endpoints_failing,
        )
        yield GaugeMetricFamily(
            "ledger_webhook_endpoints_disabled",
            "Endpoints disabled (after repeated failures or by hand)",
            value=lag.endpoints_disabled,
        )
