"""One Pastry node as a sans-IO state machine.

Inputs:  `start(now, seeds)`, `receive(src, msg, now)`, `handle_timer(now)`, `route(...)`,
         `send(...)`, `leave(now)`.
Outputs: `out` (a list of `(destination id, message)` pairs the driver drains and transmits),
         `next_deadline` (when the driver must call `handle_timer`), and upcalls into the
         `OverlayApp` above (deliver / forward / receive_direct / ...).

The node never reads a clock, touches a socket or spawns a task, so the same object runs under
the discrete-event simulator and under the trio runtime.

Why this module is longer than the others: its handlers are one state machine over one shared
state (leaf set, table, probes in flight, timers), and each mechanism below is a few handlers
that lean on the others (a probe's answer feeds the join, repair and heal alike), so splitting
them across files would scatter the control flow of one protocol. What stands on its own lives
in its own module: the routing rule (`overlay.routing_rule`), probe bookkeeping
(`overlay.probes`), how many probes make a verdict (`overlay.probe_loss`), the partition-heal
record (`overlay.lost_peers`), the acknowledgement timeout estimator (`overlay.ack_delay`), the
timeouts behind one timer (`overlay.deadlines`) and the upcall interface (`overlay.app`).

Protocol in brief (the reasoning behind each constant is in `overlay.config`):
- Join: the joiner asks a seed to route a `JoinRequest` toward the joiner's id. Every node on
  the route sends the joiner its useful table rows; the root also sends its leaf set. The joiner
  probes those nodes (`Ping` with `want_leaf`), takes the live ones, probes any closer node their
  answers reveal, and becomes *active* only when no such probe is outstanding (MSPastry's
  consistent join); if not one tentative member answered, it joins again. Then it says `Hello`
  to everyone it knows, and they add it. A node the joiner probed, to which it would be one of
  the two nearest on a side, holds the messages it would deliver for keys nearer the joiner
  until that `Hello` (`_wait_for_joiner`).
- Failure detection: each active node heartbeats its left neighbour every period and its right
  one every few (MSPastry's leaf-set heartbeats); a neighbour silent for `missed_heartbeats` of
  its periods is probed, and declared failed after `probe_attempts` unanswered probes (more
  on a lossy network: `overlay.probe_loss`). The detector tells its leaf set and table
  (`Departed`); a receiver that holds the node verifies with a probe and drops it. Failures
  that go on have every node that sees or hears of them sweep its table (probe every entry):
  once they stop, and 100 s apart while they go on; heartbeats say how long ago their sender
  last saw one, so its neighbours sweep too. A lone failure after a calm is swept for by
  nobody: a holder that verifies it tells its own table entries and leaf set, and those that
  hold it too verify it and pass it on.
- Leaf-set repair and anti-entropy: heartbeats carry the sender's leaf set, so each node learns
  of nodes it should have (probing them first) and probes a member of its own beyond the
  sender that the sender does not list; a node that recently dropped a dead peer tells a
  neighbour that still lists it.
- Routing table: filled from join replies and from every active node heard; kept nearest by
  measured round trips; probed one entry at a time (the probe also fetches that entry's row,
  whose likely nearer nodes are probed: proximity neighbour selection, `overlay.proximity`),
  searched for nearer nodes after a join and whenever the ring has grown, swept fully after
  failures are seen (above), and repaired lazily by asking a node of the same row for its row.
- Routing: Pastry's rule; every hop is acknowledged, an unacknowledged hop is re-sent another
  way (the silent peer is suspected and probed), except around the key's root by our own state:
  a message for a suspected root waits for the probe's verdict, so a lost hop or a lost
  acknowledgement never puts it at the next closest node.
- Partition heal: peers lost to failure stay in a bounded record and are retried at a doubling
  interval (a table entry outside the leaf set only when the record is swept: its neighbours
  retry it); one that answers again triggers a merge lookup (a `JoinRequest` for our own id routed
  through it), which pulls the other ring's view of our neighbourhood in.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable, Collection
from functools import cache
from heapq import heappop, heappush
from itertools import chain
from typing import Any, TypeVar

from overlay import routing_rule
from overlay.ack_delay import AckDelay
from overlay.app import OverlayApp
from overlay.config import OverlayConfig
from overlay.deadlines import Deadlines
from overlay.discovery import ROW_PROBES, Discovery
from overlay.ids import MASK, ring_distance, shared_prefix_len
from overlay.leafset import LeafSet
from overlay.lost_peers import LostPeers, Sweep
from overlay.messages import (
    MAX_RTT_US,
    NO_FAILURE,
    Departed,
    Direct,
    Heartbeat,
    Hello,
    JoinReply,
    JoinRequest,
    Leave,
    Ping,
    Pong,
    Route,
    RouteAck,
    RowReply,
    RowRequest,
)
from overlay.probe_loss import ProbeLoss
from overlay.probes import (
    FATAL,
    ONE_MORE,
    P_CANDIDATE,
    P_CONFIRM,
    P_HEAL,
    P_HELD,
    P_NEIGHBOUR,
    P_SUSPECT,
    P_TABLE,
    P_VERIFY,
    RETRIED,
    TOLD,
    VERIFIED_ONCE,
    Probe,
    Probes,
)
from overlay.proximity import GROWTH, estimated_size, rows_with_choice
from overlay.routing_table import UNKNOWN_RTT, RoutingTable
from overlay.wire import Message

__all__ = ["ACTIVE", "CONFIRMING", "JOINING", "LEFT", "OverlayApp", "OverlayNode"]

INF = float("inf")
_LONG_AGO = -INF  # one float object for every node's "never yet", not one each
_NOBODY: frozenset[int] = frozenset()  # the suspects of a node that suspects nobody
UNNAMED = -1  # a failure heard of without its node's id (`OverlayNode._failure_noticed`)
# Table sweeps owed to a failure seen: the one it starts, and one more a sweep interval later
# (`OverlayNode._failure_noticed`)...
SWEEPS_AFTER_FAILURE = 2
# ... or, when it came `sweep_quiet_s` to `sweep_max_wait_s` after the one before (failures
# that go on, but too sparsely to keep the sweeps coming), these many, each quiet as long again
# as the quiet before it (`OverlayNode._sweep_due_at`).
SWEEPS_AFTER_SPARSE_FAILURES = 5
MAX_JOINERS = 16  # joiners a node waits for at once (`OverlayNode._joiners`)
# ... that would be among this many nearest on a side (`_wait_for_joiner`): two, because the
# nearer one may be a crashed node not yet dropped (one let a wrong root through under churn)
JOINER_REACH = 2

# Node states.
JOINING, CONFIRMING, ACTIVE, LEFT = "joining", "confirming", "active", "left"

# Timer kinds.
(T_HEARTBEAT, T_WATCH, T_PING, T_ROUTE, T_TABLE, T_SWEEP, T_HEAL, T_JOIN, T_APP,
 T_JOINER, T_DISCOVER) = range(11)

# What a sent message is counted as.
C_MAINTENANCE, C_JOIN, C_ROUTE = range(3)

JOIN_ATTEMPTS = 4  # join requests before a node with seeds starts a ring of its own
MAX_SEARCHES = 64  # proximity row exchanges awaiting an answer
SEARCH_WAIT_S = 10.0  # ... each for this long at most
MAX_OPENED = 16  # links remembered as just opened (`link_up`), the oldest forgotten first
HELLO_NO_RTT = 0.0

_NULL_APP = OverlayApp()

# A routed message (or a `send_acked` one) awaiting its acknowledgement:
# (message, next hop, attempt, avoided hops, sent at); attempt 0 is a `send_acked`.
_Pending = tuple[Route | Direct, int, int, tuple[int, ...], float]
# A search for nearer table entries (`overlay.proximity`): (row, row exchanges left, category
# of its messages, candidates probed per answer at most).
_Search = tuple[int, int, int, int]
# A routed message held for a suspected root: (message, avoided hops, attempt, held since).
_Held = tuple[Route, tuple[int, ...], int, float]
# The hops awaiting an acknowledgement of every node that awaits none: one shared empty dict,
# never written (`_await_ack` gives a node its own first). An empty dict costs 64 bytes, and
# the simulator holds thousands of nodes, nearly all of them awaiting nothing at any moment.
_NO_ROUTES: dict[int, _Pending] = {}


def _rtt_us(rtt: float) -> int:
    """A round trip as the wire carries it: microseconds, plus 1 (0: not measured)."""
    return 0 if rtt == UNKNOWN_RTT else min(int(rtt * 1e6) + 1, MAX_RTT_US)


def _greeting_wins(rtt: float, cell_us: int) -> bool:
    """Would our greeting, with round trip `rtt`, win the cell a `Pong.cell_us` describes?"""
    return not cell_us or rtt * 1e6 + 1 < cell_us


@cache
def _heal_sweep(cfg: OverlayConfig) -> Sweep:
    """The sweep settings of `cfg`: one immutable object for every node sharing the config."""
    return Sweep(cfg.heal_burst, cfg.heal_burst_window_s, cfg.heal_sweep_s, cfg.heal_sweep_for_s)


class OverlayNode:
    __slots__ = (
        "id", "config", "rng", "app", "out", "failed", "now", "state", "leaf", "table", "sent",
        "given_up",
        "next_deadline", "later_wake", "dropped", "_timers", "_seq", "_probes", "_routes",
        "_suspects", "_lost", "_nbs", "_heard", "_seeds", "_join_tries", "_table_cursor", "_sweep",
        "_sweep_fresh", "_sweeps_owed", "_failure_seen", "_lone", "_sweep_all", "_sweep_wake",
        "_last_sweep", "_last_merge", "_last_greeting", "_heal_at", "_ping_timeouts",
        "_route_timeouts", "_ping_timeout", "_route_timeout", "_ack_delay", "_held", "_held_count",
        "_probe_loss",
        "_beats", "_beat_count", "_prox_asked", "_prox_rounds", "_prox_size", "_calm_since",
        "_opened", "_joiners", "_ungreeted", "_discovery",
    )

    def __init__(
        self,
        node_id: int,
        rng: random.Random,
        config: OverlayConfig | None = None,
        app: OverlayApp | None = None,
    ) -> None:
        self.id = node_id
        self.config = config or OverlayConfig()
        self.rng = rng
        self.app = app or _NULL_APP
        self.out: list[tuple[int, Message]] = []
        # Peers declared failed or gone since the driver last looked, for a driver that keeps
        # connections (it closes theirs: see `overlay.link_policy`); None: not collected.
        self.failed: list[int] | None = None
        # Peers a hop was given up on (no acknowledgement in time) since the driver last
        # looked, for the same drivers: the link policy may reset a link still holding that
        # hop, so it is never delivered after the message went another way; None: not
        # collected.
        self.given_up: list[int] | None = None
        self.now = 0.0
        self.state = JOINING
        self.leaf = LeafSet(node_id, self.config.leaf_size)
        self.table = RoutingTable(node_id)
        # By C_* category; packed, since each count past 256 would be an int object of its own.
        self.sent = array("Q", (0, 0, 0))
        self.dropped = 0  # routed messages given up after every attempt
        self._timers: list[tuple[float, int, int]] = []
        # When the driver must call `handle_timer` next: a plain attribute, not a property,
        # because the simulator reads it after every input of every node.
        self.next_deadline = INF
        # The driver's own note, never read here: a wake-up it queued for an earlier deadline
        # that an input then moved sooner, still queued (`simulations.engine`).
        self.later_wake = INF
        self._seq = 0
        cfg = self.config
        self._probes = Probes(cfg.max_pending_pings)
        # By the sequence number the ack will carry; `_NO_ROUTES` while empty.
        self._routes: dict[int, _Pending] = _NO_ROUTES
        # A set while anyone is suspected; the one shared empty frozenset otherwise (an empty
        # set costs 216 bytes, and the simulator holds thousands of nodes suspecting nobody).
        self._suspects: set[int] | frozenset[int] = _NOBODY
        # Routed messages whose root, by our leaf set, is a suspect: they wait for the probe's
        # verdict (`_hold`), by suspect; `_held_count` of them in all. None while none wait.
        self._held: dict[int, list[_Held]] | None = None
        self._held_count = 0
        self._lost: LostPeers | None = None  # made when the first peer is lost
        # The immediate neighbours (as `LeafSet.neighbours` gives them) and, for each, when it
        # was last heard from and its last heartbeat (None: none yet). Two short lists beside
        # the tuple, not two dicts: 216 bytes against 448, for every node.
        self._nbs: tuple[int, ...] = ()
        self._heard: list[float] = []
        self._beats: list[float | None] = []
        self._beat_count = 0  # heartbeat periods so far: every `right_beat_periods`-th goes right
        self._seeds: tuple[int, ...] = ()
        self._join_tries = 0
        self._discovery: Discovery | None = None  # looking for a near node to join through
        self._table_cursor = 0
        self._sweep: list[int] | None = None
        # The entries a sweep found fresh, to look at again (`_on_sweep_timer`).
        self._sweep_fresh: list[int] | None = None
        self._sweeps_owed = 0  # sweeps still owed to the failures seen (`_failure_noticed`)
        self._failure_seen = _LONG_AGO  # when a failure was last seen or heard of
        # The failure a calm ended with, while no other is seen (`_failure_noticed`): its
        # node, or UNNAMED (told of by a neighbour's heartbeat); None when failures go on.
        self._lone: int | None = None
        self._sweep_all = False  # the sweep probes even the entries that spoke lately
        self._sweep_wake = INF  # when the timer set for an owed sweep fires
        self._last_sweep = _LONG_AGO
        self._last_merge = _LONG_AGO
        self._last_greeting = _LONG_AGO  # when our leaf set was last told we are back
        self._heal_at = INF
        self._ping_timeouts = Deadlines()  # probes in flight, by sequence number
        self._route_timeouts = Deadlines()  # hops awaiting their acknowledgement
        self._ping_timeout = cfg.probe_timeout_s  # both follow the acknowledgement delay
        self._route_timeout = cfg.route_ack_timeout_s
        self._ack_delay = AckDelay()
        self._probe_loss = ProbeLoss(cfg.probe_false_alarm, cfg.max_probe_attempts)
        # Proximity search (`overlay.proximity`): the row exchanges awaiting their answer
        # (peer -> (search, asked at)), and the follow-up exchanges each row may still make
        # (a row whose answer made a node nearest asks that node next). Most nodes, most of
        # the time, search nothing: the asks are None while there are none, and the searches
        # with rounds left (at most one a row, a row or two) a tuple, not a dict of 224 bytes.
        self._prox_asked: dict[int, tuple[_Search, float]] | None = None
        self._prox_rounds: tuple[_Search, ...] = ()
        self._prox_size = 0.0  # the ring's estimated size when the table was last searched
        # Since when this node's ring has looked calm (`_table_period`, `_failure_noticed`):
        # its activation, moved on as its table improves (`_adopted`).
        self._calm_since = _LONG_AGO
        # Peers whose link the driver reported just opened, and when (`link_up`); None while
        # none was (the simulator holds thousands of nodes that never dial across a cut).
        self._opened: dict[int, float] | None = None
        # Joiners that probed us as a member of their leaf set and would be among our
        # `JOINER_REACH` nearest on a side, and when they last did (`_wait_for_joiner`); None
        # while there are none. No timer keeps it: an entry goes at the joiner's `Hello`, or
        # as stale when the next joiner comes.
        self._joiners: dict[int, float] | None = None
        # While joining: the peers whose answers said our greeting would not win their table
        # cell (`Pong.cell_us`), greeted at activation only if they are leaf-set members.
        # None when there are none, and once active.
        self._ungreeted: set[int] | None = None

    # ===================================================================== driver interface
    @property
    def active(self) -> bool:
        return self.state == ACTIVE

    def start(self, now: float, seeds: tuple[int, ...] | list[int] = ()) -> None:
        """Join the ring through `seeds` (node ids), or found a new ring if there are none."""
        self.now = now
        self._seeds = tuple(s for s in seeds if s != self.id)
        if not self._seeds:
            self._activate()
        elif self.config.discovery_s > 0:
            self._discover()
        else:
            self._send_join()

    def receive(self, src: int, msg: Message, now: float) -> None:
        self.now = now
        if self.state == LEFT:
            return
        nbs = self._nbs
        if src in nbs:
            self._heard[nbs.index(src)] = now
        handler = _HANDLERS.get(type(msg))
        if handler is None:
            self.app.receive_direct(src, msg)
        else:
            handler(self, src, msg)

    def handle_timer(self, now: float) -> None:
        self.now = now
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, kind, arg = heappop(timers)
            _TIMERS[kind](self, arg)
        self.next_deadline = timers[0][0] if timers else INF

    def link_up(self, peer: int, now: float) -> None:
        """A dial to `peer` has connected only now (its SYN retransmitted across a cut, a slow
        handshake): the hops written into it while it dialled leave now, so their wait for an
        acknowledgement starts now (`_route_expired`). Counted from when they were written, a
        hop whose dial connected just before its timeout was delivered, and sent another way
        too when its acknowledgement came just after: after a 12 s partition of 20 nodes, one
        request in 24 runs ran twice. A probe of the peer in flight was written into the
        dial too: its round trip counts from now, not from before the connection and its
        handshake (a probe after an idle link closed would make the peer look far), and its
        timeout too (`_ping_expired`)."""
        self.now = now
        probe = self._probes.by_peer.get(peer)
        if probe is not None and probe.sent_at < now:
            probe.sent_at = now
            probe.dialled = True
        if not any(pending[1] == peer for pending in self._routes.values()):
            return
        opened = self._opened
        if opened is None:
            opened = self._opened = {}
        opened.pop(peer, None)
        opened[peer] = now
        if len(opened) > MAX_OPENED:
            del opened[next(iter(opened))]

    def link_lost(self, peer: int, now: float) -> None:
        """The connection with `peer` ended without its goodbye (a `LinkClose` or a `Leave`):
        reset, or closed at its end. Most often its process died, and the kernel closed its
        connections at once; the leaf set would learn it only from a silence of heartbeats
        (12.5 s), a tree child from its parent's late beats (5.5-8 s). A peer we hold is
        suspected now (routes avoid it, a root it would be waits) and verified as a death we
        were told of (`P_VERIFY`: one probe where nothing is lost): dead, it is dropped, and
        our leaf set told if it was our neighbour; alive (it closed the connection for a
        reason of its own), it answers and nothing changes. A peer we do not hold is left to
        the hops and beats that would find it dead: probed by every node that ever talked to
        it, each verdict owing sweeps, a churning ring of 1,000 nodes on connections sent 1.61
        maintenance messages per node per second, 1.47 so, 1.41 without any of this. The
        application hears of every such peer (`OverlayApp.link_lost`): it knows whom it
        cares for."""
        self.now = now
        if self.state != ACTIVE:
            return
        if peer in self.leaf or peer in self.table:
            self._suspect(peer, P_VERIFY)
        self.app.link_lost(peer)

    def leave(self, now: float) -> None:
        """Depart gracefully: tell every known peer, then go silent."""
        self.now = now
        if self.state == ACTIVE:
            for peer in set(chain(self.leaf.members(), self.table.entries())):
                self._send(peer, Leave(), C_MAINTENANCE)
        self.state = LEFT
        self._timers.clear()
        self.next_deadline = INF
        self._ping_timeouts.reset()
        self._route_timeouts.reset()
        self._routes = _NO_ROUTES
        self._probes.clear()
        self._held = None
        self._held_count = 0

    # ====================================================================== app interface
    def set_time(self, now: float) -> None:
        """Drivers call this before an application input (the messaging layer's calls read
        the node's clock)."""
        self.now = now

    # Called from upcalls (the clock is current) or by the driver with `now`.
    def route(self, key: int, payload: Message, now: float | None = None) -> None:
        """Send `payload` toward the live node numerically closest to `key`."""
        if now is not None:
            self.now = now
        self._route_step(Route(key, 0, self.id, 0, payload))

    def send(self, peer: int, payload: Message, now: float | None = None) -> None:
        """Send `payload` straight to `peer` (delivered by its app's `receive_direct`)."""
        if now is not None:
            self.now = now
        self._send(peer, payload, C_ROUTE)

    def schedule(self, when: float, token: int) -> None:
        """Wake the app at `when` (its `timer(token)` upcall); part of `next_deadline`."""
        self._at(when, T_APP, token)

    def is_root(self, key: int) -> bool:
        """Would a message routed toward `key` be delivered here? (With consistent roots,
        suspects make no difference: a message for a suspected root waits for the verdict.)"""
        if self.state != ACTIVE:
            return False
        if self.app.consistent_roots:
            return routing_rule.next_hop(self.leaf, self.table, key) is None
        return self._next_hop_around(key) is None

    def root_in_doubt(self, key: int) -> bool:
        """This node is the root for `key` only because the node that would be is suspected
        (it did not acknowledge and is being probed), or a joiner nearer `key` probed us and
        has not greeted us yet (it becomes the root once active): roots may be about to move."""
        suspects = self._suspects
        if suspects and routing_rule.first_choice(self.leaf, self.table, key) in suspects:
            return True
        return self._joiners is not None and self._nearest_joiner(key, ()) is not None

    def send_acked(self, peer: int, payload: Message, now: float | None = None) -> None:
        """Like `send`, but the peer acknowledges it; without an acknowledgement in time the
        app hears `undeliverable(peer, payload)` and the peer is suspected and probed."""
        if now is not None:
            self.now = now
        self._seq += 1
        seq = self._seq
        msg = Direct(seq, payload)
        self._send(peer, msg, C_ROUTE)
        self._await_ack(seq, (msg, peer, 0, (), self.now))

    def next_hop(self, key: int, avoid: Collection[int] = ()) -> int | None:
        """Where a message for `key` goes from here: Pastry's routing rule
        (`overlay.routing_rule`) around the peers in `avoid` and the suspected ones, except that
        the root by this node's state is never routed around (a message for it waits for the
        verdict on it: `_route_step`; unless the app chose otherwise,
        `OverlayApp.consistent_roots`); None when this node is the root for `key`."""
        nh = self._next_hop_around(key, avoid)
        if nh is None and (avoid or self._suspects) and self.app.consistent_roots:
            return routing_rule.next_hop(self.leaf, self.table, key)
        return nh

    def _next_hop_around(self, key: int, avoid: Collection[int] = ()) -> int | None:
        """Pastry's routing rule, avoiding `avoid` and the suspected peers whatever they are."""
        suspects = self._suspects
        if suspects:
            avoid = frozenset(avoid) | suspects
        return routing_rule.next_hop(self.leaf, self.table, key, avoid)

    # ========================================================================== internals
    def _send(self, dest: int, msg: Message, category: int) -> None:
        self.out.append((dest, msg))
        self.sent[category] += 1

    def _at(self, when: float, kind: int, arg: int = 0) -> None:
        heappush(self._timers, (when, kind, arg))
        if when < self.next_deadline:
            self.next_deadline = when

    def _jitter(self, period: float) -> float:
        return period * self.rng.uniform(0.75, 1.25)

    def _expect(self, deadlines: Deadlines, timeout: float, kind: int, key: int,
                since: float | None = None) -> None:
        """Start `key`'s timeout (counted from `since`, or now); set the one timer of
        `deadlines` if none comes early enough."""
        at = deadlines.add((self.now if since is None else since) + timeout, key)
        if at is not None:
            self._at(at, kind, deadlines.generation)

    # ----------------------------------------------------------------------------- join
    def _discover(self) -> None:
        """Look for a node near us to join through (`overlay.discovery`): first probe the
        first seed, asking for its leaf set."""
        seed = self._seeds[0]
        self._discovery = Discovery(seed)
        self._discovery_probe((seed,), want_leaf=True)
        self._at(self.now + self.config.discovery_s, T_DISCOVER)

    def _discovery_probe(self, nodes: list[int] | tuple[int, ...], want_leaf: bool = False
                         ) -> None:
        disc = self._discovery
        assert disc is not None
        for node in nodes:
            self._ping(node, P_CANDIDATE, want_leaf=want_leaf, category=C_JOIN)
            if node in self._probes.by_peer:  # (read afresh: the first probe replaces it)
                disc.pending.add(node)
        if not disc.pending:
            self._discovery_next()

    def _discovery_heard(self, src: int, rtt: float, leaf: tuple[int, ...] | None) -> None:
        """A discovery probe's answer (`rtt` INF: from a node not active)."""
        disc = self._discovery
        assert disc is not None
        if rtt < INF:
            disc.measured(src, rtt)
        else:
            disc.lost(src)
        if leaf:
            self._discovery_probe(disc.plan(src, leaf, self.config.leaf_size))
        elif not disc.pending:
            self._discovery_next()

    def _discovery_next(self) -> None:
        """Ask the nearest node found for the next row, or join through it."""
        disc = self._discovery
        assert disc is not None
        row = disc.next_row()
        if row is None:
            self._discovered()
        else:
            self._send(disc.best, RowRequest(row), C_JOIN)

    def _on_discovery_timer(self, _: int) -> None:
        if self._discovery is not None:
            self._discovered()

    def _discovered(self) -> None:
        """Join through the nearest node found (the seeds as given after it)."""
        disc = self._discovery
        assert disc is not None
        found = disc.best
        self._discovery = None
        self._seeds = (found, *(s for s in self._seeds if s != found))
        self._send_join()

    def _send_join(self) -> None:
        seed = self._seeds[self._join_tries % len(self._seeds)]
        self._join_tries += 1
        self._send(seed, JoinRequest(self.id), C_JOIN)
        backoff = min(2 ** (self._join_tries - 1), 8)
        self._at(self.now + self.config.join_timeout_s * backoff, T_JOIN, self._join_tries)

    def _on_join_timer(self, tries: int) -> None:
        if self.state != JOINING or tries != self._join_tries:
            return  # answered, or a later attempt has its own timer
        if self._join_tries >= JOIN_ATTEMPTS * len(self._seeds):
            # Nobody answers: found a ring of our own and keep trying the seeds as lost peers,
            # so that rings started apart merge once the seeds are reachable.
            seeds = self._seeds
            self._activate()
            for seed in seeds:
                self._remember_lost(seed)
            return
        self._send_join()

    def _on_join_request(self, src: int, msg: JoinRequest) -> None:
        if self.state == ACTIVE:
            self._route_step(Route(msg.joiner, 0, self.id, 0, msg))

    def _answer_join(self, joiner: int, final: bool) -> None:
        """Hand the joiner the table rows it can use and, at the root, the leaf set.

        A node sharing l digits with the joiner sends rows l-1 and l: successive route hops
        share more digits, so each of the joiner's rows gets candidates from two nodes, enough
        to choose the nearer one without probing every row of every hop.
        """
        upto = shared_prefix_len(self.id, joiner)
        nodes = [n for r in range(max(upto - 1, 0), upto + 1) for n in self.table.row(r)]
        nodes.append(self.id)
        leaf = self.leaf.members() if final else None
        self._send(joiner, JoinReply(tuple(nodes), leaf), C_JOIN)

    def _on_join_reply(self, src: int, msg: JoinReply) -> None:
        self._heard_active(src)
        if msg.leaf is not None and self.state == JOINING:
            # The root's leaf set becomes our tentative one; each member must answer a probe
            # (and show us its own leaf set) before we go active. Holding them tentatively
            # means only genuinely closer nodes named in the answers are probed next.
            self.state = CONFIRMING
            for node in chain(msg.leaf, (src,)):
                if node != self.id:
                    self.leaf.add(node)
                    self._ping(node, P_CONFIRM, want_leaf=True)
            self._leaf_changed()
        if msg.leaf is not None:
            self._learn(msg.leaf)
        self._learn(msg.nodes, measure=self.state != ACTIVE)
        self._maybe_activate()

    def _maybe_activate(self) -> None:
        if self.state == CONFIRMING and not self._probes.confirming():
            if not self.leaf.members() and self._seeds:
                # Not one tentative member answered: activating now would found a ring of
                # one beside the real one. Join again (the answers were lost, most likely).
                self.state = JOINING
                self._send_join()
                return
            self._activate()

    def start_formed(self, now: float, leaf: list[int], entries: list[tuple[int, float]]) -> None:
        """Be active at once in a ring formed without joins: `leaf` our leaf set's members,
        `entries` our routing table's nodes with their round trips (a simulator's shortcut to
        a ring at scale, `simulations.formed`). Nobody is greeted: every node starts this way,
        from the same truth. The table counts as searched: a search comes again only when
        the ring grows `proximity.GROWTH` times."""
        self.now = now
        for peer in leaf:
            self.leaf.add(peer)
        for peer, rtt in entries:
            self.table.consider(peer, rtt, now)
        self._prox_size = self._ring_size()
        self._go_active()
        self._leaf_changed()
        self.app.activated()

    def _go_active(self) -> None:
        """The state and the timers of an active node."""
        self.state = ACTIVE
        cfg, now, rng = self.config, self.now, self.rng
        self._calm_since = now
        self._at(now + rng.uniform(0, cfg.heartbeat_s), T_HEARTBEAT)
        self._at(now + cfg.silence_s, T_WATCH)
        self._at(now + rng.uniform(0, cfg.table_probe_s), T_TABLE)

    def _activate(self) -> None:
        self._go_active()
        cfg, table, leaf = self.config, self.table, self.leaf
        # Every leaf-set member must take us; a table entry whose answer said it holds a
        # nearer node than us for our cell would not, and is not greeted.
        ungreeted, self._ungreeted = self._ungreeted or (), None
        for peer in set(chain(leaf.members(), table.entries())):
            if peer in ungreeted and peer not in leaf:
                continue
            rtt = table.rtt_of(peer)
            self._send(peer, Hello(HELLO_NO_RTT if rtt == UNKNOWN_RTT else rtt), C_JOIN)
        if self._seeds:  # the second phase of a join: search the rows with a choice
            self._search_table(C_JOIN, cfg.proximity_join_rounds, cfg.proximity_join_probes)
            self._seeds = ()  # an active node never joins again
        self._leaf_changed()
        self.app.activated()

    # --------------------------------------------------------------------- learning peers
    def _heard_active(self, peer: int, rtt: float | None = None) -> bool:
        """`peer` spoke to us directly and is active: it is alive; place it where it fits.
        Returns True when it took a routing-table cell."""
        if peer == self.id:
            return False
        lost = self._lost
        revived = False
        if lost and peer in lost:
            del lost[peer]
            revived = True
        suspected = bool(self._suspects) and self._unsuspect(peer)
        if self.leaf.add(peer):
            self._leaf_changed()
        joiners = self._joiners
        if joiners is not None and peer in joiners:
            self._forget_joiner(peer)  # greeted: what waited for it goes to it now
            # A joiner that probed us as one of our nearest is active now. A node that joined
            # beside it meanwhile greeted us, not it: two adjacent nodes joining at once each
            # missed the other until a slow heartbeat told them, and a lookup for a key between
            # them could end at the wrong one (a `churn` run of 1,000 nodes did so 2 s after
            # the second join). Our leaf set, as a heartbeat, has it probe whom it lacks.
            self._send(peer, self._heartbeat(), C_MAINTENANCE)
        took = self.table.consider(peer, rtt, self.now)
        if revived and self.state == ACTIVE:
            # It may have lost our side too: our leaf set tells it whom to probe, without
            # waiting for its own retries or for gossip, which reaches a right neighbour
            # only every `right_beat_periods`.
            self._send(peer, Heartbeat(self.leaf.members()), C_MAINTENANCE)
            self._merge_via(peer)
        if suspected:
            self._release(peer)
            self.app.suspect_cleared(peer)
        return took

    def _learn(self, nodes: tuple[int, ...] | list[int], measure: bool = False,
               category: int | None = None) -> None:
        """Nodes named by others: probe the ones that would improve our state.

        `measure` also probes nodes that would only compete for an occupied table cell, so
        that the nearest one wins it (a joiner does this for the rows handed to it).
        """
        leaf, table, lost, me, probes = self.leaf, self.table, self._lost, self.id, self._probes
        right, left = leaf.right, leaf.left
        fitting: Collection[int] = ()
        if self.state == ACTIVE:
            # Of a dozen nodes offered at once only the nearest few would stay: probing each
            # (after every crash, as the neighbours' heartbeats name its replacements) was the
            # largest share of a ring's candidate probes under churn. A joiner probes all it
            # is handed, to confirm its tentative leaf set (`_maybe_activate`).
            # (Peers we lost do not compete: named by a stale list, each would keep a live
            # node out, and a ring of which a tenth crashed at once took 29 s to repair, not 17.)
            fit = [n for n in nodes if leaf.fits(n) and not (lost and n in lost)]
            fitting = leaf.fitting(fit) if len(fit) > 1 else fit
        for node in nodes:
            # (`probes.by_peer` read afresh: the first probe this loop sends replaces it)
            if node in right or node in left or node == me or node in probes.by_peer:
                continue
            record = lost.get(node) if lost else None
            if record is not None:
                # A peer we lost is named alive by someone: retry it early (partition heal),
                # at most once per probe timeout (a probe in flight is in `probes.by_peer`;
                # 5 s between retries here left a small ring's trees broken 4-7 s after a heal).
                if record.retry_early(self.now, self.config.probe_timeout_s):
                    self._ping(node, P_HEAL)
                continue
            if node in fitting or (self.state != ACTIVE and leaf.fits(node)):
                self._ping(node, P_CONFIRM if self.state == CONFIRMING else P_CANDIDATE,
                           want_leaf=self.state == CONFIRMING)
            elif table.cell_free(node) or (measure and node not in table):
                self._ping(node, P_CANDIDATE, category=category)

    def _leaf_changed(self) -> None:
        nbs = self.leaf.neighbours()
        old = self._nbs
        if old != nbs:
            heard, beats = self._heard, self._beats
            self._heard = [heard[old.index(nb)] if nb in old else self.now for nb in nbs]
            self._beats = [beats[old.index(nb)] if nb in old else None for nb in nbs]
            self._nbs = nbs
        if self.state == ACTIVE:
            if self._ring_size() >= GROWTH * self._prox_size:
                # The ring grew: more nodes to choose from.
                cfg = self.config
                self._search_table(C_MAINTENANCE, cfg.proximity_growth_rounds,
                                   cfg.proximity_growth_probes)
            self.app.leafset_changed()

    # ------------------------------------------------------------------------------ probes
    def _ping(self, peer: int, purpose: int, want_leaf: bool = False, attempt: int = 1,
              category: int | None = None, want_row: int = 0) -> None:
        if peer == self.id:
            return
        probes = self._probes
        probe = probes.by_peer.get(peer)
        if probe is not None:
            if purpose > probe.purpose:
                probe.purpose = purpose
            if want_leaf and not probe.want_leaf:
                # The probe in flight did not ask for the leaf set: ask again under the same
                # sequence number; the answer without it is then not taken as the reply.
                probe.want_leaf = True
                self._send(peer, Ping(probe.seq, True, self.state == ACTIVE), C_MAINTENANCE)
            return
        if probes.full():
            return
        self._seq += 1
        seq = self._seq
        probes.add(Probe(seq, peer, self.now, purpose, attempt, want_leaf))
        if category is None:
            category = C_MAINTENANCE if self.state == ACTIVE else C_JOIN
        self._send(peer, Ping(seq, want_leaf, self.state == ACTIVE, want_row), category)
        self._expect(self._ping_timeouts, self._ping_timeout, T_PING, seq)

    def _on_ping(self, src: int, msg: Ping) -> None:
        if msg.active:
            self._heard_active(src)
        elif msg.want_leaf and self.state == ACTIVE and self.leaf.next_to(src, JOINER_REACH):
            self._joining(src)
        leaf = self.leaf.members() if msg.want_leaf else None
        category = C_MAINTENANCE if msg.active else C_JOIN
        nodes, rtts = self._row_with_rtts(msg.want_row - 1) if msg.want_row else ((), ())
        self._send(src, Pong(msg.seq, self.state == ACTIVE, leaf, nodes, rtts,
                             self._cell_us(src)), category)

    def _cell_us(self, peer: int) -> int:
        """`Pong.cell_us` for `peer`: the round trip its greeting would have to beat."""
        _, rtt = self.table.incumbent(peer)
        return 0 if rtt == UNKNOWN_RTT or self.leaf.fits(peer) else _rtt_us(rtt)

    def _on_pong(self, src: int, msg: Pong) -> None:
        probe = self._probes.answer(msg.seq, src, carries_leaf=msg.leaf is not None)
        if probe is None:
            lost = self._lost
            if msg.active and lost and src in lost:
                # The late answer of a peer we gave up (it waited in a connection across a
                # cut, delivered at the heal): it is back, as if it had answered a retry.
                self._heard_active(src)
            return
        if not self._probes:
            self._ping_timeouts.clear()
        if probe.purpose in RETRIED:
            # The probes before this one were lost, and so was the hop a suspect missed.
            self._probe_loss.exchanges(probe.attempt - 1 + (probe.purpose == P_SUSPECT))
        if msg.active:
            rtt = self.now - probe.sent_at
            if self._heard_active(src, rtt) and self.state == ACTIVE:
                self._adopted(src, rtt, msg.cell_us)
            elif self.state != ACTIVE and not _greeting_wins(rtt, msg.cell_us):
                ungreeted = self._ungreeted
                if ungreeted is None:
                    ungreeted = self._ungreeted = set()
                if len(ungreeted) < self.config.max_pending_pings:  # (bounded: greeted if not)
                    ungreeted.add(src)
        elif self._unsuspect(src):
            self._release(src)
        disc = self._discovery
        if disc is not None and src in disc.pending:
            # (Only the seed was asked for its leaf set: a leaf set no probe asked for plans
            # nothing, so no answer can start the search over with probes of its own.)
            self._discovery_heard(src, self.now - probe.sent_at if msg.active else INF,
                                  msg.leaf if probe.want_leaf else None)
            return
        if msg.leaf:
            self._learn(msg.leaf)
        if msg.row and self.state == ACTIVE:
            self._probe_nearer(msg.row, msg.rtts, C_MAINTENANCE, self.config.proximity_probes,
                               self.config.proximity_margin)
        if probe.purpose == P_CONFIRM:
            self._maybe_activate()

    def _on_ping_timer(self, generation: int) -> None:
        self._drain(self._ping_timeouts, generation, T_PING, self._ping_expired)

    def _drain(self, deadlines: Deadlines, generation: int, kind: int,
               expired: Callable[[int], None]) -> None:
        """The timer of `deadlines` fired: set the timer for the rest, handle what is due."""
        if generation != deadlines.generation:
            return  # set before `reset`
        due, at = deadlines.expire(self.now)
        if at is not None:
            self._at(at, kind, generation)
        for seq in due:
            expired(seq)

    def _ping_expired(self, seq: int) -> None:
        probe = self._probes.by_seq.get(seq)
        if probe is None:
            return
        if probe.dialled and self.now < probe.sent_at + self._ping_timeout:
            # Written into a dial that connected late (`link_up`): the peer has had the probe
            # only since the connect. Counted from the write, a probe queued behind a closing
            # link (up to `LinkPolicy.close_wait_s`) or a SYN retransmitted across a cut ran
            # out before its peer could answer, and a live peer was probed again, or declared
            # failed, for the time the dial took.
            self._expect(self._ping_timeouts, self._ping_timeout, T_PING, seq,
                         since=probe.sent_at)
            return
        self._probes.expire(seq)
        peer, purpose = probe.peer, probe.purpose
        disc = self._discovery
        if disc is not None and peer in disc.pending:
            disc.lost(peer)
            if not disc.pending:
                self._discovery_next()
        floor = 1 if purpose in VERIFIED_ONCE else self.config.probe_attempts
        if purpose in ONE_MORE:
            floor += 1
        if purpose in RETRIED and probe.attempt < self._probe_loss.attempts(floor):
            self._ping(peer, purpose, probe.want_leaf, probe.attempt + 1)
        elif purpose in FATAL:
            self._declare_failed(peer, purpose)
        elif purpose == P_CONFIRM:
            if self.leaf.remove(peer):
                self._leaf_changed()
            self._maybe_activate()

    # ------------------------------------------------------------------ failure handling
    def _declare_failed(self, peer: int, purpose: int) -> None:
        """`peer` missed its probes. Who is told depends on how it was found:
        - a leaf member found by its neighbour (or by a lost hop): the leaf set must drop it,
          and the table entries are told too, which makes them sweep their tables;
        - a table entry found by a probe: nobody. Its other holders are not known, and the
          leaf set told as an alarm was a seventh of all maintenance messages under churn
          at 1,000 nodes (each holder that found a crashed node told 16 nodes, most of which
          did not hold it); nodes learn that failures go on from the notices above and from
          their neighbours' heartbeats (`_failure_noticed`);
        - our immediate neighbour verified after a notice: the leaf set too. The detector is
          the dead node's left neighbour, whose leaf set lacks the holder farthest right of
          it; we, its right neighbour, have that one (without this it found out only from the
          slow heartbeat of its left neighbour, 16.7 s after the crash);
        - any other peer verified after a notice: nobody (the detector told everyone already).
        """
        old_nbs = self._nbs
        neighbour = peer in old_nbs
        large_ring = self.leaf.complete()  # (before the loss leaves a side short)
        # (For a table probe's verdict: when it last spoke, read before it is forgotten.)
        silent = self.table.silent_for(peer, self.now) if purpose == P_TABLE else None
        in_leaf, cell = self._forget(peer)
        if not in_leaf and cell is None:
            if purpose in TOLD:
                self._failure_noticed(self.now, node=peer)  # a failure we were told of
            elif purpose == P_SUSPECT:
                # A peer the app sent to directly (`send_acked`: a tree parent, a walk step)
                # and in none of our state: the app is told all the same, or it would keep a
                # dead tree parent until the tree's own silence timeout.
                self._gone(peer)
            self._release(peer)
            return
        # A death others told us of is retried once, not for an hour (`LostPeers.remember`);
        # a table entry outside the leaf set only when the record is swept (a partition) or
        # when someone names it alive: its leaf-set neighbours found it dead too, and retry it
        # (under churn at 1,000 nodes every table holder of a crashed node retried it once:
        # 0.08 probes per node per second). Kept in the record all the same, so that a heal
        # brings it back into the table: dropped, a ring of 500 nodes split in two routed with
        # a delay stretch of 1.72 after the heal, against 1.58 kept. Only in a ring larger
        # than a leaf set: in a small one, a peer across a cut is retried by few nodes, and
        # fewer retrying it lost events on real processes (2 groups of 2 nodes: events
        # published 5 s after the heal, in 2 runs of about 6).
        self._remember_lost(peer, told=purpose in TOLD and large_ring,
                            scheduled=not (purpose == P_TABLE and not in_leaf and large_ring))
        told: tuple[int, ...] | set[int] = ()
        table_told = in_leaf and purpose in (P_NEIGHBOUR, P_SUSPECT)
        if table_told:
            told = set(chain(self.leaf.members(), self.table.entries()))
        elif purpose in TOLD and neighbour:
            told = self.leaf.members()
        for member in told:
            self._send(member, Departed(peer), C_MAINTENANCE)
        self._repair(in_leaf, cell)
        if neighbour:
            # Its successor on that side is our neighbour now, and was not sending us
            # heartbeats: checked at once, not after a silence counted from now. Behind a
            # partition the next node is as likely cut off, and each in a run of cut-off
            # nodes took a silence and two probes more (6 nodes split 3/3 in memory: every
            # leaf set short of the other side after 14.5, 27.0 or 39.5 s, by the run).
            for nb in self._nbs:
                if nb not in old_nbs:
                    self._ping(nb, P_NEIGHBOUR)
        if purpose != P_TABLE:
            self._failure_noticed(self.now, node=peer)
        elif not self._sweeps_owed:
            # A dead entry found by the periodic probe died after it last spoke, when exactly
            # nobody knows: counted as a failure now, it put off every sweep it was told to.
            # One a sweep finds is no news at all: it died before the failures that made the
            # sweep owed.
            self._failure_noticed(self.now - (silent or 0), node=peer)
        if cell is not None and not table_told and (purpose == P_HELD or self._lone == peer):
            self._tell_holders(peer)
        self._gone(peer)
        self._release(peer)

    def _tell_holders(self, peer: int) -> None:
        """A lone failure (`_failure_noticed`) of a node our table held, or one a holder told
        us of: tell our table entries, which are likely to hold it too, and our leaf set; each
        that does verifies it and tells its own (`Departed.held`).

        Nobody else tells a dead node's table holders: the detector tells its own leaf set
        and table, which at 1,000 nodes reach about 9 of its 30 holders. Under rare failures
        the others kept it until their periodic probe came round to it, up to 80 minutes
        later, or until a sweep found it, and the sweeps of the ~200 nodes told of a crash
        found about one holder in 40 for 36,000 messages. Passed on among holders' tables, a
        notice reaches 29 of the 30 for about 1,000 (`scripts/holder_reach.py`); the leaf
        sets (nodes anywhere in the network) reach some of the holders no other holder's
        table names. While failures go on, nobody starts one: each would cost more than the
        sweeps that then run."""
        notice = Departed(peer, True)
        for entry in set(chain(self.leaf.members(), self.table.entries())):
            self._send(entry, notice, C_MAINTENANCE)

    def _drop(self, peer: int) -> None:
        """Forget a peer that left gracefully."""
        in_leaf, cell = self._forget(peer)
        self._repair(in_leaf, cell)
        if in_leaf or cell is not None:
            self._gone(peer)
        self._release(peer)

    def _gone(self, peer: int) -> None:
        """Tell the layer above, and the driver, that `peer` is no longer part of our view."""
        self.app.peer_failed(peer)
        if self.failed is not None:
            self.failed.append(peer)

    def _forget(self, peer: int) -> tuple[bool, tuple[int, int] | None]:
        """Take `peer` out of our state: (was it in the leaf set, the table cell it held)."""
        in_leaf = self.leaf.remove(peer)
        cell = self.table.remove(peer)
        self._unsuspect(peer)
        return in_leaf, cell

    def _unsuspect(self, peer: int) -> bool:
        """Suspect `peer` no more; returns whether it was suspected."""
        suspects = self._suspects
        if peer not in suspects:
            return False
        if len(suspects) == 1:
            self._suspects = _NOBODY
        else:
            assert isinstance(suspects, set)  # only the empty one is shared
            suspects.discard(peer)
        return True

    def _repair(self, in_leaf: bool, cell: tuple[int, int] | None) -> None:
        """Refill what losing a peer left short: its side of the leaf set, its table cell."""
        if in_leaf:
            self._leaf_changed()
            self._repair_leaf()
        if cell is not None:
            self._repair_cell(*cell)

    def _repair_leaf(self) -> None:
        """Ask the farthest member of a short side for its leaf set."""
        leaf = self.leaf
        for side in (leaf.left, leaf.right):
            if len(side) < leaf.half and side:
                self._ping(side[-1], P_CANDIDATE, want_leaf=True)

    def _repair_cell(self, row: int, col: int) -> None:
        """Pastry's lazy repair: a node in the same row (or a deeper one) has our cell's
        candidates in its own row `row`."""
        table = self.table
        for r in range(row, table.rows):
            peers = table.row(r)
            if peers:
                self._send(self.rng.choice(peers), RowRequest(row), C_MAINTENANCE)
                return

    def _on_row_request(self, src: int, msg: RowRequest) -> None:
        self._send(src, RowReply(msg.row, *self._row_with_rtts(msg.row)), C_MAINTENANCE)

    def _row_with_rtts(self, row: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Our table row `row` and our round trip to each of its nodes (microseconds, 0 if
        not measured), for a `RowReply` or a `Pong`."""
        nodes: list[int] = []
        rtts: list[int] = []
        for node, rtt in self.table.row_rtts(row):
            nodes.append(node)
            rtts.append(_rtt_us(rtt))
        return tuple(nodes), tuple(rtts)

    def _on_row_reply(self, src: int, msg: RowReply) -> None:
        disc = self._discovery
        if disc is not None and disc.asked == src and disc.awaiting:
            disc.awaiting = False
            self._discovery_probe(disc.candidates(msg.nodes, msg.rtts, ROW_PROBES))
            return
        asked_by = self._prox_asked
        asked = asked_by.get(src) if asked_by is not None else None
        if asked_by is not None and asked is not None and asked[0][0] == msg.row:
            del asked_by[src]
            if not asked_by:
                self._prox_asked = None
            row, _, category, probes = asked[0]
            if not self._probe_nearer(msg.nodes, msg.rtts, category, probes):
                # Nothing to probe, so no nearer node to go on from: the row's search ends.
                self._prox_rounds = tuple(s for s in self._prox_rounds if s[0] != row)
        else:
            self._learn(msg.nodes)

    def _on_departed(self, src: int, msg: Departed) -> None:
        node = msg.node
        if node == self.id:
            self._send(src, Hello(HELLO_NO_RTT), C_MAINTENANCE)  # a false alarm about us
            return
        # A node we hold is verified before it is believed. One we do not hold is not probed
        # at all: the notice only says that failures go on, and the sweep it owes waits for
        # them to stop, `sweep_max_wait_s` at most (`_sweep_due_at`). On a lossy network live
        # nodes are now and then declared failed, and a sweep at every such notice once made
        # more false verdicts than it cleared; spaced so, a ring of 1,000 at 2% and 5% loss
        # keeps every lookup at its root (`iris sim join --loss`).
        if node in self.leaf or node in self.table:
            self._ping(node, P_HELD if msg.held else P_VERIFY)
        elif not msg.held:  # (a holder's notice to a node that does not hold it: no news)
            self._failure_noticed(self.now, node=node)

    def _on_leave(self, src: int, msg: Leave) -> None:
        self._drop(src)

    def _on_hello(self, src: int, msg: Hello) -> None:
        self._heard_active(src, msg.rtt or None)

    # -------------------------------------------------------------------- heartbeats
    def _on_heartbeat_timer(self, _: int) -> None:
        """Beat to the left neighbour every period, and to the right one every
        `right_beat_periods` (see `OverlayConfig.right_beat_periods`)."""
        if self.state != ACTIVE:
            return
        leaf = self.leaf
        self._beat_count += 1
        left = leaf.left[0] if leaf.left else None
        beat = self._heartbeat()
        if left is not None:
            self._send(left, beat, C_MAINTENANCE)
        if leaf.right and leaf.right[0] != left and (
                left is None or self._beat_count % self.config.right_beat_periods == 0):
            self._send(leaf.right[0], beat, C_MAINTENANCE)
        self._at(self.now + self.config.heartbeat_s, T_HEARTBEAT)

    def _heartbeat(self) -> Heartbeat:
        """Our leaf set, and how long ago we last saw or heard of a failure."""
        age = self.now - self._failure_seen
        return Heartbeat(self.leaf.members(), int(age) if age < NO_FAILURE else NO_FAILURE)

    def _beat_period(self, nb: int) -> float:
        """How often immediate neighbour `nb` heartbeats us: every period if it is our right
        neighbour (we are its left), else every `right_beat_periods`."""
        right = self.leaf.right
        cfg = self.config
        if right and right[0] == nb:
            return cfg.heartbeat_s
        return cfg.heartbeat_s * cfg.right_beat_periods

    def _on_heartbeat(self, src: int, msg: Heartbeat) -> None:
        self._heard_active(src)
        nbs = self._nbs
        if src in nbs:
            # An immediate neighbour heartbeats us at a fixed pace: a longer gap is a
            # heartbeat lost (`overlay.probe_loss`; a gap of many periods is some other story).
            i = nbs.index(src)
            last = self._beats[i]
            if last is not None:
                periods = round((self.now - last) / self._beat_period(src))
                if 1 <= periods <= 3:
                    self._probe_loss.messages(periods - 1)
            self._beats[i] = self.now
        lost = self._lost
        if lost:
            now, hint = self.now, self.config.gossip_hint_s
            for node in msg.leaf:
                if lost.lost_within(node, now, hint):
                    self._send(src, Departed(node), C_MAINTENANCE)
        self._learn(msg.leaf)
        self._check_beyond(src, msg.leaf)
        if msg.failure_age < self.config.sweep_quiet_s:
            self._failure_noticed(self.now - msg.failure_age, gossip=True)

    def _check_beyond(self, nb: int, listed: tuple[int, ...]) -> None:
        """Our members beyond an immediate neighbour are among its own nearest, so its
        heartbeat lists them; one it leaves out is probed. Only the immediate neighbours
        watch a member by heartbeats: one whose death notice we missed (it came while we
        did not hold it yet, or its detector died too) was otherwise kept for good, and hid
        the live node that belongs in its place."""
        leaf = self.leaf
        side = leaf.right if leaf.right and leaf.right[0] == nb else (
            leaf.left if leaf.left and leaf.left[0] == nb else None)
        if side is None or len(side) < 2:
            return
        named = set(listed)
        for member in side[1:]:
            if member not in named:
                self._ping(member, P_TABLE)

    def _on_watch_timer(self, _: int) -> None:
        if self.state != ACTIVE:
            return
        now, missed = self.now, self.config.missed_heartbeats
        next_check = now + self.config.silence_s
        for nb, heard in zip(self._nbs, self._heard, strict=True):
            silence = missed * self._beat_period(nb)
            if now - heard >= silence:
                self._ping(nb, P_NEIGHBOUR)
            else:
                next_check = min(next_check, heard + silence)
        self._at(max(next_check, now + self.config.probe_timeout_s), T_WATCH)

    # ------------------------------------------------------------------- routing table
    def _on_table_timer(self, _: int) -> None:
        """Each tick probes one entry, round robin, for liveness and round trip, and asks it
        for its copy of the entry's row: Pastry's periodic row exchange, which fills cells
        that joins left empty, and Castro et al.'s proximity maintenance, which finds nodes
        nearer than our entries (`_probe_nearer`), in the probe's two messages."""
        if self.state != ACTIVE:
            return
        if self._prox_asked is None:
            # No row exchange awaited, and the candidates of the last answer were answered
            # long ago: whatever search is left found nothing nearer to go on from. Kept, it
            # made a later, unrelated nearer entry ask for its row (at 10,000 nodes, 0.53 ->
            # 0.49 maintenance messages per node per second without them) and held 100-120
            # bytes at most nodes.
            self._prox_rounds = ()
        self._at(self.now + self._table_period(), T_TABLE)
        self._table_cursor += 1
        table = self.table
        entries = [n for n in table.entries() if n not in self.leaf]
        if entries:
            peer = entries[self._table_cursor % len(entries)]
            self._ping(peer, P_TABLE, want_row=shared_prefix_len(self.id, peer) + 1)

    def _table_period(self) -> float:
        """The wait before the next table probe: the time the ring has looked calm (so the
        period doubles with each probe of a calm table), from `table_probe_s` up to
        `table_probe_max_s`. Probing finds dead entries, and where nobody fails there are none
        to find (MSPastry tunes the period to the failure rate seen); where failures are seen,
        the sweeps they start probe every entry (`_sweep_due_at`)."""
        cfg = self.config
        return min(cfg.table_probe_max_s, max(cfg.table_probe_s, self.now - self._calm_since))

    # ---------------------------------------------------------------- proximity search
    def _ring_size(self) -> float:
        """The ring's size as the leaf set's span suggests (`overlay.proximity`)."""
        leaf = self.leaf
        complete = leaf.complete()
        span = 0
        if complete:
            span = ((leaf.right[-1] - self.id) & MASK) + ((self.id - leaf.left[-1]) & MASK)
        return estimated_size(len(leaf.left) + len(leaf.right), span, complete)

    def _proximity_rows(self) -> int:
        """How many of the first table rows have a choice of nodes (`overlay.proximity`)."""
        return rows_with_choice(self._ring_size(), self.table.rows)

    def _search_table(self, category: int, rounds: int, probes: int) -> None:
        """Search every row with a choice, from its nearest entry, in `rounds` row exchanges
        probing up to `probes` nodes of each answer: after a join, and whenever the ring has
        grown `GROWTH` times since the last search."""
        self._prox_size = self._ring_size()
        table = self.table
        for row in range(self._proximity_rows()):
            filled = sorted((rtt, n) for n, rtt in table.row_rtts(row))
            if filled:
                self._search_row((row, rounds, category, probes), filled[0][1])

    def _search_row(self, search: _Search, peer: int) -> None:
        """Ask `peer` for its copy of the search's row; the answer's likeliest nearer
        candidates are probed (`_probe_nearer`), and one that proves nearer is asked next
        while the search has row exchanges left (`_adopted`)."""
        asked = self._prox_asked
        if asked is None:
            asked = self._prox_asked = {}
        if len(asked) >= MAX_SEARCHES:
            # Bounded: answers never come from a dead or unreachable peer; forget old asks.
            for old in [p for p, (_, at) in asked.items() if self.now - at > SEARCH_WAIT_S]:
                del asked[old]
        if len(asked) >= MAX_SEARCHES or peer in asked:
            return
        row, rounds, category, probes = search
        asked[peer] = (search, self.now)
        # The search of this row may go on from the node its answer makes nearest; a search
        # with no rounds left replaces whatever was kept for the row by nothing.
        kept = tuple(s for s in self._prox_rounds if s[0] != row)
        if rounds > 1:
            kept += ((row, rounds - 1, category, probes),)
        self._prox_rounds = kept
        self._send(peer, RowRequest(row), category)

    def _probe_nearer(self, nodes: tuple[int, ...], rtts: tuple[int, ...], category: int,
                      probes: int, margin: float = 1.0) -> int:
        """A proximity search's answer: probe the candidates likely to be nearer than our
        entries for their cells, the likeliest first, at most `probes` of them.

        A candidate is likely nearer when the answering node (an entry of ours, so near us)
        measured it nearer than `margin` times our round trip to our own entry for that cell;
        with no measurement given, only a candidate for an empty cell is probed. Returns how
        many were probed."""
        table, me, pinged, lost = self.table, self.id, self._probes.by_peer, self._lost
        hints = rtts if len(rtts) == len(nodes) else (0,) * len(nodes)
        likely: list[tuple[float, int]] = []
        for node, hint in zip(nodes, hints, strict=True):
            if node == me or node in pinged or (lost and node in lost):
                continue
            entry, ours = table.incumbent(node)
            if entry == node:
                continue  # ours already
            if entry is None:
                likely.append((-INF, node))
                continue
            theirs = hint / 1e6 if hint else INF
            if theirs < ours * margin:
                likely.append((theirs - ours, node))
        likely.sort()
        for _, node in likely[:probes]:
            self._ping(node, P_CANDIDATE, category=category)
        return min(len(likely), probes)

    def _adopted(self, peer: int, rtt: float, cell_us: int) -> None:
        """A probe's round trip made `peer` a table entry (a nearer node, or one for an empty
        cell). Tell it our round trip if that would win us its cell (`Pong.cell_us`: nearness
        is mutual, but a greeting that loses to its entry changes nothing there); and if a
        search of its row has rounds left, ask it for its row next."""
        row = shared_prefix_len(self.id, peer)
        # The table is still improving: halve the calm, and so the probe period.
        self._calm_since = max(self._calm_since, (self.now + self._calm_since) / 2)
        if _greeting_wins(rtt, cell_us):
            self._send(peer, Hello(rtt), C_MAINTENANCE)
        for search in self._prox_rounds:
            if search[0] == row:
                self._search_row(search, peer)
                return

    def _failure_noticed(self, at: float, gossip: bool = False, node: int = UNNAMED) -> None:
        """A peer failed, at `at` as far as we know: seen by us, heard of (a notice about a node
        we do not hold), or heard of second hand (`gossip`: a neighbour's heartbeat says when
        it last saw one). The whole table is to be checked (failures come in bunches, and a
        dead node's table holders are told by nobody), twice (`SWEEPS_AFTER_FAILURE`), when
        `_sweep_due_at` says.

        Failures that go on sparsely owe more sweeps (`SWEEPS_AFTER_SPARSE_FAILURES`). A node
        hears of failures somewhere every few seconds under 10-minute sessions at 1,000 nodes,
        so its last sweeps come just after the churn stops. Under 1-hour sessions it hears of
        one about a minute apart, and the entries that died after its last sweep and before
        the churn stopped had nobody to find them but the periodic probe (one entry per
        `table_probe_max_s`): 2 of them were still in a table 600 s after the churn. A node that
        hears of failures rarely does not sweep at all for a lone crash: the failure that ends a
        calm (none seen for `lone_calm_s`, by a node active and its table settled as long)
        owes sweeps only when a second one, of another node, follows it before the next calm.
        About 200 nodes are told of each crash (its detector's leaf set and table, and their
        neighbours by heartbeat), and their sweeps, 36,000 messages at 1,000 nodes, found
        about one of the dead node's holders in 40: under daily restarts, about half of the
        ring's maintenance. The holders are told instead (`_tell_holders`). News from a
        neighbour's heartbeat (`gossip`) counts the failure, never the pace, and names no
        node: it is taken for the lone one.

        A notice about a node we do not hold is not verified (two messages for nothing): it
        only says that failures go on. A neighbour's news goes no farther than
        `sweep_quiet_s` of heartbeats carry it: its neighbours sweep too (a node that joined
        during a churn heard of no failure, and kept entries that died before it did), but
        the whole ring does not."""
        gap = at - self._failure_seen
        if gap > 0:
            self._failure_seen = at
        elif gossip:
            return  # no news
        cfg = self.config
        if (gap >= cfg.lone_calm_s and self.state == ACTIVE
                and self.now - self._calm_since >= cfg.lone_calm_s):
            # A calm ends, with a lone failure perhaps. (A node whose table still improves,
            # one that joined lately say, has not seen the ring calm.)
            self._lone = node
            return
        lone = self._lone
        if lone is not None:
            if lone == UNNAMED:
                self._lone = node
                return
            if gossip or node in (UNNAMED, lone):
                return  # the lone failure, heard of again
            self._lone = None  # a second failure: they go on
        sparse = not gossip and cfg.sweep_quiet_s <= gap < cfg.sweep_max_wait_s
        self._sweeps_owed = max(self._sweeps_owed, SWEEPS_AFTER_SPARSE_FAILURES if sparse
                                else SWEEPS_AFTER_FAILURE)
        if self._sweep is None:
            self._arm_sweep()

    def _sweep_due_at(self) -> float:
        """When the sweep owed may run: at once after a calm (no sweep for `sweep_max_wait_s`),
        else once no failure has been seen for `sweep_quiet_s`, but `sweep_max_wait_s` after
        the last sweep at the latest; never within `sweep_min_interval_s` of it, nor within
        as long as the quiet had lasted at the last sweep (the sweeps owed to sparse failures:
        the quiet doubles from one to the next).

        Under churn a node hears of a failure every few seconds, and sweeping at each (at
        most once a minute) was a third of all maintenance messages at 1,000 nodes, its
        tables no cleaner: the sweeps now come a `sweep_max_wait_s` apart, and the dead entries
        left after the churn are found by the sweep in the quiet after it (and those that
        died after that one looked, by the second)."""
        cfg, last = self.config, self._last_sweep
        return max(last + max(cfg.sweep_min_interval_s, last - self._failure_seen),
                   min(last + cfg.sweep_max_wait_s, self._failure_seen + cfg.sweep_quiet_s))

    def _arm_sweep(self) -> None:
        """Set the timer for the sweep owed, unless one is set for that time or sooner."""
        due = max(self.now, self._sweep_due_at())
        if due < self._sweep_wake and self.state == ACTIVE:
            self._sweep_wake = due
            self._at(due, T_SWEEP, 1)

    def _begin_sweep(self) -> None:
        """Go through every table entry but the leaf set's, one per `sweep_gap_s`.

        A sweep after a calm probes them all: whatever an entry said before the failures
        began proves nothing (in a crash of many nodes at once, it may have died with the
        others; counted from the time alone, a tenth of 1,000 nodes crashing at once took
        47-49 s to repair instead of 21-25). Any other passes over those that spoke within
        `sweep_fresh_s` (`_on_sweep_timer`); one in the quiet after failures looks at them
        again later, one while failures go on does not (the next sweep comes soon: the second
        looks were 0.13 of 1.83 maintenance messages per node per second under churn at 1,000
        nodes, and found too few dead entries to change how many are dead at any time)."""
        cfg, now = self.config, self.now
        last = self._last_sweep
        self._sweep_all = self._failure_seen > last and (
            now - last > cfg.sweep_max_wait_s + cfg.sweep_quiet_s)
        self._sweep_fresh = [] if now >= self._failure_seen + cfg.sweep_quiet_s else None
        self._sweeps_owed -= 1
        self._last_sweep = now
        self._sweep = [n for n in self.table.entries() if n not in self.leaf]
        self._at(now + cfg.sweep_gap_s, T_SWEEP)

    def _end_sweep(self) -> None:
        """The sweep is through: the next one owed runs when it may."""
        self._sweep = self._sweep_fresh = None
        if self._sweeps_owed > 0:
            self._arm_sweep()

    def _on_sweep_timer(self, owed: int) -> None:
        """Probe the next entry of the sweep (`owed`: start the sweep owed).

        An entry that spoke to us within `sweep_fresh_s` (unless `_sweep_all`) is alive
        without a probe: a table entry often holds the node that holds it, and probes it in
        its own sweeps. In the quiet after failures it is looked at again once `sweep_fresh_s`
        has passed, and probed then unless it spoke again: passed over for good, an entry that
        died just after it spoke stayed until the slow periodic probe found it, minutes after
        the churn stopped."""
        if owed:
            self._sweep_wake = INF
            if self._sweeps_owed > 0 and self._sweep is None and self.state == ACTIVE:
                if self._sweep_due_at() <= self.now:
                    self._begin_sweep()
                else:
                    self._arm_sweep()  # failures seen since it was set put it off
            return
        sweep = self._sweep
        if not sweep or self.state != ACTIVE:
            self._end_sweep()
            return
        # Fresh: silent for less than this (whole seconds: one is taken off for the rounding).
        fresh = -1.0 if self._sweep_all else self.config.sweep_fresh_s - 1
        deferred, table = self._sweep_fresh, self.table
        while sweep:
            peer = sweep.pop()
            silent = table.silent_for(peer, self.now)
            if silent is None:
                continue  # no longer an entry
            if silent >= fresh:
                self._ping(peer, P_TABLE)
                break
            if deferred is not None:
                deferred.append(peer)
        if sweep:
            self._at(self.now + self.config.sweep_gap_s, T_SWEEP)
        elif deferred:
            self._sweep, self._sweep_fresh = deferred, None  # the second look
            self._at(self.now + self.config.sweep_fresh_s, T_SWEEP)
        else:
            self._end_sweep()

    # ----------------------------------------------------------------------- routing
    def _route_step(self, msg: Route, avoid: tuple[int, ...] = (), attempt: int = 1) -> None:
        payload = msg.payload
        if isinstance(payload, JoinRequest):
            # A join is routed like any message, but never to the joiner itself (it is not
            # active yet), and every node on the way answers the joiner.
            joiner = payload.joiner
            nh = self._next_hop_around(msg.key, avoid + (joiner,))
            if joiner != self.id and (attempt == 1 or nh is None):
                self._answer_join(joiner, final=nh is None)
            if nh is None:
                return
            category = C_JOIN
        else:
            nh = self._next_hop_around(msg.key, avoid)
            if nh is None and (avoid or self._suspects) and self.app.consistent_roots:
                # We would be the root only because the node our state names the root is
                # avoided (it did not acknowledge a hop): delivering here would put the message
                # at the wrong root if it was the message or its acknowledgement that was
                # lost. Wait for the probe's verdict on it instead (`_hold`); a peer that
                # answered its probe meanwhile simply gets the message again.
                root = routing_rule.next_hop(self.leaf, self.table, msg.key)
                if root is not None:
                    if root in self._suspects and self._hold(root, msg, avoid, attempt):
                        return
                    nh = root
            if nh is None:
                if self._joiners is not None and self._wait_for_joiner(msg, avoid, attempt):
                    return
                self.app.deliver(msg.key, payload, msg.origin, msg.hops)
                return
            if attempt == 1:
                forwarded = self.app.forward(msg.key, payload, nh)
                if forwarded is None:
                    return
                if forwarded is not payload:
                    msg = Route(msg.key, msg.seq, msg.origin, msg.hops, forwarded)
            category = C_ROUTE
        self._seq += 1
        seq = self._seq
        self._send(nh, Route(msg.key, seq, msg.origin, msg.hops + 1, msg.payload), category)
        self._await_ack(seq, (msg, nh, attempt, avoid, self.now))

    def _joining(self, joiner: int) -> None:
        """`joiner` probes us as a member of its leaf set, and would be among our nearest: it
        is about to become active, and maybe the root of keys we would deliver
        (`_wait_for_joiner`).
        Joiners that did not greet us within a join's time are forgotten here, and only here
        unless a message waits for them: the record costs no timer."""
        joiners = self._joiners
        if joiners is not None:
            timeout = self.config.join_timeout_s
            for old in [j for j, since in joiners.items() if since + timeout <= self.now]:
                self._forget_joiner(old)
            if joiner not in joiners and len(joiners) >= MAX_JOINERS:
                self._forget_joiner(next(iter(joiners)))  # the oldest
        joiners = self._joiners
        if joiners is None:
            joiners = self._joiners = {}
        joiners.pop(joiner, None)
        joiners[joiner] = self.now  # (kept oldest first)

    def _forget_joiner(self, joiner: int) -> None:
        """Wait for `joiner` no more: what waited for it is routed again (to the joiner once it
        is in our leaf set, else delivered here)."""
        joiners = self._joiners
        if joiners is not None and joiners.pop(joiner, None) is not None:
            if not joiners:
                self._joiners = None
            self._release(joiner)

    def _wait_for_joiner(self, msg: Route, avoid: tuple[int, ...], attempt: int) -> bool:
        """We are the root of `msg.key` by our state, but a joiner that probed us is nearer
        the key. It becomes the root once active, and its greeting reaches us one network
        delay after that: a message delivered here meanwhile is at the wrong root (seven of
        twenty-five `churn` runs of 1,000 nodes had such a lookup). So the message waits for the
        greeting, then goes to the joiner (`_heard_active`), or for as long as a join may
        take, then is delivered here (`_on_joiner_timer`)."""
        nearest = self._nearest_joiner(msg.key, avoid)
        if nearest is None or self._held_count >= self.config.max_pending_routes:
            return False
        best, since = nearest
        if self._held is None:
            self._held = {}
        held = self._held.setdefault(best, [])
        if not held:
            self._at(since + self.config.join_timeout_s, T_JOINER, best)
        held.append((msg, avoid, attempt, self.now))
        self._held_count += 1
        return True

    def _nearest_joiner(self, key: int, avoid: tuple[int, ...]) -> tuple[int, float] | None:
        """The joiner (not in `avoid`, within its join's time) nearer `key` than we are and
        nearest it, and since when it waits; None if there is none. `_joiners` is not None."""
        joiners = self._joiners
        assert joiners is not None
        now, timeout = self.now, self.config.join_timeout_s
        best, nearest, since = None, ring_distance(self.id, key), now
        for joiner, at in joiners.items():
            distance = ring_distance(joiner, key)
            if distance < nearest and joiner not in avoid and at + timeout > now:
                best, nearest, since = joiner, distance, at
        return None if best is None else (best, since)

    def _on_joiner_timer(self, joiner: int) -> None:
        """Messages wait for `joiner`: forget it if its join's time is up, else look again
        when it will be (it probed us again meanwhile)."""
        joiners = self._joiners
        since = joiners.get(joiner) if joiners is not None else None
        if since is None:
            return  # greeted or forgotten: what waited for it went on then
        if since + self.config.join_timeout_s <= self.now:
            self._forget_joiner(joiner)
        else:
            self._at(since + self.config.join_timeout_s, T_JOINER, joiner)

    def _hold(self, root: int, msg: Route, avoid: tuple[int, ...], attempt: int) -> bool:
        """Keep `msg` until the probe of `root` (a suspect, the root by our state) settles:
        answered, the message goes to it (`_release`); unanswered, `root` is declared failed
        and the message is routed again without it. False when it cannot wait (no probe can
        be sent, or `max_pending_routes` messages are held already): it is sent to `root`."""
        self._ping(root, P_SUSPECT)  # the probe in flight, if any, now declares it failed
        if root not in self._probes.by_peer or self._held_count >= self.config.max_pending_routes:
            return False
        entry = (msg, tuple(a for a in avoid if a != root), attempt, self.now)
        if self._held is None:
            self._held = {}
        self._held.setdefault(root, []).append(entry)
        self._held_count += 1
        return True

    def _release(self, peer: int) -> None:
        """`peer` is no longer suspected (it answered, or it was dropped): route the messages
        held for it again, aged by the wait (`OverlayApp.aged`)."""
        held_by = self._held
        held = held_by.pop(peer, None) if held_by is not None else None
        if held is None:
            return
        if not held_by:
            self._held = None
        self._held_count -= len(held)
        for msg, avoid, attempt, since in held:
            if self.now > since:
                payload = self.app.aged(msg.payload, self.now - since)
                if payload is None:
                    self.dropped += 1
                    continue
                if payload is not msg.payload:
                    msg = Route(msg.key, msg.seq, msg.origin, msg.hops, payload)
            self._route_step(msg, avoid, attempt)

    def _await_ack(self, seq: int, pending: _Pending) -> None:
        """Keep a sent hop (or `Direct`) until its acknowledgement, to re-send it another way
        (or tell the app) if none comes; beyond the bound it goes unacknowledged."""
        routes = self._routes
        if routes is _NO_ROUTES:
            routes = self._routes = {}
        if len(routes) < self.config.max_pending_routes:
            routes[seq] = pending
            self._expect(self._route_timeouts, self._route_timeout, T_ROUTE, seq)

    def _on_route(self, src: int, msg: Route) -> None:
        if self.state != ACTIVE:
            return  # no ack: the sender will try another way
        self._send(src, RouteAck((msg.seq,)), C_ROUTE)
        self._route_step(msg)

    def _on_direct(self, src: int, msg: Direct) -> None:
        self._send(src, RouteAck((msg.seq,)), C_ROUTE)
        self.app.receive_direct(src, msg.payload)

    def _on_route_ack(self, src: int, msg: RouteAck) -> None:
        routes = self._routes
        acked = 0
        for seq in msg.seqs:
            pending = routes.get(seq)
            if pending is not None and pending[1] == src:
                del routes[seq]
                acked += 1
                if not seq & 7:  # one acknowledgement in eight is plenty to follow the trend
                    self._ack_sample(self.now - pending[4])
        if acked:  # (counted once for a driver's merged acknowledgements)
            self._probe_loss.exchanges(0, acked)
        if not routes:
            self._route_timeouts.clear()  # its timer, when it fires, finds nothing due
            # A dict keeps the room of its largest burst when emptied: back to the shared one.
            self._routes = _NO_ROUTES

    def _ack_sample(self, delay: float) -> None:
        """Adapt the hop and probe timeouts to how long acknowledgements take
        (`overlay.ack_delay`), never below their configured floors."""
        patience = self._ack_delay.sample(delay)
        cfg = self.config
        self._route_timeout = max(cfg.route_ack_timeout_s, patience)
        self._ping_timeout = max(cfg.probe_timeout_s, patience)

    def _on_route_timer(self, generation: int) -> None:
        self._drain(self._route_timeouts, generation, T_ROUTE, self._route_expired)

    def _suspect(self, peer: int, purpose: int = P_SUSPECT) -> None:
        """`peer` may be dead (a hop it did not acknowledge, its connection lost): routes
        avoid it until a probe for `purpose` says which. With the probe table full no probe
        says so, and a peer avoided then would stay avoided until it spoke to us: it is not."""
        self._ping(peer, purpose)
        if peer not in self._probes.by_peer:
            return
        suspects = self._suspects
        if isinstance(suspects, set):
            suspects.add(peer)
        else:
            self._suspects = {peer}

    def _route_expired(self, seq: int) -> None:
        pending = self._routes.pop(seq, None)
        if pending is None:
            return
        msg, nh, attempt, avoid, sent_at = pending
        opened = self._opened.get(nh, _LONG_AGO) if self._opened is not None else _LONG_AGO
        if sent_at <= opened and self.now < opened + self._route_timeout:
            # Written into a dial that connected late: its time runs from then (`link_up`).
            self._routes[seq] = pending
            self._expect(self._route_timeouts, self._route_timeout, T_ROUTE, seq, since=opened)
            return
        if self.given_up is not None:
            self.given_up.append(nh)
        self._suspect(nh)
        payload = self.app.aged(msg.payload, self.now - sent_at)
        if payload is None:
            self.dropped += 1
            return
        if isinstance(msg, Direct):
            self.app.undeliverable(nh, payload)
            return
        if attempt >= max(self.config.route_attempts, self._probe_loss.needed):
            self.dropped += 1  # (on a lossy network, as many ways are tried as probes sent)
            return
        if payload is not msg.payload:
            msg = Route(msg.key, msg.seq, msg.origin, msg.hops, payload)
        self._route_step(msg, avoid + (nh,), attempt + 1)

    # ------------------------------------------------------------------- partition heal
    def _remember_lost(self, peer: int, told: bool = False, scheduled: bool = True) -> None:
        lost = self._lost
        if lost is None:
            cfg = self.config
            lost = self._lost = LostPeers(cfg.heal_record_size, cfg.heal_forget_s,
                                          cfg.heal_first_retry_s, cfg.heal_max_retry_s,
                                          _heal_sweep(cfg))
        self._arm_heal(lost.remember(peer, self.now, self._jitter, len(self.leaf), told,
                                     scheduled))

    def _arm_heal(self, when: float) -> None:
        if when < self._heal_at:
            self._heal_at = when
            self._at(when, T_HEAL)

    def _on_heal_timer(self, _: int) -> None:
        if self.now < self._heal_at:
            return  # superseded by an earlier arming
        self._heal_at = INF
        if self.state == LEFT:
            return
        lost = self._lost
        assert lost is not None  # the heal timer is armed only once a peer is lost
        for peer in lost.due(self.now, self._jitter):
            self._ping(peer, P_HEAL)
        soonest = lost.soonest()
        if soonest < INF:
            self._arm_heal(soonest)

    def _merge_via(self, peer: int) -> None:
        """`peer` came back from the dead: ask its side of the ring where we belong; and say
        `Hello` to our leaf set, whose members across the cut dropped us (once per
        `greeting_gap_s`: a heal revives many peers). They would find us again by their own
        retries (up to a minute apart) or by heartbeat gossip, which travels right only
        every `right_beat_periods` (one node cut off from 200 was missing from leaf sets to
        its right for 10-23 s after the heal, against 1-2 s)."""
        now, cfg = self.now, self.config
        if now - self._last_merge >= cfg.merge_lookup_gap_s:
            self._last_merge = now
            self._send(peer, JoinRequest(self.id), C_MAINTENANCE)
        if now - self._last_greeting >= cfg.greeting_gap_s:
            self._last_greeting = now
            for member in self.leaf.members():
                if member != peer:
                    self._send(member, Hello(HELLO_NO_RTT), C_MAINTENANCE)


_M = TypeVar("_M", bound=Message)
_Handler = Callable[[OverlayNode, int, Any], None]


def _on(cls: type[_M], handler: Callable[[OverlayNode, int, _M], None]
        ) -> tuple[type[Message], _Handler]:
    """One entry of the dispatch table: the type checker sees that `handler` takes `cls`."""
    return cls, handler


_HANDLERS: dict[type[Message], _Handler] = dict([
    _on(Heartbeat, OverlayNode._on_heartbeat),
    _on(Ping, OverlayNode._on_ping),
    _on(Pong, OverlayNode._on_pong),
    _on(JoinRequest, OverlayNode._on_join_request),
    _on(JoinReply, OverlayNode._on_join_reply),
    _on(Hello, OverlayNode._on_hello),
    _on(Leave, OverlayNode._on_leave),
    _on(Departed, OverlayNode._on_departed),
    _on(RowRequest, OverlayNode._on_row_request),
    _on(RowReply, OverlayNode._on_row_reply),
    _on(Route, OverlayNode._on_route),
    _on(RouteAck, OverlayNode._on_route_ack),
    _on(Direct, OverlayNode._on_direct),
])

_TIMERS: dict[int, Callable[[OverlayNode, int], None]] = {
    T_HEARTBEAT: OverlayNode._on_heartbeat_timer,
    T_WATCH: OverlayNode._on_watch_timer,
    T_PING: OverlayNode._on_ping_timer,
    T_ROUTE: OverlayNode._on_route_timer,
    T_TABLE: OverlayNode._on_table_timer,
    T_SWEEP: OverlayNode._on_sweep_timer,
    T_HEAL: OverlayNode._on_heal_timer,
    T_JOIN: OverlayNode._on_join_timer,
    T_APP: lambda node, token: node.app.timer(token),
    T_JOINER: OverlayNode._on_joiner_timer,
    T_DISCOVER: OverlayNode._on_discovery_timer,
}
