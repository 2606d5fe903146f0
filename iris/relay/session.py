"""Every rule of one relay connection, sans-IO: what the node does with each client packet.

The session holds the connection's protocol state: the Init handshake, the member's requests
and their deadlines, the client's requests in flight, its subscriptions, and its tunnels (ids,
byte credit both ways, chunk and message limits, reassembly, the bytes waiting for the
overlay). It reads no socket and keeps no time of its own (callers pass `now`), so every rule
can be tested with any sequence of packets and node events, and the trio server
(`iris.relay.server`) only moves bytes and runs the node calls the session asks for.

Inputs are method calls: `read(bytes)` then `handle(packet)` for each packet and
`read_done(now)` after them; and the node's side (`joined`, `answered`, `serve_request`,
`tunnel_arrived`, `tunnel_opened`, `to_client`, `tunnel_sent`, `tunnel_ended`, `expire`).
Outputs: `out`, the bytes for the client in order; `final`, the Deny or Close packet that
ends the connection once set; and `commands`, what the server must ask of the node, in order.
Tunnel handles and request responders are the server's objects; the session only passes them
back in commands.

Why this module is a little over 500 lines: it is one state machine, and its rules read each
other's tables (the tunnel limit counts openings both ways, the byte account spans every
tunnel, the end of the connection lets go of all of it at once); split by feature, each part
would reach into the others' state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from iris.core.tunnel_flow import (
    CHUNK,
    MAX_MESSAGE,
    WINDOW,
    MessageAssembler,
    ReceiveCredit,
    SendCredit,
    TunnelProtocolError,
)
from iris.relay import protocol as rp
from iris.relay.commands import (
    Answer,
    Ask,
    Broadcast,
    CarryTunnel,
    CloseTunnel,
    Command,
    Drop,
    OpenTunnel,
    Publish,
    Register,
    Resume,
    SendOnTunnel,
    Status,
    Subscribe,
    Survey,
    Unregister,
    Unsubscribe,
)
from overlay.deadlines import INF, Deadlines

STATUS_CLUSTER = "iris.status"  # answered by the node itself, never routed
# This project's extension of the relay protocol (not in Iris): a request to this node-local
# pseudo-cluster runs a survey from the node (`iris.relay.survey`).
SURVEY_CLUSTER = "iris.survey"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one client may hold on its node; beyond, it is refused or cut off."""

    requests: int = 10_000  # its requests in flight
    serve_timeout_s: float = 60.0  # how long a member client may take to answer a request
    # A member's unanswered request fails this long after the time it was given: the caller's
    # own timeout reports it first (as timed out), and the service's slot is freed after.
    expiry_grace_s: float = 1.0
    # A connection that has not sent its Init by then, or that leaves a packet unfinished this
    # long, is closed: otherwise an idle or trickling client holds its socket for ever.
    init_timeout_s: float = 10.0
    packet_timeout_s: float = 30.0
    join_timeout_s: float = 10.0  # a member's Init waits this long for its registration
    tunnel_confirm_timeout_s: float = 10.0  # a member confirms a tunnel reaching it
    tunnel_message: int = MAX_MESSAGE  # one tunnel message from the client
    tunnel_bytes: int = 64 * 1024 * 1024  # its tunnel data waiting for the overlay
    tunnels: int = 1024  # its tunnels, open or opening
    topics: int = 1024  # its subscriptions
    out_bytes: int = 64 * 1024 * 1024  # queued for it to read; beyond, it is too slow: closed
    # Not one client's but the node's: connections beyond are closed as they come, before
    # they cost a task, buffers and file descriptors the node needs for its links (at most
    # half of the descriptors the process may open, whatever this says).
    max_connections: int = 1000
    # Also the node's: the bytes of packets read in part and of output queued, over all
    # connections. Past half of it, connections in the middle of a packet stop being read
    # (the kernel's buffers and TCP's flow control hold the rest) until it is down to a
    # quarter; past all of it, the client with the most output queued is closed as too slow.
    memory_bytes: int = 256 * 1024 * 1024

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not value > 0 or value == INF:  # (also NaN)
                raise ValueError(f"relay limit {field.name} must be a positive finite "
                                 f"number, not {value!r}")

    @classmethod
    def parse(cls, settings: list[str]) -> Limits:
        """The defaults with `NAME=VALUE` settings applied (ValueError naming a bad one)."""
        values: dict[str, Any] = {}
        types = {field.name: field.type for field in dataclasses.fields(cls)}
        for setting in settings:
            name, _, value = setting.partition("=")
            kind = types.get(name.strip())
            if kind is None:
                raise ValueError(f"no relay limit {name.strip()!r} (limits: {', '.join(types)})")
            try:
                values[name.strip()] = int(value) if kind == "int" else float(value)
            except ValueError:
                raise ValueError(f"relay limit {setting!r}: {value!r} is not a "
                                 f"{'whole ' if kind == 'int' else ''}number") from None
        return cls(**values)


DEFAULT_LIMITS = Limits()


class _Tunnel:
    """One established tunnel's rules at the node's end."""

    __slots__ = ("handle", "credit", "received", "assembler", "waiting", "held")

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.credit = SendCredit()  # what the client lets us send it
        self.received = ReceiveCredit(0)  # what we let the client send us
        self.assembler = MessageAssembler()
        self.waiting = 0  # bytes of whole messages handed to the server, not on the overlay yet
        self.held: bytes | None = None  # a message for the client, waiting for its credit

    @property
    def unsent(self) -> int:
        """The client's bytes this tunnel holds here (assembling or waiting)."""
        return self.waiting + self.assembler.pending


class RelaySession:
    """One client connection's protocol state; see the module docstring."""

    def __init__(self, limits: Limits = DEFAULT_LIMITS,
                 count: Callable[[str], None] = lambda what: None, now: float = 0.0) -> None:
        self.limits = limits
        self._count = count  # (what `iris status` shows under "relay")
        self.reader = rp.ClientReader()
        self.out: list[bytes] = []
        self.final: bytes | None = None
        self.commands: list[Command] = []
        self.state = "new"  # new -> joining (a member's Init) -> ready; closed once final is set
        self.cluster = ""  # the cluster this client serves ("" when it only uses the node)
        self.registered = False  # the node holds a registration for this member
        self.topics: set[str] = set()
        self.asking = 0  # the client's requests in flight
        self.serving: dict[int, Any] = {}  # id of a request handed to the member -> responder
        self.tunnels: dict[int, _Tunnel] = {}  # by the client's tunnel id
        self.opening: set[int] = set()  # ids of the client's TunInits not answered yet
        self.building: dict[int, Any] = {}  # build id of a tunnel reaching the member -> handle
        self.tunnel_bytes = 0  # from the client, not on the overlay yet (all its tunnels)
        self._owed: dict[int, int] = {}  # credit to give back after this read, by tunnel id
        # The member's requests and the tunnels reaching it, until answered or confirmed.
        self._deadlines = Deadlines()
        self._waiting = _Either(self.serving, self.building)
        self._next_id = 0
        self._init_by = now + limits.init_timeout_s  # (while the Init has not come)
        self._packet_by = INF  # when the packet read in part must be complete
        self._completed = False  # the last read completed a packet

    # ------------------------------------------------------------------------------ output
    def take(self) -> tuple[list[bytes], list[Command]]:
        """The bytes for the client and the commands for the node, since the last take (the
        lists are emptied in place: a driver may hold on to them)."""
        out, commands = self.out[:], self.commands[:]
        self.out.clear()
        self.commands.clear()
        return out, commands

    def close(self, reason: str, deny: bool = False) -> None:
        """End the connection: Deny (before the handshake) or Close, with the reason."""
        if self.final is None:
            self.final = (rp.Deny.pack(reason=reason) if deny else rp.NodeClose.pack(reason))

    def cut_off(self, reason: str) -> None:
        """The client broke a rule."""
        if self.final is None:
            self._count("clients_cut_off")
        self.close(reason, deny=self.state != "ready")

    # --------------------------------------------------------------------- client packets
    def read(self, data: bytes) -> list[rp.ClientPacket]:
        """The whole packets in `data` (and what came before); `handle` each, then call
        `read_done`."""
        packets = self.reader.feed(data)
        self._completed = bool(packets)
        return packets

    def read_done(self, now: float) -> None:
        """After the packets of one read (at `now`): a violation found in it cuts the client
        off (after the good packets before it were handled), the credit its tunnels earned in
        it goes back in one TunAllow each, and a packet it left unfinished has
        `packet_timeout_s` from now to be completed (from the read that began it)."""
        if self.reader.error is not None:
            self.cut_off(str(self.reader.error))
        self.return_credit()
        if not self.reader.pending:
            self._packet_by = INF
        elif self._completed or self._packet_by == INF:
            self._packet_by = now + self.limits.packet_timeout_s

    def handle(self, packet: rp.ClientPacket) -> None:
        if self.final is not None:
            return
        if self.state == "new":
            self._init(packet)
        elif self.state == "ready":
            _CLIENT_PACKETS[type(packet)](self, packet)
        # (joining: nothing is read until the registration is decided)

    def _init(self, packet: rp.ClientPacket) -> None:
        if not isinstance(packet, rp.Init):
            self.cut_off("expected Init")
        elif packet.magic != rp.CLIENT_MAGIC:
            self.cut_off(f"bad magic {packet.magic!r}")
        elif packet.version != rp.VERSION:
            self.cut_off(f"protocol version {packet.version!r} not supported "
                         f"(need {rp.VERSION})")
        elif packet.cluster:
            self.state, self.cluster = "joining", packet.cluster
            self.commands.append(Register(packet.cluster))
        else:
            self.state = "ready"
            self.out.append(rp.NodeInit.pack())

    def joined(self, ok: bool) -> None:
        """The member's registration is in place (or could not be made in time). Only after
        the Init answer may requests reach the client."""
        if self.state != "joining":
            return
        self.registered = ok  # (to undo at the end, even when the connection closed meanwhile)
        if self.final is not None:
            return
        if ok:
            self.state = "ready"
            self.out.append(rp.NodeInit.pack())
        else:
            self.cut_off(f"could not join cluster {self.cluster!r} within "
                         f"{self.limits.join_timeout_s:g} s")

    def _on_second_init(self, packet: rp.Init) -> None:
        """An Init after the first changes nothing: the connection's role is set."""

    def _on_close(self, packet: rp.Close) -> None:
        self.close("")

    def _on_broadcast(self, packet: rp.Broadcast) -> None:
        self.commands.append(Broadcast(packet.cluster, packet.message))

    def _on_publish(self, packet: rp.Publish) -> None:
        self.commands.append(Publish(packet.topic, packet.event))

    def refused(self, reason: str) -> None:
        """The node refused a broadcast or publish (over its size limit): the protocol has no
        answer for them, so the client is cut off with the reason."""
        self.cut_off(reason)

    def _on_request(self, packet: rp.Request) -> None:
        if packet.cluster == STATUS_CLUSTER:
            self.commands.append(Status(packet.id))
        elif self.asking >= self.limits.requests:
            self.out.append(rp.NodeReply.pack(packet.id, False, False,
                                              fault="too many requests in flight"))
        elif packet.cluster == SURVEY_CLUSTER:
            self.asking += 1
            self.commands.append(Survey(packet.id, packet.request,
                                        max(packet.timeout_ms, 1) / 1000))
        else:
            self.asking += 1
            self.commands.append(Ask(packet.id, packet.cluster, packet.request,
                                     max(packet.timeout_ms, 1) / 1000))

    def _on_reply(self, packet: rp.Reply) -> None:
        responder = self.serving.pop(packet.id, None)
        if responder is not None:  # a reply to a request no longer waited for is dropped
            self.commands.append(Answer(responder, packet.reply if packet.success else None,
                                        packet.fault))

    def _on_subscribe(self, packet: rp.Subscribe) -> None:
        if packet.topic in self.topics:
            return
        if len(self.topics) >= self.limits.topics:
            self.cut_off(f"more than {self.limits.topics} subscriptions")
            return
        self.topics.add(packet.topic)
        self.commands.append(Subscribe(packet.topic))

    def _on_unsubscribe(self, packet: rp.Unsubscribe) -> None:
        if packet.topic in self.topics:
            self.topics.discard(packet.topic)
            self.commands.append(Unsubscribe(packet.topic))

    def _on_tun_init(self, packet: rp.TunInit) -> None:
        if self._tunnel_id_taken(packet.id):
            return
        if self._tunnels_full():
            self.out.append(rp.NodeTunConfirm.pack(packet.id, True))  # refused, as if timed out
            return
        self.opening.add(packet.id)
        self.commands.append(OpenTunnel(packet.id, packet.cluster,
                                        max(packet.timeout_ms, 1) / 1000))

    def _on_tun_confirm(self, packet: rp.TunConfirm) -> None:
        handle = self.building.pop(packet.build_id, None)
        if handle is None:
            return  # given up on meanwhile (or never asked for)
        if self._tunnel_id_taken(packet.tunnel_id):
            self.commands.append(CloseTunnel(handle))
            return
        self._establish(packet.tunnel_id, handle)

    def _on_tun_allow(self, packet: rp.TunAllow) -> None:
        tunnel = self.tunnels.get(packet.tunnel_id)
        if tunnel is None:  # a tunnel that closed meanwhile (or never was): nothing to do
            self._count("tunnel_packets_for_unknown_ids")
            return
        tunnel.credit.grant(packet.space)
        held = tunnel.held
        if held is not None and tunnel.credit.fits(min(len(held), CHUNK)):
            tunnel.held = None
            self._to_client(packet.tunnel_id, tunnel, held)
            self.commands.append(Resume(packet.tunnel_id))

    def _on_tun_transfer(self, packet: rp.TunTransfer) -> None:
        """A chunk from the client; a whole message goes to the overlay tunnel. A client that
        sends beyond its credit or its chunk limit is cut off: what waits here for the overlay
        stays within the window and one message."""
        tid = packet.tunnel_id
        tunnel = self.tunnels.get(tid)
        if tunnel is None:
            self._count("tunnel_packets_for_unknown_ids")
            return
        size, chunk, limits = packet.size, packet.chunk, self.limits
        try:
            if len(chunk) > CHUNK:
                raise TunnelProtocolError(
                    f"chunk of {len(chunk)} bytes exceeds the chunk limit {CHUNK}")
            if size != 0 and not tunnel.assembler.inside_message:
                if size > limits.tunnel_message:
                    raise TunnelProtocolError(
                        f"message of {size} bytes exceeds {limits.tunnel_message}")
                tunnel.received.started(len(chunk), size)
            if self.tunnel_bytes + len(chunk) > limits.tunnel_bytes:
                raise TunnelProtocolError(
                    f"more than {limits.tunnel_bytes} bytes of tunnel data waiting")
            data = tunnel.assembler.add(size != 0, size, chunk)
        except TunnelProtocolError as exc:
            self.cut_off(f"tunnel {tid}: {exc}")
            return
        self.tunnel_bytes += len(chunk)
        if data is not None:
            tunnel.waiting += len(data)
            self.commands.append(SendOnTunnel(tid, tunnel.handle, data))

    def _on_tun_close(self, packet: rp.TunClose) -> None:
        tunnel = self._forget(packet.tunnel_id)
        if tunnel is not None:
            self.commands.append(CloseTunnel(tunnel.handle))

    def _tunnels_full(self) -> bool:
        """The client's tunnels, both ways, open or on their way, are at the limit."""
        return len(self.tunnels) + len(self.opening) + len(self.building) >= self.limits.tunnels

    def _tunnel_id_taken(self, tid: int) -> bool:
        """A client's tunnel ids name one tunnel at a time; reusing a live one is cut off."""
        if tid in self.tunnels or tid in self.opening:
            self.cut_off(f"tunnel id {tid} is already in use")
            return True
        return False

    # --------------------------------------------------------------------- the node's side
    def answered(self, rid: int, reply: bytes | None, fault: str = "",
                 timed_out: bool = False) -> None:
        """The outcome of the client's request `rid`."""
        self.asking -= 1
        if self.final is not None:
            return
        if timed_out:
            self.out.append(rp.NodeReply.pack(rid, True))
        elif reply is not None:
            self.out.append(rp.NodeReply.pack(rid, False, True, reply))
        else:
            self.out.append(rp.NodeReply.pack(rid, False, False, fault=fault))

    def status(self, rid: int, data: bytes) -> None:
        if self.final is None:
            self.out.append(rp.NodeReply.pack(rid, False, True, data))

    def serve_request(self, responder: Any, data: bytes, now: float, time_left: float) -> None:
        """A request for the member client, whose caller gives up in `time_left` seconds: the
        client is told that much in the Request packet (at most `serve_timeout_s`), and its
        Reply answers, or that deadline fails it. One already expired is not handed over."""
        if self.final is not None or self.state != "ready":
            self.commands.append(Answer(responder, None, "relay client left"))
            return
        timeout_ms = int(min(time_left, self.limits.serve_timeout_s) * 1000)
        if timeout_ms <= 0:  # (under a millisecond left: the client could not make it)
            self._count("requests_expired")
            self.commands.append(Drop(responder))
            return
        rid = self._new_id()
        self.serving[rid] = responder
        self._deadlines.add(now + timeout_ms / 1000 + self.limits.expiry_grace_s, rid,
                            self._waiting)
        self.out.append(rp.NodeRequest.pack(rid, data, timeout_ms))

    def tunnel_arrived(self, handle: Any, now: float) -> None:
        """A tunnel reached the member client: it is asked for a tunnel id of its own."""
        if self.final is not None or self.state != "ready" or self._tunnels_full():
            self.commands.append(CloseTunnel(handle))
            return
        build_id = self._new_id()
        self.building[build_id] = handle
        self._deadlines.add(now + self.limits.tunnel_confirm_timeout_s, build_id,
                            self._waiting)
        self.out.append(rp.NodeTunInit.pack(build_id, CHUNK))

    def tunnel_opened(self, tid: int, handle: Any | None) -> None:
        """The overlay tunnel the client asked for with TunInit `tid` (None: refused or timed
        out)."""
        self.opening.discard(tid)
        if handle is None:
            if self.final is None:
                self.out.append(rp.NodeTunConfirm.pack(tid, True))
        elif self.final is not None:
            self.commands.append(CloseTunnel(handle))
        else:
            self.out.append(rp.NodeTunConfirm.pack(tid, False, CHUNK))
            self._establish(tid, handle)

    def _establish(self, tid: int, handle: Any) -> None:
        tunnel = self.tunnels[tid] = _Tunnel(handle)
        tunnel.received.grant(WINDOW)
        self.out.append(rp.TunAllow.pack(tid, WINDOW))
        self.commands.append(CarryTunnel(tid, handle))

    def to_client(self, tid: int, data: bytes) -> bool:
        """A message from the overlay tunnel: sent within the client's credit, or held until
        the client grants enough (False: take no more until `Resume`)."""
        tunnel = self.tunnels.get(tid)
        if tunnel is None or self.final is not None:
            return True  # gone: the message is dropped with its tunnel
        if tunnel.held is None and tunnel.credit.fits(min(len(data), CHUNK)):
            self._to_client(tid, tunnel, data)
            return True
        tunnel.held = data
        return False

    def _to_client(self, tid: int, tunnel: _Tunnel, data: bytes) -> None:
        tunnel.credit.spend(len(data))
        self.out.append(rp.tun_message_packets(tid, data, CHUNK))

    def tunnel_sent(self, tid: int, handle: Any, nbytes: int) -> None:
        """`nbytes` the client sent on tunnel `tid` (carried by `handle`) went out on the
        overlay: its credit goes back to the client (at `return_credit`, one TunAllow per
        tunnel). A tunnel forgotten meanwhile no longer counts its bytes."""
        tunnel = self.tunnels.get(tid)
        if tunnel is not None and tunnel.handle is handle:
            self.tunnel_bytes -= nbytes
            tunnel.waiting -= nbytes
            self._owed[tid] = self._owed.get(tid, 0) + nbytes

    def return_credit(self) -> None:
        owed, self._owed = self._owed, {}
        for tid, nbytes in owed.items():
            tunnel = self.tunnels.get(tid)
            if tunnel is not None and self.final is None:
                tunnel.received.grant(nbytes)
                self.out.append(rp.TunAllow.pack(tid, nbytes))

    def tunnel_ended(self, tid: int, handle: Any, reason: str) -> None:
        """The overlay tunnel `handle` closed: the client hears so, with the reason (unless
        the tunnel was forgotten meanwhile, and its id perhaps given to another)."""
        tunnel = self.tunnels.get(tid)
        if tunnel is not None and tunnel.handle is handle:
            self._forget(tid)
            if self.final is None:
                self.out.append(rp.NodeTunClose.pack(tid, reason))

    def _forget(self, tid: int) -> _Tunnel | None:
        """Drop a tunnel's state; the client's bytes it held no longer count."""
        tunnel = self.tunnels.pop(tid, None)
        if tunnel is not None:
            self.tunnel_bytes -= tunnel.unsent
            self._owed.pop(tid, None)
        return tunnel

    # ---------------------------------------------------------------------------- time
    def next_deadline(self) -> float | None:
        """When `expire` has something to do next (an answered entry may wake it early)."""
        armed = min(self._deadlines.armed, self._reading_by())
        return None if armed == INF else armed

    def _reading_by(self) -> float:
        """When the client must have sent its Init or finished its packet (INF: no such
        deadline, or the connection is ending anyway)."""
        if self.final is not None:
            return INF
        return min(self._packet_by, self._init_by if self.state == "new" else INF)

    def expire(self, now: float) -> None:
        """Close a client that has not sent its Init in time or left a packet unfinished too
        long (it holds a socket and a buffer while sending nothing of use: Deny before the
        handshake, else Close). Fail the requests the member did not answer in time (their
        callers have given up by then; this frees the service's concurrency slot), and give
        up on tunnels it did not confirm."""
        if self.final is None and self.state == "new" and now >= self._init_by:
            self._count("init_timeouts")
            self.close(f"no Init within {self.limits.init_timeout_s:g} s", deny=True)
        elif self.final is None and now >= self._packet_by:
            self._count("packet_timeouts")
            self.close(f"a packet left unfinished for {self.limits.packet_timeout_s:g} s",
                       deny=self.state != "ready")
        due, _ = self._deadlines.expire(now, self._waiting)
        for ident in due:
            responder = self.serving.pop(ident, None)
            if responder is not None:
                self.commands.append(
                    Answer(responder, None, "relay client did not answer in time"))
            else:
                self.commands.append(CloseTunnel(self.building.pop(ident)))

    # ------------------------------------------------------------------------------ end
    def cleanup(self) -> None:
        """The connection is gone: every responder is answered, every tunnel closed, the
        membership and the subscriptions dropped (as commands)."""
        self.close("")
        for responder in self.serving.values():
            self.commands.append(Answer(responder, None, "relay client left"))
        self.serving.clear()
        handles = [*self.building.values(), *(t.handle for t in self.tunnels.values())]
        self.building.clear()
        for tid in list(self.tunnels):
            self._forget(tid)
        for handle in handles:
            self.commands.append(CloseTunnel(handle))
        if self.registered:
            self.registered = False
            self.commands.append(Unregister())
        topics, self.topics = self.topics, set()
        for topic in sorted(topics):
            self.commands.append(Unsubscribe(topic))
        self._deadlines.reset()

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id


class _Either:
    """The keys of two tables, as one collection (the ids the deadlines still wait for:
    requests handed to the member and tunnels it has not confirmed share one id space)."""

    __slots__ = ("first", "second")

    def __init__(self, first: dict[int, Any], second: dict[int, Any]) -> None:
        self.first, self.second = first, second

    def __contains__(self, key: object) -> bool:
        return key in self.first or key in self.second

    def __len__(self) -> int:
        return len(self.first) + len(self.second)

    def __iter__(self) -> Iterator[int]:
        yield from self.first
        yield from self.second

_CLIENT_PACKETS: dict[type, Any] = {
    rp.Init: RelaySession._on_second_init,
    rp.Close: RelaySession._on_close,
    rp.Broadcast: RelaySession._on_broadcast,
    rp.Request: RelaySession._on_request,
    rp.Reply: RelaySession._on_reply,
    rp.Subscribe: RelaySession._on_subscribe,
    rp.Unsubscribe: RelaySession._on_unsubscribe,
    rp.Publish: RelaySession._on_publish,
    rp.TunInit: RelaySession._on_tun_init,
    rp.TunConfirm: RelaySession._on_tun_confirm,
    rp.TunAllow: RelaySession._on_tun_allow,
    rp.TunTransfer: RelaySession._on_tun_transfer,
    rp.TunClose: RelaySession._on_tun_close,
}
"""What the node does with each packet of an initialised client."""
