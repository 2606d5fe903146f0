"""The deadlines of many pending operations behind one timer.

Probes, routed hops and requests are mostly answered long before their timeout. A timer per
operation would cost the driver one wake-up per operation, to learn that there is nothing to
do (in the simulator, one per routed hop). Here the deadlines sit in one heap and the owner
keeps a single timer armed at the earliest one: with a steady stream of answered operations
it wakes about once per timeout period.

An answered entry stays in the heap until it reaches the head. An owner that passes the keys
still `pending` has answered entries dropped as soon as they reach the head, whatever their
deadline (and in bulk when they far outnumber the pending ones), so its timer waits for the
earliest entry still pending. An owner that does not is handed every key that comes due and
ignores those it no longer waits for; it can `clear()` when nothing is pending.

A heap, not a queue in order of arrival: the overlay's timeouts follow the measured
acknowledgement delay, so an entry pushed later may be due earlier, and it must expire at
its own deadline rather than behind the head's.
"""

from __future__ import annotations

from collections.abc import Collection
from heapq import heapify, heappop, heappush

INF = float("inf")

_COMPACT_ABOVE = 1024  # entries before answered ones are dropped in bulk


class Deadlines:
    __slots__ = ("_heap", "armed", "generation")

    def __init__(self) -> None:
        # Allocated while entries wait: a node holds two, empty most of the time, and the
        # simulator holds many thousands of nodes.
        self._heap: list[tuple[float, int]] | None = None
        self.armed = INF  # the earliest time the owner has a timer set for
        # The owner may tag its timer with this; `reset` bumps it, so a timer set before the
        # reset is recognised as stale when it fires (no surgery on the owner's timers).
        self.generation = 0

    def __len__(self) -> int:
        return len(self._heap) if self._heap is not None else 0

    def add(self, deadline: float, key: int,
            pending: Collection[int] | None = None) -> float | None:
        """Track `key` until `deadline`. Returns the time the owner must set a timer for, or
        None when one is set early enough already."""
        heap = self._heap
        if heap is None:
            heap = self._heap = []
        heappush(heap, (deadline, key))
        if (pending is not None and len(heap) > _COMPACT_ABOVE
                and len(heap) > 4 * len(pending)):
            self._heap = heap = [entry for entry in heap if entry[1] in pending]
            heapify(heap)
        if deadline < self.armed:
            self.armed = deadline
            return deadline
        return None

    def expire(self, now: float,
               pending: Collection[int] | None = None) -> tuple[list[int], float | None]:
        """The owner's timer fired at `now`. Returns the keys whose deadline passed (only
        those still pending, when `pending` is given) and the time to set the next timer for
        (None: nothing to wait for, or a timer set early enough already).

        The next timer is chosen before the owner handles the keys, so entries it adds
        meanwhile (a hop re-sent, a probe retried) arm a timer only if they are due earlier
        than what is left."""
        if now >= self.armed:
            self.armed = INF
        heap = self._heap
        due: list[int] = []
        if heap is None:
            return due, None
        while heap:
            deadline, key = heap[0]
            if pending is not None and key not in pending:
                heappop(heap)  # answered: forget it, whenever its deadline is
            elif deadline <= now:
                heappop(heap)
                due.append(key)
            else:
                break
        if not heap:
            self._heap = None
        elif heap[0][0] < self.armed:
            self.armed = heap[0][0]
            return due, self.armed
        return due, None

    def clear(self) -> None:
        """Every entry was answered. A timer the owner already set stays set: it fires, finds
        nothing due, and asks for no new one. So an owner that empties and fills the heap with
        each operation (a caller waiting for each reply) costs no timer per operation."""
        self._heap = None

    def reset(self) -> None:
        """Forget everything, the owner's timer too (recognised as stale by its generation
        when it fires)."""
        self._heap = None
        self.armed = INF
        self.generation += 1
