"""Per-service and per-topic limits (Iris's ServiceLimits and TopicLimits).

What exceeds a limit is refused (a request gets a REFUSED reply with the reason) or dropped
(a broadcast or an event, counted), never queued without bound. Queued bytes count each
message's payload plus ENTRY_COST, so that empty messages are bounded too.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from iris.core.messages import MAX_PAYLOAD
from iris.errors import LimitExceededError

ENTRY_COST = 64  # bytes charged per queued message on top of its payload (its bookkeeping)


def check_payload(payload: bytes, what: str = "message") -> None:
    """LimitExceededError for a request, reply, broadcast or event the overlay cannot carry,
    raised where it is sent from, before anything is sent: the caller's connection and its
    other traffic are untouched."""
    if len(payload) > MAX_PAYLOAD:
        raise LimitExceededError(
            f"{what} of {len(payload)} bytes exceeds {MAX_PAYLOAD} (use a tunnel for larger data)")


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


class Gate:
    """Admission under one pair of limits: at most `concurrency` messages handed to the
    application at once; while they are busy, later ones wait in a queue of at most
    `max_queued_bytes` (payload + ENTRY_COST each); beyond, they are turned away."""

    __slots__ = ("concurrency", "max_queued_bytes", "in_flight", "queue", "queued_bytes")

    def __init__(self, concurrency: int, max_queued_bytes: int) -> None:
        self.concurrency = concurrency
        self.max_queued_bytes = max_queued_bytes
        self.in_flight = 0
        self.queue: deque[tuple[Any, int]] = deque()
        self.queued_bytes = 0

    def offer(self, item: Any, size: int) -> bool | None:
        """True: hand `item` over now (it counts as in flight); False: it waits in the queue;
        None: the queue is full, turn it away."""
        if self.in_flight < self.concurrency:
            self.in_flight += 1
            return True
        cost = size + ENTRY_COST
        if self.queued_bytes + cost > self.max_queued_bytes:
            return None
        self.queue.append((item, cost))
        self.queued_bytes += cost
        return False

    def done(self) -> list[Any]:
        """One handed message is finished: the queued ones to hand over now (in flight)."""
        self.in_flight = max(0, self.in_flight - 1)
        ready = []
        while self.queue and self.in_flight < self.concurrency:
            item, cost = self.queue.popleft()
            self.queued_bytes -= cost
            self.in_flight += 1
            ready.append(item)
        return ready
