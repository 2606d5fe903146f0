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
A machine whose CPUs other threads want pays nothing more: a polling pass that took longer on
the clock than in the thread's CPU time (`DESCHEDULED_S`) means the thread waited for its CPU,
and then nobody polls for `CALM_S`; and a pass in which the node did nothing gives way to any
other thread (`sched_yield`) first. Measured beside the peers on 2 cores (`peers_bench.py`, 16
callers and sequential requests, 2026-11-30): sequential round trips 245-265 us -> 150-160 us
with 250 us of polling on an idle machine, requests/s unchanged (~26k); with two other
processes spinning on both cores, 243-248 us -> 252 us and ~15k requests/s both (polling
without the check: 400-4,000 us and 2.4k-9.9k/s). Only links over sockets poke it. A window of
0 turns it off; trio nodes and `iris node` poll for 250 us, asyncio nodes (`iris.aio`, whose
trio runs as a guest of asyncio's loop) not at all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import trio

DESCHEDULED_S = 200e-6
"""A pass of the loop that took this much longer on the clock than in this thread's CPU
time: the thread waited for its CPU, which another thread wanted."""

CALM_S = 0.1
"""After that, no polling for this long: a loaded machine is left alone."""


class BusyPoll:
    def __init__(self, window_s: float = 0.0,
                 clocks: tuple[Callable[[], float], Callable[[], float]] = (
                     time.perf_counter, time.thread_time)) -> None:
        """`clocks`: the wall clock and this thread's CPU clock, whose difference over a pass
        of the loop is the time the thread waited for its CPU."""
        if window_s < 0:
            raise ValueError("the busy-poll window must be >= 0")
        self.window_s = window_s
        self._clocks = clocks
        self._poked = False
        self.worked = False  # the node handled an input since the last pass (Runtime sets it)
        self._spinning = False
        self._wakeup = trio.Event()
        self._calm_until = 0.0
        self.contended = 0  # windows cut short because another thread wanted the CPU

    def poke(self) -> None:
        """Traffic arrived: poll for another window."""
        if self.window_s:
            self._poked = True
            if not self._spinning and self._clocks[0]() >= self._calm_until:
                self._wakeup.set()

    async def run(self) -> None:
        """Each pass of the loop costs this task one checkpoint and one reading of the wall
        clock: under load the loop is busy anyway, and the pass must stay cheap. The CPU
        clock (a system call) is read only once the wall clock has moved DESCHEDULED_S since
        its last reading, as only then can the thread have waited that long for its CPU; and
        the CPU is given way only by a pass in which the node did nothing (no traffic read,
        no input handled: `worked`)."""
        if not self.window_s:
            return
        wall, cpu = self._clocks
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            self._spinning = True
            try:
                now = before = wall()
                until = now + self.window_s
                before_cpu = cpu()
                while True:
                    await trio.lowlevel.checkpoint()
                    if self._poked:
                        self._poked = self.worked = False
                        now = wall()
                        until = now + self.window_s
                    else:
                        if self.worked:
                            self.worked = False
                        else:
                            os.sched_yield()  # another thread that wants this CPU runs first
                        now = wall()
                        if now >= until:
                            break
                    if now - before > DESCHEDULED_S:
                        now_cpu = cpu()
                        if (now - before) - (now_cpu - before_cpu) > DESCHEDULED_S:
                            # This thread waited for the CPU: others want it, and spinning
                            # would only delay them (and, through them, our own traffic).
                            self._calm_until = now + CALM_S
                            self.contended += 1
                            break
                        before, before_cpu = now, now_cpu
            finally:
                self._spinning = False
