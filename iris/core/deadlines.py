"""The deadlines of many pending operations behind one timer.

Most requests are answered long before their timeout. Giving each one a timer of its own costs
a wake-up of the driver per request when that timer comes due, to learn that there is nothing
to do. Here the deadlines sit in one heap, answered ones are dropped lazily, and the owner keeps
a single timer armed at the earliest deadline of an operation still pending: with a steady
stream of answered requests it wakes about once per timeout period, not once per request.
"""

from __future__ import annotations

from collections.abc import Collection
from heapq import heapify, heappop, heappush

INF = float("inf")


class Deadlines:
    __slots__ = ("_heap", "armed")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self.armed = INF  # the earliest time the owner has a timer set for

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, deadline: float, ident: int, pending: Collection[int]) -> float | None:
        """Track `ident` until `deadline`. Returns the time the owner must set a timer for,
        or None when one is set early enough already. `pending` holds the idents still
        waiting: when the heap holds many more entries than that, the answered ones go."""
        heap = self._heap
        heappush(heap, (deadline, ident))
        if len(heap) > 1024 and len(heap) > 4 * len(pending):
            self._heap = heap = [entry for entry in heap if entry[1] in pending]
            heapify(heap)
        if deadline < self.armed:
            self.armed = deadline
            return deadline
        return None

    def expire(self, now: float, pending: Collection[int]) -> tuple[list[int], float | None]:
        """The owner's timer fired at `now`. Returns the idents whose deadline passed while
        still pending, and the time to set the next timer for (None: nothing to wait for, or
        a timer set early enough already)."""
        if now >= self.armed:
            self.armed = INF
        heap = self._heap
        due: list[int] = []
        while heap:
            deadline, ident = heap[0]
            if ident not in pending:
                heappop(heap)  # answered: forget it, whenever its deadline is
            elif deadline <= now:
                heappop(heap)
                due.append(ident)
            else:
                break
        if heap and heap[0][0] < self.armed:
            self.armed = heap[0][0]
            return due, self.armed
        return due, None
