"""A pool of long-lived tasks that run application handlers.

Starting a trio task per request costs more than the rest of serving it (a coroutine, a task,
a context copy, the nursery's bookkeeping, and the same again at exit). A worker that stays
alive between jobs takes the next one with a single reschedule. The pool grows while every
worker is busy (the messaging core already caps how many requests a service runs at once)
and keeps at most `max_idle` workers parked when the load falls.

Jobs queued together (the requests of one read) go to one worker while their handlers answer
without waiting: a worker takes the next job as soon as one returns, so a batch costs one task
switch, not one per job (a woken worker per job, each taking one, was a switch per request).
Only when a job waits (`spread`) are more workers woken, one per job queued behind it.
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
        self._woken = 0  # workers woken or started that have not run yet
        self.workers = 0

    def submit(self, job: Job, arg: Any) -> None:
        """Run `await job(arg)` on a worker. The job must not raise: it reports its own errors.
        A job that may wait calls `spread` first (or when it first waits)."""
        self._jobs.append((job, arg))
        if not self._woken:
            self._wake()

    def spread(self) -> None:
        """The job under way waits: wake a worker for each job queued behind it."""
        while len(self._jobs) > self._woken:
            self._wake()

    def _wake(self) -> None:
        self._woken += 1
        if self._idle:
            trio.lowlevel.reschedule(self._idle.pop())
        else:
            self.workers += 1
            self._nursery.start_soon(self._work)

    async def _work(self) -> None:
        jobs, idle = self._jobs, self._idle
        try:
            while True:
                self._woken -= 1
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
