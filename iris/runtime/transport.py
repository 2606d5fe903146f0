"""Where a runtime's byte streams come from: real TCP, or an in-process memory network.

The memory network lets tests and `iris.testing` run many real runtimes (handshake, sealed
frames, the whole protocol) in one trio process without sockets, and without port numbers
running out.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import random
import socket
import struct
import termios
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

import trio

from iris.runtime.accept import serve_listeners
from iris.runtime.log_limit import LogLimit
from iris.runtime.pause import Spawner
from overlay.link_policy import LinkPolicy

log = logging.getLogger("iris.runtime.transport")

Handler = Callable[[trio.abc.Stream], Awaitable[None]]
Address = tuple[str, int]


class TcpTransport:
    def __init__(self) -> None:
        self.warnings = LogLimit(log)  # (when the process is out of descriptors)

    async def listen(self, nursery: Spawner, host: str, port: int, handler: Handler) -> int:
        listeners = await trio.open_tcp_listeners(port, host=host)
        nursery.start_soon(serve_listeners, handler, listeners, self.warnings)
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


def unacknowledged(sock: Any) -> int:
    """Bytes written to a TCP socket that its peer has not acknowledged (SIOCOUTQ, which is
    TIOCOUTQ on Linux); 0 for no socket, or where the OS does not tell (another system's
    TIOCOUTQ is for terminals only)."""
    request = getattr(termios, "TIOCOUTQ", None)
    if sock is None or request is None:
        return 0
    try:
        return int(struct.unpack("i", fcntl.ioctl(sock.fileno(), request, b"\0" * 4))[0])
    except OSError:
        return 0


def stalled(sock: Any) -> bool:
    """Whether a TCP socket holds bytes (`unacknowledged`) its peer has not acknowledged for
    longer than a retransmission timeout: TCP_INFO's backoff counts the timeouts since the peer
    last acknowledged new data (retransmissions across a cut, probes of a shut window). Bytes
    merely in flight are no stall: on a live link a delayed acknowledgement leaves some there
    for up to 40 ms after each write. Where the OS has no TCP_INFO, any bytes held count."""
    if unacknowledged(sock) == 0:
        return False
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return True
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, 8)
    except OSError:
        return True
    return bool(info[4])  # tcpi_backoff: after tcpi_state, _ca_state, _retransmits, _probes


def abort_on_close(sock: Any) -> None:
    """Make closing a TCP socket an abort (SO_LINGER on, 0 s): it sends RST and discards what
    its send buffer holds, where an orderly close would still deliver it. No socket, or an
    option the OS refuses: left as it is."""
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


RTO_MIN_S = 0.2  # Linux's floor on TCP's retransmission timeout
MSS = 1448  # bytes of a TCP segment on Ethernet (1500, less the IP and TCP headers)


class MemoryNetwork:
    """A shared switchboard of listeners; each connection is a pair of one-way wires.

    It can be partitioned like a real network (`partition`, `heal`): bytes between addresses
    of different groups stall in their connection (as unacknowledged TCP data does, and are
    delivered at the heal unless the connection was closed meanwhile), and a dial across the
    cut gets no answer (as a dropped SYN: the dialer's own timeout ends it). Its links can be
    slowed (`degrade`): delay, and loss as TCP shows it to the application."""

    def __init__(self) -> None:
        self.listeners: dict[Address, tuple[Spawner, Handler]] = {}
        self._next_port = 10_000
        self._group_of: dict[Address, int] | None = None  # while partitioned
        self._wires: set[_Wire] = set()  # one-way wires whose bytes are stalled
        self._degraded: list[_Degradation] = []  # the latest that applies to a wire counts

    def transport(self) -> MemoryTransport:
        return MemoryTransport(self)

    def partition(self, groups: Iterable[Iterable[Address]]) -> None:
        """Cut the network between the groups of addresses (an address in no group is cut off
        from all of them); links inside a group go on."""
        self._group_of = {address: i for i, group in enumerate(groups) for address in group}

    def degrade(self, delay: float = 0.0, loss: float = 0.0,
                between: tuple[Iterable[Address], Iterable[Address]] | None = None,
                seed: int | None = None) -> None:
        """Slow the links between the two groups of addresses (both ways), or every link:
        each write arrives `delay` seconds after it was written, and with probability `loss`
        each of its TCP segments is lost and sent again after TCP's retransmission timeout
        (the round trip plus RTO_MIN_S, as Linux computes it on a steady link; doubled for
        each further loss of the same segment). Bytes arrive in the order written: a late
        write holds back those after it, as TCP's in-order delivery does, so the application
        sees only latency, never missing or corrupt data. `seed` makes the losses drawn for a
        given sequence of writes reproducible (the order of writes across tasks still varies
        from run to run). This replaces what earlier calls set for the same links, and lasts
        until `heal`.

        Not modelled: fast retransmit (on a busy connection TCP recovers a loss in about a
        round trip, not a timeout), the congestion window (throughput after a loss), bandwidth,
        jitter, lost SYNs (dials are instant), and a sender's buffer filling up."""
        if delay < 0 or not 0 <= loss < 1:
            raise ValueError("delay must be >= 0 s and loss in [0, 1)")
        ends = None if between is None else (frozenset(between[0]), frozenset(between[1]))
        self._degraded = [d for d in self._degraded if d.ends != ends]
        self._degraded.append(_Degradation(ends, delay, loss, random.Random(seed)))

    def heal(self) -> None:
        """Everything reaches everything again, undelayed; stalled bytes move on."""
        self._group_of = None
        self._degraded = []
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

    def arrival(self, src: Address, dst: Address, nbytes: int) -> float:
        """When `nbytes` written now from `src` to `dst` arrive (not counting earlier bytes
        they must wait for)."""
        now = trio.current_time()
        for degradation in reversed(self._degraded):
            if degradation.applies(src, dst):
                return now + degradation.transit(nbytes)
        return now


class _Degradation(NamedTuple):
    """What `MemoryNetwork.degrade` set for the links between two groups (None: all)."""

    ends: tuple[frozenset[Address], frozenset[Address]] | None
    delay: float
    loss: float
    rng: random.Random

    def applies(self, src: Address, dst: Address) -> bool:
        if self.ends is None:
            return True
        a, b = self.ends
        return (src in a and dst in b) or (src in b and dst in a)

    def transit(self, nbytes: int) -> float:
        """How long a write of `nbytes` takes to arrive whole: the delay, and the
        retransmissions of the segment of it that was lost the longest."""
        late = 0.0
        if self.loss:
            first_timeout = 2 * self.delay + RTO_MIN_S
            for _ in range(max(1, -(-nbytes // MSS))):  # the end of a stream is a segment too
                waited, timeout = 0.0, first_timeout
                while self.rng.random() < self.loss:
                    waited += timeout
                    timeout *= 2
                late = max(late, waited)
        return self.delay + late


class _Inbox(trio.abc.ReceiveStream):
    """The receiving end of a wire: what was written, each piece handed out once it has
    arrived and in the order written (a late piece holds back the ones after it). Unbounded,
    like a receive buffer that never fills: a reader that does not read (a paused node) only
    lets its backlog grow."""

    def __init__(self) -> None:
        self._pieces: deque[tuple[float, bytes]] = deque()  # (arrives at, data); b"": the end
        self._last = -math.inf  # when the latest piece arrives
        self._moved = trio.lowlevel.ParkingLot()
        self._closed = False

    def put(self, data: bytes, at: float) -> None:
        """Add `data` (b"": the end of the stream) arriving at `at`, or after what came
        before it. Data for a closed end breaks the sender's write."""
        if self._closed:
            if data:
                raise trio.BrokenResourceError("the receiving end was closed")
            return
        self._last = max(at, self._last)
        self._pieces.append((self._last, data))
        self._moved.unpark_all()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        while True:
            if self._closed:
                raise trio.ClosedResourceError("the stream was closed")
            pieces = self._pieces
            arrives = pieces[0][0] if pieces else math.inf
            if arrives <= trio.current_time():
                return self._take(max_bytes)
            with trio.move_on_at(arrives):
                await self._moved.park()

    def _take(self, max_bytes: int | None) -> bytes:
        """The data that has arrived, up to `max_bytes`; b"" at the end of the stream."""
        pieces, now = self._pieces, trio.current_time()
        data = bytearray()
        while pieces and pieces[0][1] and pieces[0][0] <= now:
            at, piece = pieces.popleft()
            if max_bytes is not None and len(data) + len(piece) > max_bytes:
                room = max_bytes - len(data)
                pieces.appendleft((at, piece[room:]))
                data += piece[:room]
                break
            data += piece
        return bytes(data)

    async def aclose(self) -> None:
        self._closed = True
        self._pieces.clear()
        self._moved.unpark_all()
        await trio.lowlevel.checkpoint()


class _Wire:
    """One direction of a memory connection: a send stream whose bytes move to the receiving
    end at once (to arrive when the network's degradation says), unless the network is cut
    between the two ends."""

    def __init__(self, network: MemoryNetwork, src: Address, dst: Address) -> None:
        # (imported here: trio.testing imports pytest when it is installed, which costs every
        # program that imports iris, the `iris` command's start among them, a tenth of a second)
        from trio.testing import MemorySendStream

        self.network, self.src, self.dst = network, src, dst
        self.send = MemorySendStream(send_all_hook=self._sent, close_hook=self._moved)
        self.receive = _Inbox()

    async def _sent(self) -> None:
        self._moved()

    def _moved(self) -> None:
        """Bytes (or the end of the stream) to move: now, or at the heal."""
        if self.network.cut(self.src, self.dst):
            self.network.stalled(self)
        else:
            self.pump()

    def pump(self) -> None:
        """Move what was written, then the end of the stream if it was closed."""
        while True:
            try:
                data = bytes(self.send.get_data_nowait())
            except trio.WouldBlock:  # all moved, and the stream is open
                return
            self.receive.put(data, self.network.arrival(self.src, self.dst, len(data)))
            if not data:
                return


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

    async def listen(self, nursery: Spawner, host: str, port: int, handler: Handler) -> int:
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
