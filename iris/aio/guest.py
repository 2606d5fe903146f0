"""trio running inside an asyncio program, as a guest of its event loop.

The node is one trio implementation; an asyncio application drives it through trio's guest
mode (`trio.lowlevel.start_guest_run`): trio's scheduler runs in callbacks of the asyncio loop,
on the application's own thread, and only its waits for I/O go to a helper thread. So a node's
work and the application's coroutines interleave on one thread and share no lock: nothing is
handed between threads per message, and the GIL is never contended between them. (The
alternative, the node in a thread of its own as `iris.sync` does for blocking code, pays two
thread hand-offs per call and lets two busy threads fight over the GIL.)

There is one trio run per thread, so every node and relay client of one asyncio loop shares
one `Guest`; it starts with the first and ends with the last (`Guest.acquire`/`release`).

Crossing over:
- asyncio -> trio: the node's plain calls that need no trio task (`start_request`,
  `start_publish`) are made directly, between two of trio's ticks: their output leaves by the
  links' eager writes, and what must wake trio (a writer, an earlier timer) wakes it. `soon(fn,
  *args)` queues any other plain function for the guest's pump task, which runs it in trio's
  context; `call(async_fn, *args)` runs a trio coroutine in a task of its own and returns an
  asyncio future of its result. Cancelling that future (as asyncio does to what a cancelled
  task awaits) cancels the trio task.
- trio -> asyncio: `in_asyncio(coro)`, awaited in trio, runs an application coroutine as an
  asyncio task and returns its result; cancelling the trio side cancels the task.
Both directions are plain calls on one thread: an asyncio future is resolved and a trio event
set directly, each waking its own loop's waiter.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

log = logging.getLogger("iris.aio")

_GUESTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Guest] = (
    weakref.WeakKeyDictionary())


class Guest:
    """The trio run hosted by one asyncio loop; see the module docstring."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.users = 0
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._wake: trio.Event | None = None  # set while the pump waits for calls
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._started: asyncio.Future[None] = loop.create_future()
        self._done: asyncio.Future[None] = loop.create_future()
        # Application coroutines started from trio run in the application's context (its
        # context variables), not in that of trio's task that started them.
        self._context = contextvars.copy_context()

    @classmethod
    async def acquire(cls) -> Guest:
        """The running loop's guest, started if it was not."""
        loop = asyncio.get_running_loop()
        guest = _GUESTS.get(loop)
        if guest is None or guest._done.done():
            guest = _GUESTS[loop] = cls(loop)
            trio.lowlevel.start_guest_run(
                guest._main, run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                run_sync_soon_not_threadsafe=loop.call_soon, done_callback=guest._finished,
                host_uses_signal_set_wakeup_fd=True)
        guest.users += 1
        try:
            await asyncio.shield(guest._started)
        except BaseException:
            await guest.release()
            raise
        return guest

    async def release(self) -> None:
        """One user less; the last one ends the trio run (and waits for its end)."""
        self.users -= 1
        if self.users == 0:
            if self._stop is not None:
                self.soon(self._stop.set)
            await asyncio.shield(self._done)

    # -------------------------------------------------------------------- trio side
    async def _main(self) -> None:
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._pump)
            self._started.set_result(None)
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def _finished(self, result: outcome.Outcome[None]) -> None:
        if not self._started.done():
            self._started.set_exception(RuntimeError("trio could not start"))
        if isinstance(result, outcome.Error):
            self._done.set_exception(result.error)
        else:
            self._done.set_result(None)

    async def _pump(self) -> None:
        calls = self._calls
        while True:
            while calls:
                fn, args = calls.popleft()
                try:
                    fn(*args)
                except Exception:  # (each call reports its own errors: this is a bug's)
                    log.exception("a call into the node failed")
            self._wake = trio.Event()
            await self._wake.wait()
            self._wake = None

    async def _run(self, future: asyncio.Future[T], fn: Callable[..., Awaitable[T]],
                   args: tuple[Any, ...]) -> None:
        if future.done():  # cancelled before it started
            return
        with trio.CancelScope() as scope:
            future.add_done_callback(lambda f: self.soon(scope.cancel) if f.cancelled() else None)
            try:
                result = await fn(*args)
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(result)

    def start_in_asyncio(self, coro: Coroutine[Any, Any, T],
                         setting: tuple[contextvars.ContextVar[Any], Any] | None = None,
                         ) -> asyncio.Task[T]:
        """An application coroutine as an asyncio task, in a copy of the application's
        context (with one `setting` of a context variable in it, if given)."""
        context = self._context.copy()
        if setting is not None:
            context.run(setting[0].set, setting[1])
        return self.loop.create_task(coro, context=context)

    async def in_asyncio(self, coro: Coroutine[Any, Any, T],
                         setting: tuple[contextvars.ContextVar[Any], Any] | None = None) -> T:
        """Run an application coroutine on the asyncio loop (with `setting` as
        `start_in_asyncio` takes it); its result (or exception)."""
        task = self.start_in_asyncio(coro, setting)
        done = trio.Event()
        task.add_done_callback(lambda _: done.set())
        try:
            await done.wait()
        except trio.Cancelled:
            task.cancel()
            raise
        return task.result()

    # ----------------------------------------------------------------- asyncio side
    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run the plain function `fn(*args)` in trio soon, in order with earlier ones."""
        self._calls.append((fn, args))
        wake = self._wake
        if wake is not None and not wake.is_set():
            wake.set()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> asyncio.Future[T]:
        """Run the trio coroutine `fn(*args)` in a task of its own: a future of its result."""
        future: asyncio.Future[T] = self.loop.create_future()
        assert self._nursery is not None
        self.soon(self._nursery.start_soon, self._run, future, fn, args)
        return future

    async def hold(self, manager: AbstractAsyncContextManager[T]) -> tuple[T, Callable[[],
                                                                           Awaitable[None]]]:
        """Enter a trio async context manager in a trio task of its own and keep it entered:
        what it yields, and the coroutine function that exits it (and returns once it has)."""
        entered: asyncio.Future[T] = self.loop.create_future()
        exited: asyncio.Future[None] = self.loop.create_future()
        leave = trio.Event()

        async def keep() -> None:
            try:
                async with manager as value:
                    if not entered.done():  # (else the caller was cancelled: leave is set)
                        entered.set_result(value)
                    await leave.wait()
            except Exception as exc:
                failed = exited if entered.done() else entered
                if not failed.done():
                    failed.set_exception(exc)
            finally:  # (also when the whole trio run is cancelled)
                if not entered.done():
                    entered.set_exception(RuntimeError("the trio run ended"))
                if not exited.done():
                    exited.set_result(None)

        assert self._nursery is not None
        self.soon(self._nursery.start_soon, keep)
        try:
            value = await entered
        except asyncio.CancelledError:
            self.soon(leave.set)
            raise

        async def exit_it() -> None:
            self.soon(leave.set)
            await asyncio.shield(exited)

        return value, exit_it

