"""A queue of deadlines that all share one timeout.

Probes and hop acknowledgements all wait the same time, so their deadlines come due in the
order they were set. Keeping them in a FIFO lets one timer wait for the head of the queue
instead of one timer per probe or per routed message; an entry answered in time is simply
skipped when its deadline comes. In the simulator this removes one wake-up per routed hop.
"""

from __future__ import annotations

from collections import deque

INF = float("inf")


class TimeoutQueue:
    __slots__ = ("timeout", "armed", "generation", "_queue")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.armed = False  # the owner has a timer set for the head's deadline
        # The owner tags its timer with this; `reset` bumps it, so a timer set before the
        # reset is recognised as stale when it fires (no surgery on the owner's timer heap).
        self.generation = 0
        self._queue: deque[tuple[float, int]] | None = None  # allocated while non-empty

    def push(self, now: float, key: int) -> float | None:
        """Queue `key` to expire at now + timeout. Returns that deadline when the owner must
        set a timer for it (nothing was armed), else None."""
        deadline = now + self.timeout
        if self._queue is None:
            self._queue = deque()
        self._queue.append((deadline, key))
        if self.armed:
            return None
        self.armed = True
        return deadline

    def expire(self, now: float) -> list[int]:
        """The owner's timer fired: pop every key due by `now` (the caller ignores those
        already answered). Afterwards call `rearm()`."""
        self.armed = False
        queue = self._queue
        due: list[int] = []
        while queue and queue[0][0] <= now:
            due.append(queue.popleft()[1])
        return due

    def rearm(self) -> float | None:
        """The deadline the owner must set a timer for next, if any."""
        queue = self._queue
        if not queue:
            self._queue = None
            return None
        if self.armed:
            return None
        self.armed = True
        return queue[0][0]

    def clear(self) -> None:
        """Every entry was answered. A timer the owner already set stays set: it fires,
        finds nothing due, and asks for no new one. So a queue that empties and fills again
        with each message (a caller waiting for each reply) costs no timer per message."""
        self._queue = None

    def reset(self) -> None:
        """Forget everything, the owner's timer too (it is recognised as stale by its
        generation when it fires)."""
        self._queue = None
        self.armed = False
        self.generation += 1
