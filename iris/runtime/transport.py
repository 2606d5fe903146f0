"""Where a runtime's byte streams come from: real TCP, or an in-process memory network.

The memory network lets tests and `iris.testing` run many real runtimes (handshake, sealed
frames, the whole protocol) in one trio process without sockets, and without port numbers
running out.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from overlay.link_policy import LinkPolicy

Handler = Callable[[trio.abc.Stream], Awaitable[None]]


class TcpTransport:
    async def listen(self, nursery: trio.Nursery, host: str, port: int, handler: Handler) -> int:
        listeners = await trio.open_tcp_listeners(port, host=host)
        nursery.start_soon(trio.serve_listeners, handler, listeners)
        bound: int = listeners[0].socket.getsockname()[1]  # the port chosen when `port` is 0
        return bound

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        return await trio.open_tcp_stream(host, port)


def tune(stream: trio.abc.Stream, policy: LinkPolicy) -> None:
    """Give a TCP connection the policy's keep-alive and user timeout, where the OS has them (a
    memory stream has nothing to tune; an option the OS refuses is left as it was: the
    overlay's heartbeats are the portable keep-alive)."""
    if not isinstance(stream, trio.SocketStream):
        return
    sock = stream.socket
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", round(policy.keepalive_idle_s)),
                        ("TCP_KEEPINTVL", round(policy.keepalive_interval_s)),
                        ("TCP_KEEPCNT", policy.keepalive_count),
                        ("TCP_USER_TIMEOUT", round(policy.user_timeout_s * 1000))):
        option = getattr(socket, name, None)
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    for level, option, value in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


class MemoryNetwork:
    """A shared switchboard of listeners; each connection is a pair of memory streams."""

    def __init__(self) -> None:
        self.listeners: dict[tuple[str, int], tuple[trio.Nursery, Handler]] = {}
        self._next_port = 10_000

    def transport(self) -> MemoryTransport:
        return MemoryTransport(self)


class MemoryTransport:
    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network

    async def listen(self, nursery: trio.Nursery, host: str, port: int, handler: Handler) -> int:
        if port == 0:
            self.network._next_port += 1
            port = self.network._next_port
        if (host, port) in self.network.listeners:
            raise OSError(f"address {host}:{port} in use")
        self.network.listeners[(host, port)] = (nursery, handler)
        return port

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        entry = self.network.listeners.get((host, port))
        if entry is None:
            raise OSError(f"connection to {host}:{port} refused")
        nursery, handler = entry
        client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(_serve_one, handler, server)
        return client

    def close_listener(self, host: str, port: int) -> None:
        self.network.listeners.pop((host, port), None)


async def _serve_one(handler: Handler, stream: Any) -> None:
    try:
        await handler(stream)
    finally:
        await trio.aclose_forcefully(stream)
