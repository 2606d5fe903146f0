"""Per-service and per-topic limits (Iris's ServiceLimits and TopicLimits).

What exceeds a limit is refused (a request gets a REFUSED reply with the reason) or dropped
(an event, counted), never queued without bound.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ServiceLimits:
    max_concurrency: int = 64
    """Requests handed to the application and not yet answered."""

    max_queued_bytes: int = 16 * 1024 * 1024
    """Bytes of requests waiting for a free handler slot; beyond, requests are refused."""

    def __post_init__(self) -> None:
        if self.max_concurrency < 1 or self.max_queued_bytes < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queued_bytes >= 0")


@dataclass(frozen=True, slots=True)
class TopicLimits:
    max_queued_bytes: int = 16 * 1024 * 1024
    """Bytes of events delivered and not yet consumed; beyond, new events are dropped."""

    def __post_init__(self) -> None:
        if self.max_queued_bytes < 0:
            raise ValueError("max_queued_bytes must be >= 0")
