"""Busy polling: after traffic, the node keeps polling for a moment before its thread sleeps.

A thread that blocks in epoll lets its CPU go idle, and on a virtual machine the hypervisor then
takes the virtual CPU away; waking it when the next packet arrives costs far more than the
packet's processing. A request answered in a few tens of microseconds of work took ~260 us
per round trip this way (measured on the 2-vCPU machine of docs/BENCHMARKS.md: sequential
relay round trips went from ~3,700/s to ~6,500/s with a 300 us window). Go's scheduler avoids
the same cost by letting idle threads spin briefly before they park; this does the same for
trio: for `window_s` after the last read, a task keeps yielding, so the run loop polls with a
zero timeout instead of sleeping.

The price is CPU: at most one window of polling after each burst of traffic, none while the
node is idle, and under load one cheap task switch per loop pass (the loop is busy anyway).
A window of 0 turns it off (the default for embedded nodes; `iris node` polls for 250 us).
"""

from __future__ import annotations

import trio


class BusyPoll:
    def __init__(self, window_s: float = 0.0) -> None:
        if window_s < 0:
            raise ValueError("the busy-poll window must be >= 0")
        self.window_s = window_s
        self._poked = False
        self._spinning = False
        self._wakeup = trio.Event()

    def poke(self) -> None:
        """Traffic arrived: poll for another window."""
        if self.window_s:
            self._poked = True
            if not self._spinning:
                self._wakeup.set()

    async def run(self) -> None:
        if not self.window_s:
            return
        clock = trio.current_time
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            self._spinning = True
            try:
                until = clock() + self.window_s
                while True:
                    await trio.lowlevel.checkpoint()
                    if self._poked:
                        self._poked = False
                        until = clock() + self.window_s
                    elif clock() >= until:
                        break
            finally:
                self._spinning = False
