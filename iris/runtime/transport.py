"""Where a runtime's byte streams come from: real TCP, or an in-process memory network.

The memory network lets tests and `iris.testing` run many real runtimes (handshake, sealed
frames, the whole protocol) in one trio process without sockets, and without port numbers
running out.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio
import trio.testing

from overlay.link_policy import LinkPolicy

Handler = Callable[[trio.abc.Stream], Awaitable[None]]
Address = tuple[str, int]


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
    """A shared switchboard of listeners; each connection is a pair of memory streams.

    It can be partitioned like a real network (`partition`, `heal`): bytes between addresses
    of different groups stall in their connection (as unacknowledged TCP data does, and are
    delivered at the heal unless the connection was closed meanwhile), and a dial across the
    cut gets no answer (as a dropped SYN: the dialer's own timeout ends it)."""

    def __init__(self) -> None:
        self.listeners: dict[Address, tuple[trio.Nursery, Handler]] = {}
        self._next_port = 10_000
        self._group_of: dict[Address, int] | None = None  # while partitioned
        self._wires: set[_Wire] = set()  # one-way wires whose bytes are stalled

    def transport(self) -> MemoryTransport:
        return MemoryTransport(self)

    def partition(self, groups: Iterable[Iterable[Address]]) -> None:
        """Cut the network between the groups of addresses (an address in no group is cut off
        from all of them); links inside a group go on."""
        self._group_of = {address: i for i, group in enumerate(groups) for address in group}

    def heal(self) -> None:
        """Everything reaches everything again; stalled bytes move on."""
        self._group_of = None
        wires, self._wires = self._wires, set()
        for wire in wires:
            with contextlib.suppress(trio.BrokenResourceError):  # its reader is gone
                wire.pump()

    def cut(self, a: Address, b: Address) -> bool:
        groups = self._group_of
        if groups is None:
            return False
        group = groups.get(a)
        return group is None or group != groups.get(b)

    def stalled(self, wire: _Wire) -> None:
        self._wires.add(wire)


class _Wire:
    """One direction of a memory connection: a send stream whose bytes move to the receive
    stream at once, unless the network is cut between the two ends."""

    def __init__(self, network: MemoryNetwork, src: Address, dst: Address) -> None:
        self.network, self.src, self.dst = network, src, dst
        self.send = trio.testing.MemorySendStream(send_all_hook=self._sent,
                                                  close_hook=self._moved)
        self.receive = trio.testing.MemoryReceiveStream()

    async def _sent(self) -> None:
        self._moved()

    def _moved(self) -> None:
        """Bytes (or the end of the stream) to move: now, or at the heal."""
        if self.network.cut(self.src, self.dst):
            self.network.stalled(self)
        else:
            self.pump()

    def pump(self) -> None:
        trio.testing.memory_stream_pump(self.send, self.receive)


def _connection(network: MemoryNetwork, a: Address, b: Address
                ) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """Both ends of a connection from `a` to `b`."""
    there, back = _Wire(network, a, b), _Wire(network, b, a)
    return (trio.StapledStream(there.send, back.receive),
            trio.StapledStream(back.send, there.receive))


class MemoryTransport:
    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network
        self.address: Address = ("", 0)  # where this node listens, once it does

    async def listen(self, nursery: trio.Nursery, host: str, port: int, handler: Handler) -> int:
        if port == 0:
            self.network._next_port += 1
            port = self.network._next_port
        if (host, port) in self.network.listeners:
            raise OSError(f"address {host}:{port} in use")
        self.network.listeners[(host, port)] = (nursery, handler)
        self.address = (host, port)
        return port

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        entry = self.network.listeners.get((host, port))
        if entry is None:
            raise OSError(f"connection to {host}:{port} refused")
        if self.network.cut(self.address, (host, port)):
            await trio.sleep_forever()  # no answer across a cut: the dialer's timeout ends it
        nursery, handler = entry
        client, server = _connection(self.network, self.address, (host, port))
        nursery.start_soon(_serve_one, handler, server)
        return client

    def close_listener(self, host: str, port: int) -> None:
        self.network.listeners.pop((host, port), None)


async def _serve_one(handler: Handler, stream: Any) -> None:
    try:
        await handler(stream)
    finally:
        await trio.aclose_forcefully(stream)
