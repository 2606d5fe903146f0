"""The relay's trio side: programs in any language use a node through a local TCP connection.

Each connection speaks the relay protocol (`iris.relay.protocol`); every rule of it lives in the
connection's `RelaySession` (`iris.relay.session`), and this module only moves bytes and runs
the node calls the session asks for. A connection that names a cluster in its Init is one
member of it: several connections may register the same cluster on one node, requests are
spread over them in turn and each gets every broadcast. When a client goes away, its
registration, subscriptions, pending requests and tunnels go with it at once, and a connection
that fails in any way fails alone.

Requests, broadcasts and events pass through the API's plain-function forms (no task per
message), and the sockets are read and written directly (`iris.runtime.eager_io`): what one
read of a client causes leaves in one write to each connection concerned. A connection's
deadlines (its Init, a packet it left unfinished, a member's unanswered requests, unconfirmed
tunnels) wait behind one timer set for the earliest of them.

The node's own bounds are kept here, over all connections: how many it takes (`max_connections`)
and one memory budget for partly read packets and queued output (`memory`, `shed`); see
`Limits.memory_bytes` for the rules.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

import trio

from iris.core.limits import TopicLimits
from iris.errors import IrisError, LimitExceededError, TimeoutError
from iris.relay import commands as rc
from iris.relay import protocol as rp
from iris.relay import survey as relay_survey
from iris.relay.carrier import Carrier
from iris.relay.session import DEFAULT_LIMITS, Limits, RelaySession
from iris.runtime.accept import client_share, serve_listeners
from iris.runtime.backpressure import Backpressure
from iris.runtime.eager_io import EagerReader, Flusher, Outbox
from iris.runtime.log_limit import LogLimit
from iris.runtime.node import Node, Registration, Responder
from iris.runtime.survey import SurveyResult
from iris.runtime.tunnel import Tunnel

log = logging.getLogger("iris.relay.server")

DEFAULT_PORT = 55555


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
            self._next().broadcast(data)

    async def handle_tunnel(self, tunnel: Tunnel) -> None:
        if self.connections:  # else the handler returns: the tunnel closes
            await self._next().accept_tunnel(tunnel)


class _Subscribers:
    """The connections subscribed to one topic: each event is queued to every one of them at
    once (each connection's queue is bounded; a client that falls behind is closed)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.connections: set[RelayConnection] = set()

    def accept_event(self, event: bytes) -> None:
        packet = rp.Publish.pack(self.topic, event)
        for conn in list(self.connections):
            conn.send(packet)


class RelayServer:
    def __init__(self, node: Node, limits: Limits = DEFAULT_LIMITS,
                 warn_every_s: float = 10.0) -> None:
        self.node = node
        self.limits = limits  # each new connection's
        # Clients refused or cut off: any program may connect as often as it likes, so each
        # kind of warning about them is logged at most once per `warn_every_s`.
        self.warnings = LogLimit(log, warn_every_s)
        self.members: dict[str, _Members] = {}
        self.topics: dict[str, _Subscribers] = {}
        self.connections: set[RelayConnection] = set()
        # Connections that have not sent their Init yet, oldest first: at the connection
        # limit, the oldest of them makes room for a new one (idle connections cannot lock
        # clients out for their Init deadline).
        self.greeting: dict[RelayConnection, None] = {}
        self._client_share = client_share()  # (of the descriptors, when it starts serving)
        # Every connection's partly read packet and queued output, against limits.memory_bytes.
        self.memory = Backpressure(limits.memory_bytes // 2, limits.memory_bytes // 4)
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
        self._client_share = client_share()
        log.info("relay listening on port %d (at most %d clients)", self.port,
                 self.max_connections)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.flusher.run)
            await nursery.start(serve_listeners, self._handle, listeners, self.warnings,
                                self.count)
            task_status.started(self.port)

    @property
    def max_connections(self) -> int:
        return min(self.limits.max_connections, self._client_share)

    def shed(self) -> None:
        """Over the memory budget: the clients with the most output queued (the slowest
        readers) are closed until it is met again."""
        while self.memory.queued > self.limits.memory_bytes:
            slowest = max(self.connections, key=lambda conn: conn.outbox.queued_bytes,
                          default=None)
            if slowest is None or not slowest.outbox.queued_bytes:
                return  # (the rest is partly read packets: their reading waits)
            slowest.too_slow()

    def status(self) -> dict[str, Any]:
        """What `iris status` shows under "relay"."""
        return {"clients": len(self.connections), "max_clients": self.max_connections,
                "memory_bytes": self.memory.queued, **self.counters,
                "limits": asdict(self.limits)}

    async def _handle(self, stream: trio.SocketStream) -> None:
        if len(self.connections) >= self.max_connections and self.greeting:
            oldest = next(iter(self.greeting))
            del self.greeting[oldest]
            oldest.evict()
        elif len(self.connections) >= self.max_connections:
            self.count("connections_refused")
            self.warnings.warning("refused", "relay: %d connections already: refusing one",
                                  self.max_connections)
            await trio.aclose_forcefully(stream)
            return
        conn = RelayConnection(self, stream)
        self.connections.add(conn)
        self.greeting[conn] = None
        self.count("connections")
        try:
            await conn.run()
        except Exception:  # one connection's failure never ends the relay
            log.exception("relay connection failed")
            self.count("connections_failed")
        finally:
            self.connections.discard(conn)
            self.greeting.pop(conn, None)
            await conn.cleanup()


class RelayConnection:
    def __init__(self, server: RelayServer, stream: trio.abc.Stream) -> None:
        self.server = server
        self.node = server.node
        self.stream = stream
        self.session = RelaySession(server.limits, server.count, trio.current_time())
        self.outbox = Outbox(stream, server.flusher, server.limits.out_bytes, server.memory)
        self._partial = 0  # bytes of a packet read in part, counted in server.memory
        self.closing = False
        self.registration: Registration | None = None
        self.carriers: dict[int, Carrier] = {}  # by the client's tunnel id
        self.accepting: dict[Tunnel, trio.Event] = {}  # tunnels reaching this member, until done
        self._timer_at: float | None = None  # what the deadline timer waits for
        self._timer_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._applying = False  # a task is running the session's commands

    @property
    def cluster(self) -> str:
        return self.session.cluster

    # ------------------------------------------------------------------------- writing
    def send(self, packet: bytes) -> None:
        """A packet made outside the session (a topic's event, shared by its subscribers)."""
        if not self.closing and not self.outbox.push(packet):
            self.too_slow()
        if self.server.memory.queued > self.server.limits.memory_bytes:
            self.server.shed()

    def write_out(self) -> None:
        """What the session has for the client; its Deny or Close last."""
        out = self.session.out
        if out:
            self.session.out = []
            if not self.closing:
                for packet in out:
                    if not self.outbox.push(packet):
                        self.too_slow()
                        break
                if self.server.memory.queued > self.server.limits.memory_bytes:
                    self.server.shed()
        final = self.session.final
        if final is not None and not self.closing:
            self.closing = True
            self.outbox.finish(final)

    def too_slow(self) -> None:
        """The client lets more pile up than its limit or the node's memory allows: the
        connection ends now, not once the client reads (a Close would wait behind all it has
        not read), and what was queued for it is dropped at once."""
        self.server.warnings.warning("too_slow", "relay client too slow (%d bytes queued): "
                                     "closing", self.outbox.queued_bytes)
        self.server.count("clients_too_slow")
        self.session.close("client too slow")  # (the session says nothing more)
        self.closing = True
        self.outbox.discard()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def close(self, reason: str) -> None:
        self.session.close(reason)
        self.write_out()

    def evict(self) -> None:
        """Closed at once, with a Deny, to make room for a new connection: it has sent no
        Init while the node is at its connection limit."""
        self.server.count("connections_evicted")
        self.server.warnings.warning("evicted", "relay: %d connections already: closing the "
                                     "oldest without an Init", self.server.max_connections)
        self.session.close("the node is at its connection limit", deny=True)
        self.write_out()
        self.outbox.flush()  # (the Deny, if the kernel takes it now: the connection ends)
        self.outbox.discard()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    # ------------------------------------------------------------------------- commands
    async def apply(self) -> None:
        """Run the node calls the session asked for, in order (they may ask for more, which
        join the end), then write what it has for the client."""
        if self._applying:  # the task applying them takes these too, in their turn
            return
        self._applying = True
        try:
            commands = self.session.commands
            while commands:
                command = commands.pop(0)
                now = _NOW.get(type(command))
                if now is not None:
                    now(self, command)
                else:
                    await _LATER[type(command)](self, command)
        finally:
            self._applying = False
        self.write_out()

    def run_now(self) -> bool:
        """Run the session's commands that need no waiting, in order, up to the first one that
        does; True when that one is left (first in `session.commands`) for `apply`."""
        commands = self.session.commands
        if self._applying:
            return bool(commands)  # (after what another task waits for)
        while commands:
            now = _NOW.get(type(commands[0]))
            if now is None:
                return True
            now(self, commands.pop(0))
        return False

    def apply_now(self) -> None:
        """`apply` from the node's own processing, which cannot wait: a command that has to
        wait runs in a task of the connection, with the ones after it."""
        if self.run_now() and self._nursery is not None:
            self._nursery.start_soon(self.apply)
        self.write_out()

    async def _room(self) -> None:
        """Wait while the node's links are congested, before reading on (what came before
        goes out first). Checked once per read: what one read holds is bounded."""
        self.write_out()
        self.server.flusher.flush()
        await self.node.wait_for_room()

    async def _pass_on(self, call: Awaitable[None]) -> None:
        try:
            await call
        except LimitExceededError as exc:
            self.session.refused(str(exc))

    async def _register(self, command: rc.Register) -> None:
        members = self.server.members.setdefault(command.cluster, _Members())
        members.joining += 1  # keeps `members` in place while this one registers
        try:
            with trio.move_on_after(self.server.limits.join_timeout_s):
                self.registration = await self.node.register(command.cluster, members)
        finally:
            members.joining -= 1
        if self.registration is None:  # (register left no membership behind)
            if not members.connections and not members.joining:
                del self.server.members[command.cluster]
            self.session.joined(False)
        else:
            self.session.joined(True)
            members.connections.append(self)  # requests follow the Init answer

    async def _unregister(self, command: rc.Unregister) -> None:
        members = self.server.members.get(self.cluster)
        if members is not None and self in members.connections:
            members.connections.remove(self)
            if not members.connections and not members.joining:
                del self.server.members[self.cluster]
        if self.registration is not None:
            await self.registration.unregister()

    async def _broadcast(self, command: rc.Broadcast) -> None:
        await self._pass_on(self.node.broadcast(command.cluster, command.data))

    async def _publish(self, command: rc.Publish) -> None:
        await self._pass_on(self.node.publish(command.topic, command.data))

    def _ask(self, command: rc.Ask) -> None:
        """A client's request: sent into the overlay; the answer is written when it comes."""
        rid, session = command.rid, self.session

        def answered(reply: bytes | None, error: IrisError | None) -> None:
            if error is None:
                session.answered(rid, reply or b"")
            else:
                session.answered(rid, None, str(error), isinstance(error, TimeoutError))
            self.write_out()

        try:
            self.node.start_request(command.cluster, command.data, command.timeout_s, answered)
        except IrisError as exc:
            answered(None, exc)

    def _survey(self, command: rc.Survey) -> None:
        """This project's extension (`iris.relay.survey`): a survey from the node."""
        rid, session = command.rid, self.session

        def answered(result: SurveyResult | None, error: IrisError | None) -> None:
            if result is not None:
                session.answered(rid, relay_survey.encode_result(result))
            elif isinstance(error, TimeoutError):
                session.answered(rid, None, str(error), True)
            else:
                session.answered(rid, None, relay_survey.fault(error or IrisError("failed")))
            self.write_out()

        try:
            cluster, data = relay_survey.parse_question(command.data)
            self.node.start_survey(cluster, data, command.timeout_s, answered)
        except ValueError as exc:
            answered(None, IrisError(str(exc)))
        except IrisError as exc:
            answered(None, exc)

    def _status(self, command: rc.Status) -> None:
        status = {**self.node.status(), "relay": self.server.status()}
        self.session.status(command.rid, json.dumps(status).encode())

    def _drop(self, command: rc.Drop) -> None:
        command.responder.drop()

    def _answer(self, command: rc.Answer) -> None:
        if command.reply is not None:
            command.responder.reply(command.reply)
        else:
            command.responder.fail(command.fault)

    async def _subscribe(self, command: rc.Subscribe) -> None:
        topic = command.topic
        subscribers = self.server.topics.get(topic)
        if subscribers is None:
            subscribers = self.server.topics[topic] = _Subscribers(topic)
            subscribers.connections.add(self)
            self.write_out()  # joining the topic's tree takes a while: what came before goes
            self.server.flusher.flush()
            await self.node.subscribe(topic, subscribers, limits=TopicLimits())
        else:
            subscribers.connections.add(self)

    async def _unsubscribe(self, command: rc.Unsubscribe) -> None:
        subscribers = self.server.topics.get(command.topic)
        if subscribers is not None:
            subscribers.connections.discard(self)
            if not subscribers.connections:
                del self.server.topics[command.topic]
                await self.node.unsubscribe(command.topic)

    def _open_tunnel(self, command: rc.OpenTunnel) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self._opening, command)

    async def _opening(self, command: rc.OpenTunnel) -> None:
        """The client opens a tunnel to a cluster (its other packets go on meanwhile)."""
        try:
            handle: Tunnel | None = await self.node.tunnel(command.cluster,
                                                           timeout=command.timeout_s)
        except IrisError:
            handle = None
        self.session.tunnel_opened(command.tid, handle)
        await self.apply()

    def _carry(self, command: rc.CarryTunnel) -> None:
        carrier = Carrier(self.session, self.write_out, command.tid, command.handle,
                          self._carried)
        self.carriers[command.tid] = carrier
        assert self._nursery is not None
        self._nursery.start_soon(carrier.run)

    def _carried(self, carrier: Carrier) -> None:
        """A carrier stopped: its tunnel is done (a member's tunnel handler returns)."""
        if self.carriers.get(carrier.tid) is carrier:
            del self.carriers[carrier.tid]
        accepted = self.accepting.get(carrier.handle)
        if accepted is not None:
            accepted.set()

    def _send_on_tunnel(self, command: rc.SendOnTunnel) -> None:
        carrier = self.carriers.get(command.tid)
        if carrier is not None and carrier.handle is command.handle:
            carrier.send(command.data)

    def _resume(self, command: rc.Resume) -> None:
        carrier = self.carriers.get(command.tid)
        if carrier is not None:
            carrier.resume.set()

    async def _close_tunnel(self, command: rc.CloseTunnel) -> None:
        handle = command.handle
        accepted = self.accepting.get(handle)
        if accepted is not None:
            accepted.set()
        for carrier in self.carriers.values():
            if carrier.handle is handle:
                carrier.scope.cancel()  # it closes the tunnel on its way out
                return
        with trio.CancelScope(shield=True):
            await handle.close()

    # ------------------------------------------------------------------ the node's side
    def serve_request(self, data: bytes, responder: Responder) -> None:
        """Hand a request to this member client; its Reply packet answers it."""
        session = self.session
        session.serve_request(responder, data, trio.current_time(), responder.time_left())
        if session.commands:
            self.apply_now()
        else:
            self.write_out()
        self._deadline_added()

    def broadcast(self, data: bytes) -> None:
        self.send(rp.NodeBroadcast.pack(data))

    async def accept_tunnel(self, tunnel: Tunnel) -> None:
        """A tunnel reached this member client: the session asks the client for a tunnel id,
        then a carrier moves its messages; this handler returns when the tunnel is done."""
        done = self.accepting[tunnel] = trio.Event()
        try:
            self.session.tunnel_arrived(tunnel, trio.current_time())
            self._deadline_added()
            await self.apply()
            await done.wait()
        finally:
            self.accepting.pop(tunnel, None)

    def _deadline_added(self) -> None:
        if self.session.next_deadline() != self._timer_at:
            self._timer_changed.set()

    async def _expire(self) -> None:
        """One timer for the session's earliest deadline."""
        session = self.session
        while True:
            self._timer_at = at = session.next_deadline()
            self._timer_changed = trio.Event()
            if at is None:
                await self._timer_changed.wait()
                continue
            with trio.move_on_at(at):
                await self._timer_changed.wait()
            now = trio.current_time()
            if now >= at:
                session.expire(now)
                await self.apply()

    # ------------------------------------------------------------------------- reading
    async def run(self) -> None:
        session = self.session
        incoming = EagerReader(self.stream)
        poke = self.node.busy_poll.poke
        memory = self.server.memory
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
                nursery.start_soon(self._expire)
                while not self.closing:
                    if self._partial and memory.congested:
                        await memory.room()  # (its packet's deadline still runs)
                    data = await incoming.receive()
                    poke()
                    if not data:
                        if session.reader.pending:
                            log.info("relay client left in the middle of a packet")
                        break
                    if self.node.congested:
                        await self._room()
                    with self.server.flusher.batch():  # what this read causes goes out in one write
                        for packet in session.read(data):
                            session.handle(packet)
                            if session.commands and self.run_now():
                                await self.apply()
                            if session.final is not None:
                                break
                        session.read_done(trio.current_time())
                        self.write_out()
                    self._count_partial(session.reader.pending)
                    if session.state != "new":
                        self.server.greeting.pop(self, None)
                    self._deadline_added()  # (a packet begun or completed moves one)
                    if session.reader.error is not None:
                        self.server.warnings.warning(
                            "protocol", "relay client broke the protocol: %s",
                            session.reader.error)
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
            self.outbox.discard()
            self._count_partial(0)
            await trio.aclose_forcefully(self.stream)

    def _count_partial(self, pending: int) -> None:
        """The connection's partly read packet is now `pending` bytes."""
        if pending > self._partial:
            self.server.memory.add(pending - self._partial)
        elif pending < self._partial:
            self.server.memory.remove(self._partial - pending)
        self._partial = pending

    async def cleanup(self) -> None:
        """The client is gone: its membership, subscriptions, waiting requests and tunnels go
        too (what the session asks for at its end)."""
        self.closing = True
        self.session.cleanup()
        for event in self.accepting.values():
            event.set()
        self._applying = False  # (also while a tunnel handler applies some: these are the last)
        with trio.CancelScope(shield=True):
            await self.apply()


_NOW: dict[type, Callable[[RelayConnection, Any], None]] = {
    rc.Ask: RelayConnection._ask,
    rc.Status: RelayConnection._status,
    rc.Survey: RelayConnection._survey,
    rc.Answer: RelayConnection._answer,
    rc.Drop: RelayConnection._drop,
    rc.OpenTunnel: RelayConnection._open_tunnel,
    rc.CarryTunnel: RelayConnection._carry,
    rc.SendOnTunnel: RelayConnection._send_on_tunnel,
    rc.Resume: RelayConnection._resume,
}
"""The session's commands that run at once."""

_LATER: dict[type, Callable[[RelayConnection, Any], Awaitable[None]]] = {
    rc.Register: RelayConnection._register,
    rc.Unregister: RelayConnection._unregister,
    rc.Broadcast: RelayConnection._broadcast,
    rc.Publish: RelayConnection._publish,
    rc.Subscribe: RelayConnection._subscribe,
    rc.Unsubscribe: RelayConnection._unsubscribe,
    rc.CloseTunnel: RelayConnection._close_tunnel,
}
"""The session's commands that may wait (for room on the links, for the overlay)."""
