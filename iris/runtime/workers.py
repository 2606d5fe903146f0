"""A pool of long-lived tasks that run application handlers.

Starting a trio task per request costs more than the rest of serving it (a coroutine, a task,
a context copy, the nursery's bookkeeping, and the same again at exit). A worker that stays
alive between jobs takes the next one with a single reschedule. The pool grows while every
worker is busy (the messaging core already caps how many requests a service runs at once)
and keeps at most `max_idle` workers parked when the load falls.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from iris.runtime.pause import Spawner

Job = Callable[[Any], Awaitable[None]]


class WorkerPool:
    def __init__(self, nursery: Spawner, max_idle: int = 64) -> None:
        self._nursery = nursery
        self._max_idle = max_idle
        self._jobs: deque[tuple[Job, Any]] = deque()
        self._idle: list[trio.lowlevel.Task] = []
        self.workers = 0

    def submit(self, job: Job, arg: Any) -> None:
        """Run `await job(arg)` on a worker. The job must not raise: it reports its own errors."""
        self._jobs.append((job, arg))
        if self._idle:
            trio.lowlevel.reschedule(self._idle.pop())
        else:
            self.workers += 1
            self._nursery.start_soon(self._work)

    async def _work(self) -> None:
        jobs, idle = self._jobs, self._idle
        try:
            while True:
                while jobs:
                    job, arg = jobs.popleft()
                    await job(arg)
                if len(idle) >= self._max_idle:
                    return
                await self._park()
        finally:
            self.workers -= 1

    async def _park(self) -> None:
        """Wait among the idle workers until `submit` reschedules this task."""
        task = trio.lowlevel.current_task()
        self._idle.append(task)

        def abort(_: Any) -> trio.lowlevel.Abort:
            self._idle.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
