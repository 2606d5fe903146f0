"""Noticing that this process was frozen (SIGSTOP, a paused VM, a long stall of the machine),
so that what piled up meanwhile is not taken as fresh.

Frames that arrived while the process was frozen wait in the kernel; read after the thaw, they
look just arrived, and a request among them would be counted from then and run although its
caller gave up long ago (measured: two members paused for 15 s ran 6-11 requests that another
member had answered). A tick every `TICK_S` notes that the process is alive; a gap much longer
than the tick is a freeze. The first read of each connection after a thaw holds what piled up
on it (and so do the reads after it while each comes back full: the driver keeps the
connection's last-read time until one is short): those frames are taken to have arrived when
the freeze began (or when that connection was last read, if later), the oldest they can be,
and their requests' time left shrinks by as much. Later reads are fresh. (A first version aged
every frame read within half a second of the thaw: fresh requests sent just after it were
dropped as 15 s old.)
"""

from __future__ import annotations

from collections.abc import Callable

import trio

TICK_S = 0.25
FREEZE_S = 1.0  # a gap this much longer than a tick is a freeze, not a busy loop


class FreezeWatch:
    def __init__(self, on_freeze: Callable[[float], None] = lambda seconds: None) -> None:
        self._alive_at = trio.current_time()
        self._thaw: tuple[float, float] | None = None  # (frozen from, thawed at), the latest
        self._told: tuple[float, float] | None = None  # the thaw `thawing` last reported
        self._on_freeze = on_freeze  # told each freeze's length (counted and logged)

    def backlog_age(self, last_read: float, now: float) -> float:
        """How long before `now` the frames of a read may have arrived, given when their
        connection was last read: since the freeze began, if one ended since then; else 0."""
        self._alive(now)
        thaw = self._thaw
        if thaw is None or thaw[1] <= last_read:
            return 0.0
        return now - max(thaw[0], last_read)

    def thawing(self, now: float) -> bool:
        """Whether a freeze ended within the last tick (noticed now, or by the tick) that
        this has not said yet: true once per freeze."""
        self._alive(now)
        thaw = self._thaw
        if thaw is None or thaw is self._told or now - thaw[1] >= TICK_S:
            return False
        self._told = thaw
        return True

    async def run(self) -> None:
        while True:
            await trio.sleep(TICK_S)
            self._alive(trio.current_time())

    def _alive(self, now: float) -> None:
        if now - self._alive_at > TICK_S + FREEZE_S:
            self._thaw = (self._alive_at, now)
            self._on_freeze(now - self._alive_at)
        self._alive_at = now
