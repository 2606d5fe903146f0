"""Connections between simulated nodes, as TCP gives them to the real runtime.

Without this model every message is an independent datagram: a partition drops it, and the
first message after the heal goes through. Real nodes talk over TCP connections, and that is
what made partitions between real processes heal slowly (23-49 s where the datagram model
said 6 s) and deliver events late and out of order: data written into a connection across a
cut is not lost but stalls in the sender's kernel, retransmitted at a doubling interval; the
connection stays in use after the heal, and what is written to it waits behind the backlog
until the next retransmission gets through, tens of seconds later, when it all arrives at
once, after newer messages that went another way.

What is modelled, per connection and direction, with the sender's view kept apart from the
receiver's (each side decides on its own when a connection is dead, and the other side may
learn it only later):

- **Stalls.** A message written while the path is cut waits in the direction's backlog, and so
  does everything written after it. Retransmissions start `RTO_MIN_S` after the first stalled
  write and double up to `RTO_MAX_S` (Linux's bounds); the first one after the heal delivers
  the whole backlog, in order, unless it falls due as the user timeout runs out: then the
  connection is given up (a close, below), as Linux's clamped timer does. (A dial's last SYN,
  at its timeout, still connects if the path is back: the runtime cancels the connect then.)
- **Dials.** The first message to a peer without a connection dials one. Across a cut the SYN
  is retransmitted at 1 s, doubling, and the dial fails after the policy's `dial_timeout_s`,
  dropping what waited for it. A dial that connects late is reported to the dialler's node
  (`OverlayNode.link_up`), as the runtime reports it.
- **Closes.** A side closes its end when the link policy says so: the overlay declared the
  peer failed or gone (`LinkPolicy.close_when_gone`), data stayed unacknowledged for
  `user_timeout_s` (TCP_USER_TIMEOUT), or the idle connection's keep-alive probes went
  unanswered across a cut. Its backlog is dropped. If the path is open the other side sees
  the end at once (FIN); across a cut it learns when its next transmission reaches the closed
  end (RST: that data is lost, and the end closed). The next message dials a new connection.
  A side also resets its end when the overlay gave up a hop to the peer while its direction
  has a backlog, stalled or waiting for a dial (`LinkPolicy.reset_when_given_up`): that hop
  went another way, and the backlog would deliver it a second time at the heal.
  A side that sees its connection end so (a FIN, a reset) is told, as the runtime tells its
  node (`OverlayNode.link_lost`): the peer may be dead, and is probed at once.
- **Crashes.** A process that dies has its connections closed by its kernel: each peer
  reachable sees the end one network delay later, and is told so too.
- **Loss** of a segment on an open path delays it (and what follows it on the connection) by
  a retransmission timeout: TCP repairs loss, the application sees latency. TCP never
  duplicates, so the network's duplication does not apply on connections.
- A **paused** process's kernel still acknowledges what arrives (the engine holds its backlog),
  so a connection to a paused node does not stall.

With a policy that never closes anything (`UNGUARDED`, the runtime before link liveness), the
slow heal and the late, reordered events of real processes appear in the simulator too.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from overlay.link_policy import LinkPolicy
from overlay.node import OverlayNode
from overlay.wire import Message
from simulations.network import Network

RTO_MIN_S = 0.2  # Linux's minimum retransmission timeout
RTO_MAX_S = 120.0  # ... and its maximum
SYN_RTO_S = 1.0  # the first SYN retransmission (RFC 6298's initial RTO)


class Engine(Protocol):
    """What the connections need of the simulation that carries them."""

    @property
    def now(self) -> float: ...

    @property
    def rng(self) -> random.Random: ...

    @property
    def net(self) -> Network: ...

    def reachable(self, a: int, b: int) -> bool: ...

    def deliver(self, arrival: float, link: Any, dest: int, src: int, msg: Message) -> None: ...

    def at(self, when: float, fn: Callable[[], object]) -> None: ...

    def call(self, node_id: int, fn: Callable[[OverlayNode], object]) -> None: ...


@dataclass
class Unguarded(LinkPolicy):
    """Connections as the runtime kept them before link liveness: never closed when the
    overlay gives up a peer or a hop, no user timeout, no keep-alive. For showing what that
    did."""

    user_timeout_s: float = math.inf
    keepalive_idle_s: float = math.inf

    def close_when_gone(self, peer: int) -> bool:
        return False

    def reset_when_given_up(self, stalled: bool) -> bool:
        return False


class Direction:
    """What one side has written on a connection and the network has not delivered."""

    __slots__ = ("backlog", "since", "rto", "retrying")

    def __init__(self) -> None:
        self.backlog: list[Message] = []
        self.since = 0.0  # when the oldest stalled message was written
        self.rto = RTO_MIN_S
        self.retrying = False  # a retransmission is scheduled


class Connection:
    __slots__ = ("number", "ends", "established", "closed", "directions")

    def __init__(self, number: int, dialer: int, peer: int) -> None:
        self.number = number  # a link key for in-order delivery: a new connection is a new order
        self.ends = (dialer, peer)
        self.established = False
        self.closed: set[int] = set()  # the sides that closed their end
        self.directions = {dialer: Direction(), peer: Direction()}


class Connections:
    """Every side's connection to every peer, and the network's handling of their bytes."""

    def __init__(self, sim: Engine, policy: LinkPolicy) -> None:
        self.sim = sim
        self.policy = policy
        self.ends: dict[tuple[int, int], Connection] = {}  # (side, peer) -> its connection
        self._peers: dict[int, set[int]] = {}  # node -> nodes it shares an end with, either side
        self._numbers = 0
        self.counters: dict[str, int] = {}

    # ------------------------------------------------------------------------------ sending
    def send(self, src: int, dest: int, msg: Message) -> None:
        """`src` writes `msg` on its connection to `dest` (dialing one if it has none)."""
        conn = self.ends.get((src, dest))
        if conn is None:
            conn = self._dial(src, dest)
        way = conn.directions[src]
        if way.backlog:
            way.backlog.append(msg)  # behind what is stalled, as in a byte stream
            return
        sim = self.sim
        if not sim.reachable(src, dest):
            way.backlog.append(msg)
            way.since = sim.now
            way.rto = RTO_MIN_S if conn.established else SYN_RTO_S
            self._schedule_retry(conn, src)
            return
        if dest in conn.closed:
            self._reset(conn, src)
            return
        self._opened(conn, dest)
        self._deliver(conn, src, dest, msg)

    def _dial(self, src: int, dest: int) -> Connection:
        self._numbers += 1
        conn = Connection(self._numbers, src, dest)
        self._set_end(src, dest, conn)
        self.count("dials")
        return conn

    def _opened(self, conn: Connection, dest: int) -> None:
        """The connection reached `dest`: its side adopts it if it has no connection of its
        own to the dialer (as the runtime adopts an accepted stream)."""
        if not conn.established:
            conn.established = True
            dialer = conn.ends[0]
            if (dest, dialer) not in self.ends:
                self._set_end(dest, dialer, conn)

    def _deliver(self, conn: Connection, src: int, dest: int, msg: Message) -> None:
        sim = self.sim
        arrival = sim.now + self._delay(src, dest)
        loss = sim.net.config.loss
        if loss:
            rto, random = RTO_MIN_S, sim.rng.random
            while random() < loss:  # each lost transmission costs a timeout, doubling
                arrival += rto
                rto *= 2
        sim.deliver(arrival, (conn.number, src), dest, src, msg)

    # ----------------------------------------------------------------------- retransmitting
    def _schedule_retry(self, conn: Connection, src: int) -> None:
        way = conn.directions[src]
        if way.retrying:
            return
        way.retrying = True
        limit = self.policy.user_timeout_s if conn.established else self.policy.dial_timeout_s
        when = min(self.sim.now + way.rto, way.since + limit)
        self.sim.at(when, lambda: self._retry(conn, src))

    def _retry(self, conn: Connection, src: int) -> None:
        way = conn.directions[src]
        way.retrying = False
        if src in conn.closed or not way.backlog:
            return
        sim = self.sim
        limit = self.policy.user_timeout_s if conn.established else self.policy.dial_timeout_s
        expired = sim.now >= way.since + limit  # (the same sum as the schedule: no rounding gap)
        if expired and conn.established:
            # Given up, not retransmitted, even if the path is back: Linux's retransmission
            # timer is clamped to the user timeout and aborts the connection when it fires.
            self._close(conn, src, "user_timeouts")
            return
        dest = conn.ends[1] if conn.ends[0] == src else conn.ends[0]
        if sim.reachable(src, dest):
            if dest in conn.closed:
                self._reset(conn, src)
                return
            dialled = not conn.established
            self._opened(conn, dest)
            backlog, way.backlog = way.backlog, []
            self.count("stalled_delivered", len(backlog))
            for msg in backlog:
                self._deliver(conn, src, dest, msg)
            if dialled:  # the runtime reports the dial connected (`OverlayNode.link_up`)
                now = sim.now
                sim.call(src, lambda node: node.link_up(dest, now))
            return
        if expired:
            self._close(conn, src, "dials_failed")
            return
        way.rto = min(way.rto * 2, RTO_MAX_S)
        self._schedule_retry(conn, src)

    # ------------------------------------------------------------------------------ closing
    def stalled(self, side: int, peer: int) -> bool:
        """Whether `side`'s connection to `peer` holds messages the peer has not taken (written
        across the cut, or waiting for the dial)."""
        conn = self.ends.get((side, peer))
        return conn is not None and bool(conn.directions[side].backlog)

    def close(self, side: int, peer: int, why: str) -> None:
        """`side` closes its connection to `peer` (the link policy said so)."""
        conn = self.ends.get((side, peer))
        if conn is not None:
            self._close(conn, side, why)

    def _close(self, conn: Connection, side: int, why: str) -> None:
        self.count(why)
        self._close_end(conn, side)
        peer = conn.ends[1] if conn.ends[0] == side else conn.ends[0]
        if self.sim.reachable(side, peer):
            if self.ends.get((peer, side)) is conn:  # (the peer's end, if the dial reached it)
                self._ended(peer, side, self._delay(side, peer))
            self._close_end(conn, peer)  # the FIN arrives: the other side sees the end

    def _reset(self, conn: Connection, side: int) -> None:
        """`side` wrote to a connection the other side closed: the data is lost (RST)."""
        self.count("resets")
        self.count("lost_to_resets", max(1, len(conn.directions[side].backlog)))
        self._close_end(conn, side)
        peer = conn.ends[1] if conn.ends[0] == side else conn.ends[0]
        self._ended(side, peer, 2 * self._delay(side, peer))  # the write's way and the RST's

    def _delay(self, a: int, b: int) -> float:
        positions = self.sim.net.positions
        return self.sim.net.delay(positions[a], positions[b])

    def _ended(self, side: int, peer: int, after: float) -> None:
        """`side` sees its connection with `peer` end without a goodbye, `after` seconds from
        now: its node is told (`OverlayNode.link_lost`), as the runtime tells it."""
        sim = self.sim
        when = sim.now + after
        self.count("links_lost")
        sim.at(when, lambda: sim.call(side, lambda node: node.link_lost(peer, when)))

    def _close_end(self, conn: Connection, side: int) -> None:
        conn.closed.add(side)
        conn.directions[side].backlog.clear()
        peer = conn.ends[1] if conn.ends[0] == side else conn.ends[0]
        if self.ends.get((side, peer)) is conn:
            del self.ends[(side, peer)]
            if (peer, side) not in self.ends:
                self._unlink(side, peer)

    def _set_end(self, side: int, peer: int, conn: Connection) -> None:
        self.ends[(side, peer)] = conn
        self._peers.setdefault(side, set()).add(peer)
        self._peers.setdefault(peer, set()).add(side)

    def _unlink(self, a: int, b: int) -> None:
        for one, other in ((a, b), (b, a)):
            peers = self._peers.get(one)
            if peers is not None:
                peers.discard(other)
                if not peers:
                    del self._peers[one]

    def forget(self, node: int) -> None:
        """`node`'s process is gone: every end shared with it closes, its peers' included,
        and each peer it can reach sees its end close (its kernel closes a dead process's
        connections). (Nothing more reaches Connections for a node that is gone, the engine
        drops it first, so a peer's end to it would never be written to again.)"""
        for peer in list(self._peers.get(node, ())):
            if (peer, node) in self.ends and self.sim.reachable(node, peer):
                self._ended(peer, node, self._delay(node, peer))
            for side, other in ((node, peer), (peer, node)):
                conn = self.ends.get((side, other))
                if conn is not None:
                    self._close_end(conn, side)

    # --------------------------------------------------------------------------- keep-alive
    def cut(self) -> None:
        """A partition began: an idle connection across it stops answering keep-alive probes,
        and each side closes its end when they run out (a side with data stalled on it is
        left to the user timeout)."""
        policy = self.policy
        after = (policy.keepalive_idle_s
                 + policy.keepalive_interval_s * policy.keepalive_count)
        if math.isinf(after):
            return
        sim = self.sim
        across = [(side, peer, conn) for (side, peer), conn in self.ends.items()
                  if not sim.reachable(side, peer)]

        def probes_unanswered() -> None:
            for side, peer, conn in across:
                if (self.ends.get((side, peer)) is conn and not sim.reachable(side, peer)
                        and not conn.directions[side].backlog):
                    self._close(conn, side, "keepalives_failed")

        sim.at(sim.now + after, probes_unanswered)

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n


LINK_MODELS: dict[str, type[LinkPolicy] | None] = {
    "datagrams": None,  # every message on its own: a cut drops it
    "connections": LinkPolicy,  # TCP-like connections under the runtime's link policy
    "unguarded": Unguarded,  # the same connections, never closed by the policy
}
"""The `--links` choices of the scenarios: the link policy the engine runs, or None."""


def model_of(connections: Connections | None) -> str:
    """The `LINK_MODELS` name of how a simulation's messages travel."""
    if connections is None:
        return "datagrams"
    policy = type(connections.policy)
    return next((name for name, cls in LINK_MODELS.items() if cls is policy), policy.__name__)


def link_policy(model: str) -> LinkPolicy | None:
    policy = LINK_MODELS[model]
    return None if policy is None else policy()
