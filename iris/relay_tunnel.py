"""The client's end of a relay tunnel (`RelayClient.tunnel`, or a member's `handle_tunnel`).

Ordered, reliable messages to one member of a cluster, with the relay protocol's byte credit
both ways: the node grants this end credit with TunAllow, and a message may start once its
first chunk fits the credit (its later chunks follow regardless, so a message larger than the
window cannot deadlock); this end grants the node `WINDOW` bytes and gives them back as the
application reads messages, so what waits here for the application stays within the window
and one message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from iris import relay_protocol as rp
from iris.errors import ClosedError, IrisError

WINDOW = 4 * 1024 * 1024  # credit this end grants the node


class RelayTunnel:
    def __init__(self, send: Callable[[bytes], None], tid: int, chunk_limit: int) -> None:
        self._send = send  # the connection's writer
        self.tid = tid
        self._chunk_limit = max(1, chunk_limit)
        self._credit = 0  # bytes the node lets us start sending
        self._credit_changed = trio.Event()
        self._inbox: deque[bytes] = deque()
        self._readable = trio.Event()
        self._assembler = rp.MessageAssembler()
        self._closed: str | None = None
        self._closing = False

    # ----------------------------------------------------------------------- application
    async def send(self, data: bytes) -> None:
        """Send one message (not empty); waits while the node's credit does not cover it."""
        if not data:
            raise ValueError("a tunnel message cannot be empty")
        first = min(len(data), self._chunk_limit)
        while self._credit < first:
            self._check_open()
            self._credit_changed = trio.Event()
            await self._credit_changed.wait()
        self._check_open()
        self._credit -= len(data)
        limit = self._chunk_limit
        self._send(rp.client_tun_transfer(self.tid, len(data), data[:limit]) + b"".join(
            rp.client_tun_transfer(self.tid, 0, data[start:start + limit])
            for start in range(limit, len(data), limit)))

    async def receive(self) -> bytes:
        """The next message; ClosedError once the tunnel closed and every message was read."""
        while not self._inbox:
            if self._closed is not None:
                raise ClosedError(f"tunnel closed: {self._closed}")
            self._readable = trio.Event()
            await self._readable.wait()
        data = self._inbox.popleft()
        if self._closed is None:
            self._send(rp.client_tun_allow(self.tid, len(data)))  # the node may send more
        return data

    async def close(self) -> None:
        if self._closed is None and not self._closing:
            self._closing = True
            self._send(rp.client_tun_close(self.tid))

    async def __aenter__(self) -> RelayTunnel:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed is not None or self._closing:
            raise ClosedError(f"tunnel closed: {self._closed or 'closed by this end'}")

    # ------------------------------------------------------------------- from the node
    def allowed(self, space: int) -> None:
        self._credit += space
        self._credit_changed.set()

    def chunk(self, size: int, data: bytes) -> None:
        """A TunTransfer: a whole message goes to the inbox; IrisError if the node broke
        the protocol's chunk rules."""
        try:
            message = self._assembler.add(size, data)
        except rp.RelayError as exc:
            raise IrisError(f"tunnel {self.tid}: {exc}") from None
        if message is not None:
            self._inbox.append(message)
            self._readable.set()

    def ended(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
        self._readable.set()
        self._credit_changed.set()
