"""The public `Tunnel`: one end of an overlay tunnel, as trio applications use it.

The core (`iris.core.tunnels`) does the protocol; this class waits for it. `Node` creates
tunnels (`Node.tunnel`, or for a member's handler when a peer opens one) and hands each the
core's events for it: a whole message, credit that lets a waiting sender go on, the close.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from iris.core.tunnel_end import TunnelError
from iris.core.tunnel_flow import MAX_MESSAGE
from iris.errors import ClosedError, LimitExceededError
from iris.runtime.driver import Runtime


class Tunnel:
    """An ordered, reliable, flow-controlled stream of messages to one cluster member."""

    def __init__(self, runtime: Runtime, key: tuple[int, int],
                 sent: Callable[[int], None] = lambda nbytes: None) -> None:
        self._runtime = runtime
        self.key = key
        self._sent = sent  # told the size of each message queued (the node's metrics)
        self._inbox: deque[bytes] = deque()
        self._readable = trio.Event()
        self._drained = trio.Event()
        self._closed_code: int | None = None  # why it closed (iris.core.messages), once closed
        self._closed_reason: str | None = None
        self._opened = False

    async def send(self, data: bytes) -> None:
        """Queue one message; waits while the tunnel's send buffer is full."""
        while not self.send_nowait(data):
            await self.wait_writable()

    def send_nowait(self, data: bytes) -> bool:
        """Queue one message if the send buffer has room; False (nothing queued) if it is full:
        then `wait_writable` before trying again."""
        if self._closed_reason is not None:
            raise ClosedError(f"tunnel closed: {self._closed_reason}")
        if len(data) > MAX_MESSAGE:
            raise LimitExceededError(f"tunnel message of {len(data)} bytes exceeds {MAX_MESSAGE}")
        runtime = self._runtime
        tunnel = runtime.core.tunnels.get(self.key)
        if tunnel is None:
            raise ClosedError("tunnel closed")
        if tunnel.queued_bytes < tunnel.send_buffer // 2 or not tunnel.has_output():
            try:
                runtime.call(lambda: runtime.core.tunnel_send(self.key, data))
            except TunnelError as exc:
                raise ClosedError(str(exc)) from None
            self._sent(len(data))
            return True
        if self._drained.is_set():
            self._drained = trio.Event()
        return False

    async def wait_writable(self) -> None:
        """Wait until the peer granted credit and queued data went out (or the tunnel closed)."""
        await self._drained.wait()

    async def receive(self) -> bytes:
        """The next message; raises ClosedError once the peer closed and all was read."""
        while not self._inbox:
            if self._closed_reason is not None:
                raise ClosedError(f"tunnel closed: {self._closed_reason}")
            self._readable = trio.Event()
            await self._readable.wait()
        data = self._inbox.popleft()
        runtime = self._runtime
        runtime.call(lambda: runtime.core.tunnel_consumed(self.key, len(data)))
        return data

    async def close(self) -> None:
        runtime = self._runtime
        if self.key in runtime.core.tunnels:
            runtime.call(lambda: runtime.core.tunnel_close(self.key))

    async def __aenter__(self) -> Tunnel:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _message(self, data: bytes) -> None:
        self._inbox.append(data)
        self._readable.set()

    def _closed(self, code: int, reason: str) -> None:
        self._closed_code = code
        self._closed_reason = reason
        self._readable.set()
        self._drained.set()
