"""The client's end of a relay tunnel (`RelayClient.tunnel`, or a member's `handle_tunnel`),
and `CreditWait`, the send credit of either end of a relay tunnel as something a task can
wait on (the node's end uses it too).

Ordered, reliable messages to one member of a cluster, under the tunnel rules of
`iris.core.tunnel_flow` both ways: the node grants this end credit with TunAllow, and a message
may start once its first chunk fits the credit; this end grants the node `WINDOW` bytes and
gives them back as the application reads messages, so what waits here for the application
stays within the window and one message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from iris.core.tunnel_flow import MessageAssembler, SendCredit, TunnelProtocolError
from iris.errors import ClosedError, IrisError
from iris.relay import protocol as rp


class CreditWait:
    """The bytes the other end lets us send (its TunAllows), and a sender waiting for them."""

    def __init__(self) -> None:
        self._credit = SendCredit()
        self._changed = trio.Event()

    def grant(self, nbytes: int) -> None:
        self._credit.grant(nbytes)
        self._changed.set()

    def wake(self) -> None:
        """Wake a waiting sender (its tunnel closed)."""
        self._changed.set()

    async def spend(self, first: int, total: int, check: Callable[[], None] = lambda: None) -> None:
        """Wait until `first` bytes fit, then spend `total`; `check` (which may raise) runs
        before each wait and before spending."""
        while not self._credit.fits(first):
            check()
            self._changed = trio.Event()
            await self._changed.wait()
        check()
        self._credit.spend(total)


class RelayTunnel:
    def __init__(self, send: Callable[[bytes], None], tid: int, chunk_limit: int) -> None:
        self._send = send  # the connection's writer
        self.tid = tid
        self._chunk_limit = max(1, chunk_limit)
        self._credit = CreditWait()  # what the node lets us send
        self._inbox: deque[bytes] = deque()
        self._readable = trio.Event()
        self._assembler = MessageAssembler()
        self._closed: str | None = None
        self._closing = False

    # ----------------------------------------------------------------------- application
    async def send(self, data: bytes) -> None:
        """Send one message (not empty); waits while the node's credit does not cover it."""
        if not data:
            raise ValueError("a tunnel message cannot be empty")
        await self._credit.spend(min(len(data), self._chunk_limit), len(data), self._check_open)
        self._send(rp.tun_message_packets(self.tid, data, self._chunk_limit))

    async def receive(self) -> bytes:
        """The next message; ClosedError once the tunnel closed and every message was read."""
        while not self._inbox:
            if self._closed is not None:
                raise ClosedError(f"tunnel closed: {self._closed}")
            self._readable = trio.Event()
            await self._readable.wait()
        data = self._inbox.popleft()
        if self._closed is None:
            self._send(rp.TunAllow.pack(self.tid, len(data)))  # the node may send more
        return data

    async def close(self) -> None:
        if self._closed is None and not self._closing:
            self._closing = True
            self._send(rp.TunClose.pack(self.tid))

    async def __aenter__(self) -> RelayTunnel:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed is not None or self._closing:
            raise ClosedError(f"tunnel closed: {self._closed or 'closed by this end'}")

    # ------------------------------------------------------------------- from the node
    def allowed(self, space: int) -> None:
        self._credit.grant(space)

    def chunk(self, size: int, data: bytes) -> None:
        """A TunTransfer: a whole message goes to the inbox; IrisError if the node broke
        the protocol's chunk rules."""
        try:
            message = self._assembler.add(size != 0, size, data)
        except TunnelProtocolError as exc:
            raise IrisError(f"tunnel {self.tid}: {exc}") from None
        if message is not None:
            self._inbox.append(message)
            self._readable.set()

    def ended(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
        self._readable.set()
        self._credit.wake()
