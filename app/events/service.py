"""Everything the event feed, webhooks and monitors need, built once per process.

``EventWorkers`` is the start/stop-able unit that a supervisor runs: the feed projector
and the webhook deliverer. ``ledger deliver`` runs it alone, ``ledger project`` beside
the view workers, ``ledger serve`` in-process when it also runs the projections.
"""

from dataclasses import asdict, dataclass, field
from typing import Any, Final

from app.application.ledger import Ledger
from app.events.database import Database, events_database_url
from app.events.feed import Feed, StreamSlots
from app.events.lag import EventsLag
from app.events.monitors import MonitorStore
from app.events.projector import FeedProjector
from app.events.store import FeedStore
from app.persistence.decoding import DecodedBatches
from app.settings import Settings
from app.supervisor import Supervisor
from app.webhooks.delivery import Deliverer, DeliveryPolicy
from app.webhooks.store import WebhookStore

STOP_WAIT_SECONDS: Final = 5.0


def delivery_policy(settings: Settings) -> DeliveryPolicy:
    return DeliveryPolicy(
        timeout_seconds=settings.webhook_timeout_seconds,
        retry_base_seconds=settings.webhook_retry_base_seconds,
        retry_cap_seconds=settings.webhook_retry_cap_seconds,
        failures_max=settings.webhook_failures_max,
    )


class EventWorkers:
    """The feed projector and the webhook deliveries, each supervised: restarted with
    backoff after a failure, its state on /v1/ready and /metrics."""

    def __init__(
        self,
        ledger: Ledger,
        feed: FeedStore,
        webhooks: WebhookStore,
        policy: DeliveryPolicy,
        shared: DecodedBatches | None = None,
    ) -> None:
        self.projector = FeedProjector(ledger, feed, shared)
        self.deliverer = Deliverer(feed, webhooks, policy)
        self.supervisor = Supervisor()

    def start(self) -> "EventWorkers":
        stopping = self.supervisor.stopping
        self.supervisor.supervise("feed_projector", lambda: self.projector.run(stopping))
        self.supervisor.supervise("webhook_deliveries", lambda: self.deliverer.run(stopping))
        return self

    def stop(self) -> None:
        self.supervisor.stop()


@dataclass
class EventServices:
    database: Database
    feed_store: FeedStore
    feed: Feed
    monitors: MonitorStore
    webhooks: WebhookStore
    stream_slots: StreamSlots
    keepalive_seconds: float
    ledger: Ledger
    workers: EventWorkers | None = field(default=None)

    @classmethod
    def build(
        cls,
        settings: Settings,
        ledger: Ledger,
        *,
        run_workers: bool,
        shared: DecodedBatches | None = None,
    ) -> "EventServices":
        """``shared``: the batches this process's views runner reads and decodes, which
        the feed projector then projects instead of reading them again."""
        database = Database(events_database_url(settings.read_model_url))
        try:  # the tables created or upgraded here may be refused (made by a newer version)
            feed_store = FeedStore(database)
            webhooks = WebhookStore(database)
        except BaseException:
            database.close()
            raise
        workers = None
        if run_workers:
            workers = EventWorkers(ledger, feed_store, webhooks, delivery_policy(settings), shared)
            workers.start()
        return cls(
            database=database,
            feed_store=feed_store,
            feed=Feed(feed_store, settings.event_wait_seconds_max),
            monitors=MonitorStore(database),
            webhooks=webhooks,
            stream_slots=StreamSlots(settings.event_streams_max),
            keepalive_seconds=settings.event_stream_keepalive_seconds,
            ledger=ledger,
            workers=workers,
        )

    def close(self) -> None:
        if self.workers is not None:
            self.workers.stop()
        self.database.close()

    def heartbeat(self) -> dict[str, Any]:
        status: dict[str, Any] = asdict(self.lag())
        states = [] if self.workers is None else self.workers.supervisor.states()
        status["workers"] = [
            {**asdict(state), "since": state.since.isoformat()} for state in states
        ]
        return status

    def lag(self) -> EventsLag:
        head = self.feed_store.head()
        log_head = self.ledger.recorder.max_notification_id() or 0
        endpoints = self.webhooks.page(limit=1000)
        enabled = [endpoint for endpoint in endpoints if endpoint.status == "enabled"]
        oldest = min((endpoint.cursor for endpoint in enabled), default=head.sequence)
        deliverer = None if self.workers is None else self.workers.deliverer
        return EventsLag(
            feed_positions=max(0, log_head - head.checkpoint),
            webhook_events=max(0, head.sequence - oldest),
            delivered=0 if deliverer is None else deliverer.delivered,
            failed=0 if deliverer is None else deliverer.failed,
            endpoints_failing=sum(1 for endpoint in enabled if endpoint.failures),
            endpoints_disabled=len(endpoints) - len(enabled),
        )
