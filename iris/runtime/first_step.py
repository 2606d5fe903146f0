"""Running a coroutine in the current task, and knowing whether it waited.

A request handler usually answers without ever waiting: its whole run is one step of the
worker task that awaits it. The runtime holds the hop acknowledgements of the input that
brought the request until the reply is made (`Runtime.hold_acks`), so they leave with it in one
write and the link's writer task is never woken for them; if the handler waits instead, they
leave as it starts waiting. To know which happens, `on_first_wait` steps the handler's
coroutine itself: the first step directly, the rest by passing every value it yields to trio
and every value or exception trio sends back into it (what `await` does, one frame removed).
The handler runs in the awaiting task as before: its cancel scopes, context and deadline are
that task's.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar

T = TypeVar("T")


async def on_first_wait(awaitable: Awaitable[T], then: Callable[[], None]) -> T:
    """`await awaitable`, calling `then()` if it ever yields to trio (a wait), before the
    wait. An awaitable that is no coroutine gets `then()` first."""
    if not isinstance(awaitable, types.CoroutineType):
        then()
        return await awaitable
    coro: Coroutine[Any, Any, T] = awaitable
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    then()
    return await _rest(coro, yielded)


@types.coroutine
def _rest(coro: Coroutine[Any, Any, T], yielded: Any) -> Generator[Any, Any, T]:
    """Drive `coro` on from where it yielded `yielded`, as `await` would have."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # thrown in by trio (a cancellation, an error outcome)
            try:
                yielded = coro.throw(exc)
            except StopIteration as done:
                result: T = done.value
                return result
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as done:
                result = done.value
                return result
