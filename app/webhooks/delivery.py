"""Delivering the feed to webhook endpoints (Standard Webhooks).

One thread per enabled endpoint, so a slow or dead endpoint holds up nobody else.
Each thread delivers its endpoint's events one at a time in feed order: an event is
sent until a 2xx acknowledges it (at-least-once; the same ``webhook-id`` every time),
with exponential back-off and jitter between tries, every call under a timeout, and
the endpoint disabled after a bounded run of failures (a ``webhook.disabled`` event
says so). Progress lives in the events database, so a killed worker resumes.
"""

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final

import httpx
import structlog
from standardwebhooks import Webhook

from app.events.store import FeedRow, FeedStore
from app.events.worker import ThreadWorker
from app.webhooks.store import Attempt, Endpoint, WebhookStore

log = structlog.get_logger(__name__)

ENDPOINT_REFRESH_SECONDS: Final = 0.5
IDLE_POLL_SECONDS: Final = 0.02
# Events read at once for one endpoint (a replay or an update is seen within a page).
DELIVERY_PAGE_SIZE: Final = 100
RECORD_BATCH_MAX: Final = 50
RECORD_DELAY_SECONDS: Final = 0.05
BACKOFF_RECHECK_SECONDS: Final = 0.5
USER_AGENT: Final = "credits-ledger-webhooks/1"
WORKER_ERROR_PAUSE_SECONDS: Final = 1.0
RETRY_JITTER_MIN: Final = 0.75


@dataclass(frozen=True)
class DeliveryPolicy:
    timeout_seconds: float = 10.0
    retry_base_seconds: float = 5.0
    retry_cap_seconds: float = 3600.0
    failures_max: int = 20

    def retry_delay(self, failures: int) -> float:
        """Seconds before the next try after ``failures`` consecutive failures: doubling
        from the base, capped, with jitter in [75 %, 100 %] of it (so that delays still
        grow strictly until the cap, while endpoints failing together drift apart)."""
        ceiling = min(self.retry_cap_seconds, self.retry_base_seconds * 2.0 ** (failures - 1))
        return ceiling * random.uniform(RETRY_JITTER_MIN, 1.0)


def signed_headers(secret: str, event_id: str, body: str, now: datetime) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id=event_id, timestamp=now, data=body)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class EndpointWorker:
    def __init__(
        self,
        endpoint_id: str,
        feed: FeedStore,
        webhooks: WebhookStore,
        policy: DeliveryPolicy,
        on_attempt: Callable[[Attempt], None],
    ) -> None:
        self.endpoint_id = endpoint_id
        self.feed = feed
        self.webhooks = webhooks
        self.policy = policy
        self.on_attempt = on_attempt
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"webhook-{endpoint_id}")

    def _run(self) -> None:
        timeout = httpx.Timeout(self.policy.timeout_seconds)
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            while not self.stopping.is_set():
                try:
                    if not self._step(client):
                        return
                except Exception as error:  # a worker boundary: log and go on
                    log.exception("webhook.worker_failed", webhook_id=self.endpoint_id)
                    log.info("webhook.worker_pause", error=repr(error))
                    self.stopping.wait(WORKER_ERROR_PAUSE_SECONDS)

    def _step(self, client: httpx.Client) -> bool:
        """One round: the endpoint as stored, then up to a page of its next events, in
        order, each until it fails. False when the endpoint is gone or disabled."""
        endpoint = self.webhooks.get(self.endpoint_id)
        if endpoint is None or endpoint.status != "enabled":
            return False
        if endpoint.next_attempt_at is not None:
            waiting = endpoint.next_attempt_at - time.time()
            if waiting > 0:
                # Look again now and then: a replay or re-enable cancels the back-off.
                self.stopping.wait(min(waiting, BACKOFF_RECHECK_SECONDS))
                return True
        rows = self.feed.page(endpoint.cursor, DELIVERY_PAGE_SIZE, endpoint.types)
        if not rows:
            self.stopping.wait(IDLE_POLL_SECONDS)
            return True
        secret = self.webhooks.secret(endpoint.id)
        if secret is None:
            return False
        self._deliver_page(client, endpoint, secret, rows)
        return True

    def _deliver_page(
        self, client: httpx.Client, endpoint: Endpoint, secret: str, rows: list[FeedRow]
    ) -> None:
        """Deliver in order until a failure; successes are recorded a few at a time (one
        transaction for up to ``RECORD_BATCH_MAX``, or ``RECORD_DELAY_SECONDS``): a crash
        in between sends those again, with the same ids, as at-least-once allows."""
        delivered: list[Attempt] = []
        first_unrecorded = 0.0
        for row in rows:
            if self.stopping.is_set():
                break
            attempt = self._send(client, endpoint, secret, row)
            self.on_attempt(attempt)
            if not attempt.ok:
                if delivered and not self._record_delivered(endpoint, delivered):
                    return
                endpoint = endpoint if not delivered else self._advanced(endpoint, delivered)
                self._record_failure(endpoint, attempt)
                return
            if not delivered:
                first_unrecorded = time.monotonic()
            delivered.append(attempt)
            if (
                len(delivered) >= RECORD_BATCH_MAX
                or time.monotonic() - first_unrecorded >= RECORD_DELAY_SECONDS
            ):
                if not self._record_delivered(endpoint, delivered):
                    return
                endpoint, delivered = self._advanced(endpoint, delivered), []
        if delivered:
            self._record_delivered(endpoint, delivered)

    def _record_delivered(self, endpoint: Endpoint, delivered: list[Attempt]) -> bool:
        return self.webhooks.record_delivered(endpoint, delivered)

    @staticmethod
    def _advanced(endpoint: Endpoint, delivered: list[Attempt]) -> Endpoint:
        return replace(endpoint, cursor=delivered[-1].sequence, failures=0, next_attempt_at=None)

    def _record_failure(self, endpoint: Endpoint, attempt: Attempt) -> None:
        disable = endpoint.failures + 1 >= self.policy.failures_max
        retry_at = None if disable else time.time() + self.policy.retry_delay(endpoint.failures + 1)
        self.webhooks.record_failure(endpoint, attempt, retry_at=retry_at, disable=disable)
        if disable:
            log.warning("webhook.disabled", webhook_id=endpoint.id, error=attempt.error)

    def _send(self, client: httpx.Client, endpoint: Endpoint, secret: str, row: FeedRow) -> Attempt:
        event_id = row.event_id
        headers = signed_headers(secret, event_id, row.body, datetime.now(tz=UTC))
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            response = client.post(endpoint.url, content=row.body.encode(), headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"
        latency_ms = (time.perf_counter() - started) * 1000
        return Attempt(
            sequence=row.sequence,
            event_id=event_id,
            event_type=row.event_type,
            position=row.position,
            ok=error is None,
            response_status=status,
            latency_ms=round(latency_ms, 3),
            error=error,
        )


class Deliverer(ThreadWorker):
    """Keeps one ``EndpointWorker`` per enabled endpoint while it runs."""

    thread_name = "webhook-dispatcher"

    def __init__(self, feed: FeedStore, webhooks: WebhookStore, policy: DeliveryPolicy) -> None:
        super().__init__()
        self.feed = feed
        self.webhooks = webhooks
        self.policy = policy
        self.workers: dict[str, EndpointWorker] = {}
        self.delivered = 0
        self.failed = 0
        self._counts_lock = threading.Lock()
        self.attempt_listeners: list[Callable[[Attempt], None]] = []

    def stop_endpoints(self) -> None:
        for worker in self.workers.values():
            worker.stopping.set()
        # A call in flight cannot be interrupted; it ends within its timeout. Wait for
        # all of them together, bounded (the threads are daemons either way).
        deadline = time.monotonic() + self.policy.timeout_seconds + 1
        for worker in self.workers.values():
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        self.workers.clear()

    def _count(self, attempt: Attempt) -> None:
        with self._counts_lock:
            if attempt.ok:
                self.delivered += 1
            else:
                self.failed += 1
        for listener in self.attempt_listeners:
            listener(attempt)

    def run(self, stopping: threading.Event) -> None:
        """Keep the endpoint workers in line with the enabled endpoints until
        ``stopping``; a failure is raised (for a supervisor), the workers stopped."""
        try:
            while not stopping.is_set():
                self._reconcile()
                stopping.wait(ENDPOINT_REFRESH_SECONDS)
        finally:
            self.stop_endpoints()

    def _reconcile(self) -> None:
        wanted = {endpoint.id for endpoint in self.webhooks.enabled()}
        for endpoint_id in list(self.workers):
            worker = self.workers[endpoint_id]
            if endpoint_id not in wanted or not worker.thread.is_alive():
                worker.stopping.set()
                if not worker.thread.is_alive():
                    del self.workers[endpoint_id]
        for endpoint_id in wanted - set(self.workers):
            worker = EndpointWorker(endpoint_id, self.feed, self.webhooks, self.policy, self._count)
            self.workers[endpoint_id] = worker
            worker.thread.start()
