"""Noticing that this process was frozen (SIGSTOP, a paused VM, a long stall of the machine),
so that what piled up meanwhile is not taken as fresh.

Frames that arrived while the process was frozen wait in the kernel; read after the thaw, they
look just arrived, and a request among them would be counted from then and run although its
caller gave up long ago (measured: a member paused for 20 s ran requests another member had
answered). A tick every `TICK_S` notes that the process is alive; a gap much longer than the
tick is a freeze. Frames read within `THAW_WINDOW_S` of a thaw are taken to have arrived when the
freeze began (the oldest they can be): their requests' time left shrinks by the freeze. A
request that truly arrived just after the thaw may be judged a little old; one that waited
through the freeze is never judged fresh.
"""

from __future__ import annotations

import trio

TICK_S = 0.25
FREEZE_S = 1.0  # a gap this much longer than a tick is a freeze, not a busy loop
THAW_WINDOW_S = 0.5


class FreezeWatch:
    def __init__(self) -> None:
        self._alive_at = trio.current_time()
        self._thaw: tuple[float, float] | None = None  # (frozen from, thawed at), the latest
        self.freezes = 0

    def backlog_age(self) -> float:
        """How long ago the frames being read now may have arrived, beyond now: the length of
        a freeze that ended within `THAW_WINDOW_S`, else 0."""
        now = trio.current_time()
        self._alive(now)
        thaw = self._thaw
        if thaw is None or now - thaw[1] > THAW_WINDOW_S:
            return 0.0
        return thaw[1] - thaw[0]

    async def run(self) -> None:
        while True:
            await trio.sleep(TICK_S)
            self._alive(trio.current_time())

    def _alive(self, now: float) -> None:
        if now - self._alive_at > TICK_S + FREEZE_S:
            self._thaw = (self._alive_at, now)
            self.freezes += 1
        self._alive_at = now
