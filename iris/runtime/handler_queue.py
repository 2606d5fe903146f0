"""Messages for one application handler, handled one at a time and in order by one task.

A topic's events must reach its handler in the order they were published, so they cannot go to
a pool of workers: each subscription (of an embedded node, or of a relay client) has a queue
and one task that drains it. A handler that raises is logged and reported, and the queue goes
on with the next message.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("iris")


class HandlerQueue:
    def __init__(self, handler: Callable[[bytes], Awaitable[Any]], what: str) -> None:
        self.handler = handler
        self.what = what  # names the handler in the log
        self._queue: deque[bytes] = deque()
        self._wakeup = trio.Event()
        self._stopped = False

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, data: bytes) -> None:
        self._queue.append(data)
        self._wakeup.set()

    def stop(self) -> list[bytes]:
        """The task returns once the message being handled (if any) is done; the messages
        still queued are dropped, and returned (a subscription's count under its topic's
        limits, for one)."""
        self._stopped = True
        self._wakeup.set()
        dropped = list(self._queue)
        self._queue.clear()
        return dropped

    async def run(self, done: Callable[[bytes], None] | None = None,
                  failed: Callable[[], None] | None = None) -> None:
        """Handle messages until stopped; `done(data)` after each one, `failed()` when the
        handler raised."""
        queue = self._queue
        while not self._stopped:
            if not queue:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            data = queue.popleft()
            try:
                await self.handler(data)
            except Exception:  # one bad message must not stop the others
                log.exception("%s raised", self.what)
                if failed is not None:
                    failed()
            finally:
                if done is not None:
                    done(data)
