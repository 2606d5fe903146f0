"""Per-service and per-topic limits (Iris's ServiceLimits and TopicLimits).

What exceeds a limit is refused (a request gets a REFUSED reply with the reason) or dropped
(a broadcast or an event, counted), never queued without bound. Queued bytes count each
message's payload plus ENTRY_COST, so that empty messages are bounded too.
"""

from __future__ import annotations

from dataclasses import dataclass

ENTRY_COST = 64  # bytes charged per queued message on top of its payload (its bookkeeping)


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    max_concurrency: int = 64
    """Requests handed to the application and not yet answered."""

    max_queued_bytes: int = 16 * 1024 * 1024
    """Bytes of requests waiting for a free handler slot; beyond, requests are refused."""

    max_broadcast_concurrency: int = 16
    """Broadcasts handed to the application and not yet handled."""

    max_queued_broadcast_bytes: int = 16 * 1024 * 1024
    """Bytes of broadcasts waiting for a free handler slot; beyond, broadcasts are dropped."""

    def __post_init__(self) -> None:
        if min(self.max_concurrency, self.max_broadcast_concurrency) < 1:
            raise ValueError("max_concurrency and max_broadcast_concurrency must be >= 1")
        if min(self.max_queued_bytes, self.max_queued_broadcast_bytes) < 0:
            raise ValueError("max_queued_bytes and max_queued_broadcast_bytes must be >= 0")


@dataclass(frozen=True, slots=True)
class TopicLimits:
    max_queued_bytes: int = 16 * 1024 * 1024
    """Bytes of events delivered and not yet consumed; beyond, new events are dropped."""

    def __post_init__(self) -> None:
        if self.max_queued_bytes < 0:
            raise ValueError("max_queued_bytes must be >= 0")
