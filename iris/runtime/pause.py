"""Pausing an in-process node as SIGSTOP pauses a process (for `iris.testing`'s faults).

A stopped process runs nothing: no timer fires, no handler goes on, nothing is read. Bytes sent
to it wait in its receive buffers (its peers' writes are not refused), and its peers, hearing
nothing, may declare it failed. Continued, it finds that backlog, and its clock has moved on.

The nodes of `iris.testing.local_nodes` share one trio scheduler, which has no way to stop some
tasks and not others. So each task of such a node is started through the node's `Pause`
(`Pause.holding` wraps the nurseries it starts them in), which steps the task's coroutine
itself: while the node is paused, a task that trio wakes (its sleep ended, bytes arrived) is
held before its next step until the resume, and what trio woke it with waits for it. Timers,
link readers and writers, and application handlers halfway through their work all stop where
they are, as in a stopped process. Nothing else in the runtime needs to know: deadlines that
passed meanwhile wake their tasks at the resume, and the node's `FreezeWatch` sees the gap in
its ticks as it does after a real freeze (trio's clock is the system's monotonic clock, which
went on). So a paused node drops the requests whose callers gave up meanwhile by the very code
that protects a real process, and a pause shorter than a freeze goes unnoticed, as a short
SIGSTOP does.

Not held: tasks an application handler starts in nurseries of its own, and the test's own calls
into the node (`Runtime.call` refuses them while paused: a stopped process calls nothing).
Holding costs a generator step per task step, so only in-process nodes have a `Pause`.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, Protocol

import trio


class Spawner(Protocol):
    """Where a node starts its tasks: a trio nursery, or one wrapped by `Pause.holding`."""

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: Any,
                   name: object = None) -> None: ...


class Pause:
    def __init__(self) -> None:
        self._resumed: trio.Event | None = None  # while paused; set at the resume

    @property
    def paused(self) -> bool:
        return self._resumed is not None

    def pause(self) -> None:
        if self._resumed is None:
            self._resumed = trio.Event()

    def resume(self) -> None:
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.set()

    def holding(self, nursery: trio.Nursery) -> Spawner:
        """`nursery`, whose tasks are held while the node is paused."""
        return _Holding(nursery, self)

    async def run(self, async_fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return await self._stepped(async_fn(*args))

    @types.coroutine
    def _stepped(self, coro: Coroutine[Any, Any, Any]) -> Generator[Any, Any, Any]:
        """Step `coro` as trio would (trio sends each step what resumes it and takes what it
        yields), holding every step, the first one included, while paused. The hold is
        shielded: only the resume ends it, as only SIGCONT ends a stop; a deadline or a
        cancellation that comes meanwhile is in what trio woke the task with, or is seen at
        the task's next checkpoint."""
        sent: Any = None
        while True:
            resumed = self._resumed
            if resumed is not None:
                with trio.CancelScope(shield=True):  # noqa: ASYNC100 - it waits: `yield from`
                    yield from resumed.wait().__await__()
            try:
                trap = coro.send(sent)
            except StopIteration as done:
                return done.value
            sent = yield trap


class _Holding:
    def __init__(self, nursery: trio.Nursery, pause: Pause) -> None:
        self._nursery, self._pause = nursery, pause

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: Any,
                   name: object = None) -> None:
        self._nursery.start_soon(self._pause.run, async_fn, args, name=name or async_fn)
