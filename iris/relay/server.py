"""The relay: programs in any language use a node through a local TCP connection.

Each connection speaks the relay protocol (`iris.relay.protocol`). A connection that names a
cluster in its Init is one member of it: several connections may register the same cluster on
one node, requests are spread over them in turn and each gets every broadcast. When a client
goes away, its registration, subscriptions, pending requests and tunnels go with it at once,
and a connection that fails in any way fails alone.

Requests, broadcasts and events pass through the API's plain-function forms (no task per
message), and the sockets are read and written directly (`iris.runtime.eager_io`): what one
read of a client causes leaves in one write to each connection concerned.

Tunnels: the node keeps one overlay tunnel per relay tunnel and moves whole messages between
them; toward the client it sends chunks of at most 64 KiB (the first carries the message size,
later ones 0) within the credit the client grants, and it grants the client credit as the
messages the client sent go out on the overlay tunnel. A client that breaks the credit or size
rules is cut off with the reason.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from iris.core.limits import TopicLimits
from iris.core.tunnel_flow import (
    CHUNK,
    WINDOW,
    MessageAssembler,
    ReceiveCredit,
    TunnelProtocolError,
)
from iris.errors import ClosedError, IrisError, LimitExceededError, TimeoutError
from iris.relay import protocol as rp
from iris.relay.client import STATUS_CLUSTER
from iris.relay.tunnel import CreditWait
from iris.runtime.eager_io import EagerReader, Flusher, Outbox
from iris.runtime.node import Node, Registration, Responder, Tunnel

log = logging.getLogger("iris.relay.server")

DEFAULT_PORT = 55555
MAX_OUT_BYTES = 64 * 1024 * 1024  # queued for one client; beyond, it is too slow: closed
MAX_CLIENT_REQUESTS = 10_000  # a client's requests in flight
SERVE_TIMEOUT_S = 60.0  # how long a member client may take to answer a request
TUNNEL_CONFIRM_TIMEOUT_S = 10.0
JOIN_TIMEOUT_S = 10.0  # a member's Init waits this long for its registration to be grafted
MAX_TUNNEL_MESSAGE = 16 * 1024 * 1024  # one tunnel message from a client, assembled here
MAX_CLIENT_TUNNEL_BYTES = 64 * 1024 * 1024  # a client's tunnel data waiting for the overlay
MAX_CLIENT_TUNNELS = 1024  # a client's tunnels, open or opening
MAX_CLIENT_TOPICS = 1024  # a client's subscriptions


class _Members:
    """Every connection registered for one cluster on this node; requests go round robin.
    Requests and broadcasts are passed on from the node's own processing (no task each)."""

    def __init__(self) -> None:
        self.connections: list[RelayConnection] = []
        self.joining = 0  # connections registering the cluster (not members yet)
        self._turn = 0

    def _next(self) -> RelayConnection:
        """The next connection in turn (there is one: callers check)."""
        self._turn = (self._turn + 1) % len(self.connections)
        return self.connections[self._turn]

    def accept_request(self, data: bytes, responder: Responder) -> None:
        if self.connections:
            self._next().serve_request(data, responder)
        else:
            responder.fail("no relay client serves this cluster any more")

    def accept_broadcast(self, data: bytes) -> None:
        # The core hands one copy per registration: each connection gets one.
        if self.connections:
            self._next().send(rp.broadcast_packet(data))

    async def handle_tunnel(self, tunnel: Tunnel) -> None:
        if self.connections:  # else the handler returns: the tunnel closes
            await self._next().accept_tunnel(tunnel)


class _RelayTunnel:
    """One tunnel between a relay client and the overlay."""

    def __init__(self, conn: RelayConnection, tid: int, tunnel: Tunnel) -> None:
        self.conn, self.tid, self.tunnel = conn, tid, tunnel
        self.credit = CreditWait()  # what the client lets us send it
        self.received = ReceiveCredit(0)  # what we let the client send us
        self.inbound: deque[bytes] = deque()  # whole messages from the client, to send on
        self.inbound_ready = trio.Event()
        self.assembler = MessageAssembler()

    def grant(self, nbytes: int) -> None:
        """Let the client send `nbytes` more."""
        self.received.grant(nbytes)
        self.conn.send(rp.tun_allow_packet(self.tid, nbytes))

    def transfer(self, size: int, chunk: bytes) -> None:
        """A chunk from the client; a whole message goes to the overlay tunnel in order. A
        client that sends beyond its credit or its chunk limit is cut off: what waits here
        for the overlay tunnel stays within the window and one message."""
        if len(chunk) > CHUNK:
            raise rp.RelayError(
                f"tunnel chunk of {len(chunk)} bytes exceeds the chunk limit {CHUNK}")
        first = size != 0 and not self.assembler.inside_message
        try:
            if first:
                if size > MAX_TUNNEL_MESSAGE:
                    raise rp.RelayError(
                        f"tunnel message of {size} bytes exceeds {MAX_TUNNEL_MESSAGE}")
                self.received.started(len(chunk), size)
            self.conn.tunnel_bytes += len(chunk)
            if self.conn.tunnel_bytes > MAX_CLIENT_TUNNEL_BYTES:
                raise rp.RelayError(
                    f"more than {MAX_CLIENT_TUNNEL_BYTES} bytes of tunnel data waiting")
            data = self.assembler.add(size != 0, size, chunk)
        except TunnelProtocolError as exc:
            raise rp.RelayError(f"tunnel {self.tid}: {exc}") from None
        if data is not None:
            try:
                # Straight onto the overlay tunnel while it has room (and nothing waits before).
                sent = not self.inbound and self.tunnel.send_nowait(data)
            except ClosedError:
                sent = False  # to_overlay finds out, and tells the client
            if sent:
                self.conn.tunnel_bytes -= len(data)
                self.conn.owe_credit(self, len(data))
            else:
                self.inbound.append(data)
                self.inbound_ready.set()

    async def to_overlay(self) -> None:
        """Sends on what `transfer` could not, once the overlay tunnel has room again."""
        while True:
            while not self.inbound:
                self.inbound_ready = trio.Event()
                await self.inbound_ready.wait()
            data = self.inbound.popleft()
            try:
                await self.tunnel.send(data)
            finally:
                self.conn.tunnel_bytes -= len(data)
            self.grant(len(data))  # the client may send more

    async def to_client(self) -> None:
        while True:
            try:
                data = await self.tunnel.receive()
            except ClosedError as exc:
                self.conn.send(rp.tun_close_packet(self.tid, str(exc)))
                return
            await self.credit.spend(min(len(data), CHUNK), len(data))
            self.conn.send(rp.tun_message_packets(self.tid, data, CHUNK))

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.to_overlay)
                await self.to_client()
                nursery.cancel_scope.cancel()
        except* (ClosedError, IrisError):  # (a nursery raises them as a group)
            self.conn.send(rp.tun_close_packet(self.tid, "tunnel closed"))
        finally:
            if self.conn.tunnels.get(self.tid) is self:
                del self.conn.tunnels[self.tid]
            self.conn.tunnel_bytes -= sum(map(len, self.inbound)) + self.assembler.pending
            self.inbound.clear()
            self.assembler = MessageAssembler()
            with trio.CancelScope(shield=True):
                await self.tunnel.close()


class _Subscribers:
    """The connections subscribed to one topic: each event is queued to every one of them at
    once (each connection's queue is bounded; a client that falls behind is closed)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.connections: set[RelayConnection] = set()

    def accept_event(self, event: bytes) -> None:
        packet = rp.publish_packet(self.topic, event)
        for conn in list(self.connections):
            conn.send(packet)


class RelayServer:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.members: dict[str, _Members] = {}
        self.topics: dict[str, _Subscribers] = {}
        self.connections: set[RelayConnection] = set()
        self.flusher = Flusher()
        self.port = 0
        self.counters: dict[str, int] = {}  # shown by `iris status` under "relay"

    def count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    async def serve(self, port: int = DEFAULT_PORT, hosts: tuple[str, ...] = ("127.0.0.1", "::1"),
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = []
        for host in hosts:
            try:
                listeners += await trio.open_tcp_listeners(port, host=host)
            except OSError as exc:
                log.info("relay: cannot listen on [%s]:%d: %s", host, port, exc)
            if listeners and port == 0:
                port = listeners[0].socket.getsockname()[1]
        if not listeners:
            raise OSError(f"relay: could not listen on port {port}")
        self.port = listeners[0].socket.getsockname()[1]
        log.info("relay listening on port %d", self.port)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._expire_requests)
            nursery.start_soon(self.flusher.run)
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    async def _expire_requests(self) -> None:
        """Fail the requests member clients did not answer within SERVE_TIMEOUT_S (their
        caller has given up by then; this frees the service's concurrency slot)."""
        while True:
            await trio.sleep(1.0)
            now = trio.current_time()
            for conn in list(self.connections):
                conn.expire_requests(now)

    async def _handle(self, stream: trio.SocketStream) -> None:
        conn = RelayConnection(self, stream)
        self.connections.add(conn)
        self.count("connections")
        try:
            await conn.run()
        except Exception:  # one connection's failure never ends the relay
            log.exception("relay connection failed")
            self.count("connections_failed")
        finally:
            self.connections.discard(conn)
            await conn.cleanup()


class RelayConnection:
    def __init__(self, server: RelayServer, stream: trio.abc.Stream) -> None:
        self.server = server
        self.node = server.node
        self.stream = stream
        self.outbox = Outbox(stream, server.flusher, MAX_OUT_BYTES)
        self.closing = False
        self.cluster = ""
        self.registration: Registration | None = None
        self.topics: set[str] = set()
        self.serving: dict[int, tuple[float, Responder]] = {}  # request id -> (deadline, responder)
        self.asking = 0  # this client's requests in flight
        self.tunnels: dict[int, _RelayTunnel] = {}  # by the client's tunnel id
        self.building: dict[int, list[Any]] = {}  # build id -> [event, _RelayTunnel, Tunnel]
        self.opening: set[int] = set()  # ids of the client's TunInits not answered yet
        self.tunnel_bytes = 0  # from the client, not yet on the overlay (all its tunnels)
        self.owed: dict[_RelayTunnel, int] = {}  # credit to return to the client after this read
        self._next_id = 0
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------------------- writing
    def send(self, packet: bytes) -> None:
        if self.closing:
            return
        if not self.outbox.push(packet):
            log.warning("relay client too slow (%d bytes queued): closing",
                        self.outbox.queued_bytes)
            self.server.count("clients_too_slow")
            self.close("client too slow")

    def cut_off(self, reason: str, deny: bool = False) -> None:
        """The client broke the protocol: Deny (before Init) or Close with the reason."""
        if not self.closing:
            self.server.count("clients_cut_off")
        self.close(reason, deny)

    def close(self, reason: str, deny: bool = False) -> None:
        if self.closing:
            return
        self.closing = True
        self.outbox.finish(rp.deny_packet(reason) if deny else rp.close_packet(reason))

    # ------------------------------------------------------------------------- reading
    async def run(self) -> None:
        reader = rp.RelayReader()
        incoming = EagerReader(self.stream)
        poke = self.node.busy_poll.poke
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                writer_done = trio.Event()

                async def write() -> None:
                    try:
                        await self.outbox.run_writer()
                    finally:
                        writer_done.set()
                        nursery.cancel_scope.cancel()

                nursery.start_soon(write)
                initialised = False
                while not self.closing:
                    data = await incoming.receive()
                    poke()
                    if not data:
                        if reader.pending:
                            log.info("relay client left in the middle of a packet")
                        break
                    with self.server.flusher.batch():  # what this read causes goes out in one write
                        for packet in reader.feed(data):
                            if not initialised:
                                initialised = await self._init(packet)
                                if not initialised:
                                    break
                            else:
                                await self._dispatch(packet)
                            if self.closing:
                                break
                        if self.owed:
                            self._return_credit()
                    if reader.error is not None and not self.closing:
                        log.warning("relay client broke the protocol: %s", reader.error)
                        self.cut_off(str(reader.error), deny=not initialised)
                with trio.move_on_after(1.0):
                    if not self.closing:
                        self.closing = True
                        self.outbox.finish()
                    await writer_done.wait()
                nursery.cancel_scope.cancel()
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away (reset, broken pipe): its state is cleaned up next
        finally:
            self.closing = True  # nothing more is queued for a closed stream
            await trio.aclose_forcefully(self.stream)

    async def _init(self, packet: object) -> bool:
        if not isinstance(packet, rp.Init):
            self.cut_off("expected Init", deny=True)
            return False
        if packet.magic != rp.CLIENT_MAGIC:
            self.cut_off(f"bad magic {packet.magic!r}", deny=True)
            return False
        if packet.version != rp.VERSION:
            self.cut_off(f"protocol version {packet.version!r} not supported (need {rp.VERSION})",
                         deny=True)
            return False
        if packet.cluster:
            members = self.server.members.setdefault(packet.cluster, _Members())
            members.joining += 1  # keeps `members` in place while this one registers
            try:
                with trio.move_on_after(JOIN_TIMEOUT_S):
                    self.registration = await self.node.register(packet.cluster, members)
            finally:
                members.joining -= 1
            if self.registration is None:  # (register left no membership behind)
                if not members.connections and not members.joining:
                    del self.server.members[packet.cluster]
                self.cut_off(f"could not join cluster {packet.cluster!r} within "
                             f"{JOIN_TIMEOUT_S:g} s", deny=True)
                return False
            self.cluster = packet.cluster
            self.send(rp.init_packet())
            # Only now a member: no request may reach the client before its Init answer.
            members.connections.append(self)
        else:
            self.send(rp.init_packet())
        return True

    async def _room(self) -> None:
        """Wait while the node's links are congested (what this read produced goes out first)."""
        if self.node.congested:
            self.server.flusher.flush()
            await self.node.wait_for_room()

    async def _pass_on(self, call: Awaitable[None]) -> None:
        """A broadcast or publish: the protocol has no answer for them, so one the node refuses
        (over its size limit) cuts the client off with the reason."""
        try:
            await call
        except LimitExceededError as exc:
            self.cut_off(str(exc))

    def owe_credit(self, relay_tunnel: _RelayTunnel, nbytes: int) -> None:
        """`nbytes` the client sent on this tunnel went out: credit it gets back after the read
        (one TunAllow per tunnel per read, not one per message)."""
        self.owed[relay_tunnel] = self.owed.get(relay_tunnel, 0) + nbytes

    def _return_credit(self) -> None:
        owed, self.owed = self.owed, {}
        for relay_tunnel, nbytes in owed.items():
            if self.tunnels.get(relay_tunnel.tid) is relay_tunnel:
                relay_tunnel.grant(nbytes)

    async def _dispatch(self, packet: rp.ClientPacket) -> None:
        await _CLIENT_PACKETS[type(packet)](self, packet)

    async def _on_close(self, packet: rp.Close) -> None:
        self.close("")

    async def _on_broadcast(self, packet: rp.Broadcast) -> None:
        await self._room()
        await self._pass_on(self.node.broadcast(packet.cluster, packet.message))

    async def _on_reply(self, packet: rp.Reply) -> None:
        entry = self.serving.pop(packet.id, None)
        if entry is not None:  # a reply to a request we no longer wait for is dropped
            if packet.success:
                entry[1].reply(packet.reply)
            else:
                entry[1].fail(packet.fault)

    async def _on_subscribe(self, packet: rp.Subscribe) -> None:
        await self._subscribe(packet.topic)

    async def _on_unsubscribe(self, packet: rp.Unsubscribe) -> None:
        await self._unsubscribe(packet.topic)

    async def _on_publish(self, packet: rp.Publish) -> None:
        await self._room()
        await self._pass_on(self.node.publish(packet.topic, packet.event))

    async def _on_tun_init(self, packet: rp.TunInit) -> None:
        if self._tunnel_id_taken(packet.id):
            return
        if len(self.tunnels) + len(self.opening) >= MAX_CLIENT_TUNNELS:
            self.send(rp.tun_confirm_packet(packet.id, True))  # refused, as if timed out
            return
        self.opening.add(packet.id)
        assert self._nursery is not None
        self._nursery.start_soon(self._open_tunnel, packet)

    async def _on_tun_confirm(self, packet: rp.TunConfirm) -> None:
        slot = self.building.get(packet.build_id)
        if slot is not None and slot[1] is None and not self._tunnel_id_taken(packet.tunnel_id):
            # Registered now: the client's TunAllow/TunTransfer may follow in the same read.
            slot[1] = self.tunnels[packet.tunnel_id] = _RelayTunnel(self, packet.tunnel_id,
                                                                    slot[2])
            slot[0].set()

    async def _on_tun_allow(self, packet: rp.TunAllow) -> None:
        relay_tunnel = self.tunnels.get(packet.tunnel_id)
        if relay_tunnel is not None:
            relay_tunnel.credit.grant(packet.space)
        else:  # a tunnel that closed meanwhile (or never was): nothing to do
            self.server.count("tunnel_packets_for_unknown_ids")

    async def _on_tun_transfer(self, packet: rp.TunTransfer) -> None:
        relay_tunnel = self.tunnels.get(packet.tunnel_id)
        if relay_tunnel is not None:
            try:
                relay_tunnel.transfer(packet.size, packet.chunk)
            except rp.RelayError as exc:
                self.cut_off(str(exc))
        else:
            self.server.count("tunnel_packets_for_unknown_ids")

    async def _on_tun_close(self, packet: rp.TunClose) -> None:
        relay_tunnel = self.tunnels.pop(packet.tunnel_id, None)
        if relay_tunnel is not None:
            await relay_tunnel.tunnel.close()

    async def _on_second_init(self, packet: rp.Init) -> None:
        """An Init after the first changes nothing: the connection's role is set."""

    def _tunnel_id_taken(self, tid: int) -> bool:
        """A client's tunnel ids name one tunnel at a time; reusing a live one is cut off."""
        if tid in self.tunnels or tid in self.opening:
            self.cut_off(f"tunnel id {tid} is already in use")
            return True
        return False

    async def _open_tunnel(self, packet: rp.TunInit) -> None:
        """The client opens a tunnel to a cluster."""
        try:
            timeout = max(packet.timeout_ms, 1) / 1000
            tunnel = await self.node.tunnel(packet.cluster, timeout=timeout)
        except IrisError:
            self.send(rp.tun_confirm_packet(packet.id, True))
            return
        finally:
            self.opening.discard(packet.id)
        relay_tunnel = self.tunnels[packet.id] = _RelayTunnel(self, packet.id, tunnel)
        self.send(rp.tun_confirm_packet(packet.id, False, CHUNK))
        relay_tunnel.grant(WINDOW)
        await relay_tunnel.run()

    async def accept_tunnel(self, tunnel: Tunnel) -> None:
        """A tunnel reached this member client: ask it for a tunnel id, then carry it."""
        self._next_id += 1
        build_id = self._next_id
        slot = self.building[build_id] = [trio.Event(), None, tunnel]  # [1]: the _RelayTunnel
        self.send(rp.tun_init_packet(build_id, CHUNK))
        try:
            with trio.move_on_after(TUNNEL_CONFIRM_TIMEOUT_S):
                await slot[0].wait()
        finally:
            self.building.pop(build_id, None)
        relay_tunnel = slot[1]
        if relay_tunnel is None:
            return  # the handler returns: the tunnel closes
        if self.closing:
            self.tunnels.pop(relay_tunnel.tid, None)
            return
        relay_tunnel.grant(WINDOW)
        await relay_tunnel.run()

    async def _ask(self, packet: rp.Request) -> None:
        """A client's request: sent into the overlay; the answer is written when it comes."""
        if packet.cluster == STATUS_CLUSTER:  # the node's own view, answered here
            relay = {"clients": len(self.server.connections), **self.server.counters}
            status = {**self.node.status(), "relay": relay}
            self.send(rp.reply_packet(packet.id, False, True, json.dumps(status).encode()))
            return
        if self.asking >= MAX_CLIENT_REQUESTS:
            self.send(rp.reply_packet(packet.id, False, False, fault="too many requests in flight"))
            return
        await self._room()
        rid = packet.id

        def answered(reply: bytes | None, error: IrisError | None) -> None:
            self.asking -= 1
            if error is None:
                self.send(rp.reply_packet(rid, False, True, reply or b""))
            elif isinstance(error, TimeoutError):
                self.send(rp.reply_packet(rid, True))
            else:
                self.send(rp.reply_packet(rid, False, False, fault=str(error)))

        self.asking += 1
        try:
            self.node.start_request(packet.cluster, packet.request,
                                    max(packet.timeout_ms, 1) / 1000, answered)
        except IrisError as exc:
            answered(None, exc)

    def serve_request(self, data: bytes, responder: Responder) -> None:
        """Hand a request to this client; its Reply packet answers it."""
        if self.closing:
            responder.fail("relay client left")
            return
        self._next_id += 1
        rid = self._next_id
        self.serving[rid] = (trio.current_time() + SERVE_TIMEOUT_S, responder)
        self.send(rp.request_packet(rid, data, int(SERVE_TIMEOUT_S * 1000)))

    def expire_requests(self, now: float) -> None:
        """Fail the requests this client did not answer in time (they are in deadline order)."""
        serving = self.serving
        while serving:
            rid, (deadline, responder) = next(iter(serving.items()))
            if deadline > now:
                return
            del serving[rid]
            responder.fail("relay client did not answer in time")

    async def _subscribe(self, topic: str) -> None:
        if topic in self.topics:
            return
        if len(self.topics) >= MAX_CLIENT_TOPICS:
            self.cut_off(f"more than {MAX_CLIENT_TOPICS} subscriptions")
            return
        self.topics.add(topic)
        subscribers = self.server.topics.get(topic)
        if subscribers is None:
            subscribers = self.server.topics[topic] = _Subscribers(topic)
            subscribers.connections.add(self)
            self.server.flusher.flush()  # joining the topic's tree takes a while
            await self.node.subscribe(topic, subscribers, limits=TopicLimits())
        else:
            subscribers.connections.add(self)

    async def _unsubscribe(self, topic: str) -> None:
        if topic not in self.topics:
            return
        self.topics.discard(topic)
        subscribers = self.server.topics.get(topic)
        if subscribers is not None:
            subscribers.connections.discard(self)
            if not subscribers.connections:
                del self.server.topics[topic]
                await self.node.unsubscribe(topic)

    async def cleanup(self) -> None:
        """The client is gone: its membership, subscriptions and waiting requests go too."""
        self.closing = True
        serving, self.serving = self.serving, {}
        for _, responder in serving.values():
            responder.fail("relay client left")
        for slot in self.building.values():
            slot[0].set()
        with trio.CancelScope(shield=True):
            for relay_tunnel in list(self.tunnels.values()):
                await relay_tunnel.tunnel.close()
        if self.cluster:
            members = self.server.members.get(self.cluster)
            if members is not None and self in members.connections:
                members.connections.remove(self)
                if not members.connections and not members.joining:
                    del self.server.members[self.cluster]
            if self.registration is not None:
                with trio.CancelScope(shield=True):
                    await self.registration.unregister()
        with trio.CancelScope(shield=True):
            for topic in list(self.topics):
                await self._unsubscribe(topic)


_CLIENT_PACKETS: dict[type, Callable[[RelayConnection, Any], Awaitable[None]]] = {
    rp.Init: RelayConnection._on_second_init,
    rp.Close: RelayConnection._on_close,
    rp.Broadcast: RelayConnection._on_broadcast,
    rp.Request: RelayConnection._ask,
    rp.Reply: RelayConnection._on_reply,
    rp.Subscribe: RelayConnection._on_subscribe,
    rp.Unsubscribe: RelayConnection._on_unsubscribe,
    rp.Publish: RelayConnection._on_publish,
    rp.TunInit: RelayConnection._on_tun_init,
    rp.TunConfirm: RelayConnection._on_tun_confirm,
    rp.TunAllow: RelayConnection._on_tun_allow,
    rp.TunTransfer: RelayConnection._on_tun_transfer,
    rp.TunClose: RelayConnection._on_tun_close,
}
"""What the node does with each packet of an initialised client."""
