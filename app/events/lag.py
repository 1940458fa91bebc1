"""How far the feed and the webhook deliveries are behind, and how they fare."""

from dataclasses import dataclass


@dataclass(frozen=True)
class EventsLag:
    feed_positions: int
    webhook_events: int
    delivered: int
    failed: int
    endpoints_failing: int
    endpoints_disabled: int
