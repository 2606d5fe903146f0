"""Tunnels between two ends: opened like a request (walked to one member, on any node, the
opener's included), then direct: chunks in sequence, byte credit, close after the queued data,
and acknowledged keep-alives on a quiet tunnel, so a dead peer is reported within one beat plus one
acknowledgement timeout. The per-tunnel rules (chunking, reassembly, credit) are `TunnelEnd`'s.

Every close carries a code (`iris.core.messages`: OK, NO_MEMBERS, REFUSED, TIMEOUT, BROKEN,
LOST), on the wire and in the `TunnelClosed` event, so the application learns why a tunnel
failed to open without parsing the reason text.
"""

from __future__ import annotations

from iris.core import events as ev
from iris.core.messages import (
    BROKEN,
    LOST,
    OK,
    REFUSED,
    TIMEOUT,
    TunnelAccept,
    TunnelClose,
    TunnelCredit,
    TunnelData,
    TunnelOpen,
    other_end,
)
from iris.core.state import TK_BITS, TK_TUNNEL, CoreState, Service, cluster_group
from iris.core.tunnel_end import TunnelEnd
from iris.core.tunnel_flow import TunnelError
from overlay.wire import Message

TunnelKey = tuple[int, int]
"""(opener's node id, tunnel id): names one end of a tunnel. The opener's end has the id the
opener drew; the member's end the same id with `ACCEPTOR` set. So both ends can live on one
node (a node tunnelling to a cluster it serves, two relay clients of one node), and every
tunnel message names the end that sent it: the receiving end is the other one."""


class Tunnels:
    __slots__ = ("state", "ends")

    def __init__(self, state: CoreState) -> None:
        self.state = state
        self.ends: dict[TunnelKey, TunnelEnd] = {}

    # --------------------------------------------------------------------- application
    def open(self, cluster: str, timeout: float) -> TunnelKey:
        state, cfg = self.state, self.state.config
        tid = state.new_id()
        key = (state.node.id, tid)
        if len(self.ends) >= cfg.max_tunnels:
            state.events.append(ev.TunnelClosed(key, REFUSED, "too many tunnels"))
            return key
        tunnel = TunnelEnd(key, None, cfg.tunnel_window, cfg.tunnel_send_buffer, state.now)
        tunnel.open_deadline = state.now + timeout
        self.ends[key] = tunnel
        state.node.schedule(tunnel.open_deadline, (tid << TK_BITS) | TK_TUNNEL)
        group = cluster_group(cluster)
        state.node.route(group, TunnelOpen(group, state.node.id, tid, 0, cfg.tunnel_window))
        state.ensure_tick()
        return key

    def send(self, key: TunnelKey, data: bytes) -> None:
        """Queue one message; raises TunnelError when closed or the send buffer is full."""
        tunnel = self.ends.get(key)
        if tunnel is None:
            raise TunnelError("tunnel is closed")
        tunnel.queue(data)
        self._pump(tunnel)

    def consumed(self, key: TunnelKey, nbytes: int) -> None:
        tunnel = self.ends.get(key)
        if tunnel is not None and tunnel.peer is not None:
            grant = tunnel.consumed(nbytes)
            if grant:
                self._out(tunnel, TunnelCredit(key[0], key[1], grant))

    def close(self, key: TunnelKey, reason: str = "") -> None:
        tunnel = self.ends.get(key)
        if tunnel is not None:
            tunnel.closing = reason or "closed"
            self._pump(tunnel)

    def open_expired(self, tid: int) -> None:
        """The open timer of our tunnel `tid` fired: fail it unless a member accepted it."""
        state = self.state
        tunnel = self.ends.get((state.node.id, tid))
        if tunnel is not None and tunnel.peer is None and state.now >= tunnel.open_deadline:
            self._lost(tunnel, TIMEOUT, "tunnel open timed out")

    # ----------------------------------------------------------------------- the network
    def accept(self, msg: TunnelOpen, service: Service) -> None:
        """The walk chose this node as the tunnel's member."""
        state, cfg = self.state, self.state.config
        key = (msg.opener, other_end(msg.tid))
        if key in self.ends:
            return
        if len(self.ends) >= cfg.max_tunnels:
            state.node.send(msg.opener,
                            TunnelClose(msg.opener, key[1], REFUSED, "too many tunnels"))
            return
        tunnel = TunnelEnd(key, msg.opener, cfg.tunnel_window, cfg.tunnel_send_buffer, state.now)
        tunnel.send_credit.grant(msg.window)
        self.ends[key] = tunnel
        self._out(tunnel, TunnelAccept(msg.opener, key[1], cfg.tunnel_window))
        state.events.append(ev.TunnelIncoming(key, service.name))
        state.ensure_tick()

    def on_accept(self, src: int, msg: TunnelAccept) -> None:
        state = self.state
        mine = other_end(msg.tid)
        tunnel = self.ends.get((msg.opener, mine))
        if tunnel is None or tunnel.peer is not None or msg.opener != state.node.id:
            state.node.send(src, TunnelClose(msg.opener, mine, LOST, "no such tunnel"))
            return
        tunnel.peer = src
        tunnel.send_credit.grant(msg.window)
        tunnel.last_heard = state.now
        state.events.append(ev.TunnelOpened(tunnel.key))
        self._pump(tunnel)

    def on_data(self, src: int, msg: TunnelData) -> None:
        tunnel = self._from_peer(src, msg.opener, msg.tid)
        if tunnel is None:
            return
        try:
            done = tunnel.receive(msg.seq, msg.total, msg.chunk)
        except TunnelError as exc:
            self._out(tunnel, TunnelClose(*tunnel.key, BROKEN, str(exc)))
            self._lost(tunnel, BROKEN, str(exc))
            return
        if done is not None:
            self.state.events.append(ev.TunnelMessage(tunnel.key, done))

    def on_credit(self, src: int, msg: TunnelCredit) -> None:
        tunnel = self._from_peer(src, msg.opener, msg.tid)
        if tunnel is not None and msg.amount:
            tunnel.send_credit.grant(msg.amount)
            self._pump(tunnel)
            self.state.events.append(ev.TunnelDrained(tunnel.key))

    def on_close(self, src: int, msg: TunnelClose) -> None:
        tunnel = self.ends.get((msg.opener, other_end(msg.tid)))
        if tunnel is None or (tunnel.peer is not None and tunnel.peer != src):
            return
        self._lost(tunnel, msg.code, msg.reason or "closed by peer")

    def keepalive_lost(self, peer: int, msg: TunnelCredit) -> None:
        """A keep-alive (ours: it names our end) was not acknowledged: the peer is gone."""
        tunnel = self.ends.get((msg.opener, msg.tid))
        if tunnel is not None and tunnel.peer == peer:
            self._lost(tunnel, LOST, "peer unreachable")

    def peer_failed(self, peer: int) -> None:
        for tunnel in list(self.ends.values()):
            if tunnel.peer == peer:
                self._lost(tunnel, LOST, "peer failed")

    def tick(self) -> None:
        """A tunnel quiet for a keep-alive period sends an acknowledged keep-alive: a dead
        peer is then noticed within one acknowledgement timeout (`keepalive_lost`)."""
        state, cfg = self.state, self.state.config
        now = state.now
        for tunnel in list(self.ends.values()):
            if tunnel.peer is None:
                continue
            if now - tunnel.last_heard > cfg.tunnel_silence_s:
                self._lost(tunnel, LOST, "peer unreachable")
            elif (now - tunnel.last_sent >= cfg.tunnel_keepalive_s
                  or now - tunnel.last_heard >= cfg.tunnel_keepalive_s):
                tunnel.last_sent = now
                state.node.send_acked(tunnel.peer, TunnelCredit(tunnel.key[0], tunnel.key[1], 0))

    # ------------------------------------------------------------------------- internals
    def _from_peer(self, src: int, opener: int, tid: int) -> TunnelEnd | None:
        """Our end of the tunnel whose other end (opener, tid) sent a message, if `src` is its
        peer (and it was heard from just now)."""
        tunnel = self.ends.get((opener, other_end(tid)))
        if tunnel is None or tunnel.peer != src:
            return None
        tunnel.last_heard = self.state.now
        return tunnel

    def _pump(self, tunnel: TunnelEnd) -> None:
        if tunnel.peer is None:
            return
        opener, tid = tunnel.key
        for seq, total, chunk in tunnel.chunks():
            self._out(tunnel, TunnelData(opener, tid, seq, total, chunk))
        if tunnel.closing is not None and not tunnel.has_output():
            self._out(tunnel, TunnelClose(opener, tid, OK, tunnel.closing))
            self._lost(tunnel, OK, tunnel.closing)

    def _out(self, tunnel: TunnelEnd, msg: Message) -> None:
        assert tunnel.peer is not None
        tunnel.last_sent = self.state.now
        self.state.node.send(tunnel.peer, msg)

    def _lost(self, tunnel: TunnelEnd, code: int, reason: str) -> None:
        if self.ends.pop(tunnel.key, None) is not None:
            self.state.events.append(ev.TunnelClosed(tunnel.key, code, reason))
