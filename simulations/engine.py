"""The discrete-event engine: one queue of events, a virtual clock, one seeded RNG.

It drives the very same `OverlayNode` cores the real runtime uses: it hands each node its
inputs (`receive`, `handle_timer`), drains the node's `out` list into the network model, and
keeps one pending wake-up per node at the node's `next_deadline`. Same seed, same run: every
random choice (placement, ids, delays, loss, the protocol's own jitter) comes from `self.rng`
and ties in time are broken by insertion order.

Messages are passed as objects (the cores never mutate a received message); with
`wire=True` every message is encoded and decoded on the way, to prove the codec under load.

With a link policy (`links=`), messages travel over modelled TCP connections
(`simulations.connections`) and the engine executes the policy as the runtime does: the
connections to peers a node declares failed are closed, and those holding a hop it gave up
are reset. A node can also be paused (SIGSTOP):
it runs nothing, what arrives for it waits, and on resume it reads that backlog first, told how
old it is (as the runtime's freeze watch tells the cores), then handles its overdue timers.
"""

from __future__ import annotations

import gc
import hashlib
import random
from collections.abc import Callable
from heapq import heappop, heappush
from math import log
from typing import Any, Protocol

from sortedcontainers import SortedList

from overlay.app import OverlayApp
from overlay.config import OverlayConfig
from overlay.ids import random_id
from overlay.link_policy import LinkPolicy
from overlay.node import OverlayNode
from overlay.wire import Message, decode, encode
from simulations.connections import Connections
from simulations.formed import formed_state
from simulations.nearest import Grid
from simulations.network import Network, NetworkConfig
from simulations.workload import LookupTracker, RingApp

INF = float("inf")
_DELIVER, _WAKE, _CALL = 0, 1, 2

# The event queue's buckets: events due in the same 1/_PER_S of a simulated second share one
# (`Simulation._enqueue`).
_PER_S = 1000.0
_NEVER = 1 << 62  # the bucket of an event due at infinity

# While it runs, the simulator allocates millions of short-lived, acyclic objects (messages,
# heap entries) on top of a large live state. With CPython's default thresholds (a young
# collection every 700 container allocations) the collector re-scans the young generations
# every few hundred events; cycles are rare here, so collect 70 times less often.
# Measured at 10,000 nodes: about 12% more events per second. Restored after each run.
_GC_THRESHOLD = (50_000, 20, 100)

AppFactory = Callable[["Simulation", OverlayNode], OverlayApp]
_Event = tuple[float, int, int, Any, Any, Any]


ACTIVE_GRID_SIDE = 64
"""Cells a side of the grid of active nodes (`Simulation.near_seeds`): 4,096 cells, a couple of
nodes each at 10,000 nodes, a few dozen at 100,000."""

_LINKS_PRUNED_AT = 100_000
"""The FIFO record of links (`Simulation._in_order`) is pruned when it grows past this."""


class Observer(Protocol):
    """Looks at a running simulation between events, at simulated times of its choosing: a
    progress line, time series (`simulations.timeline`). It reads and never changes anything,
    so a run observed or not is the same run, with the same digest."""

    @property
    def due(self) -> float:
        """The simulated time of the next look; `observe` must move it forward."""
        ...

    def observe(self, sim: Simulation) -> None: ...


class Simulation:
    def __init__(
        self,
        seed: int,
        config: OverlayConfig | None = None,
        network: NetworkConfig | None = None,
        app_factory: AppFactory | None = None,
        wire: bool = False,
        links: LinkPolicy | None = None,
    ) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or OverlayConfig()
        self.net = Network(network or NetworkConfig(), self.rng)
        self.app_factory: AppFactory = app_factory or RingApp
        self.wire = wire
        self.now = 0.0
        self.events = 0
        self.nodes: dict[int, OverlayNode] = {}  # live nodes (joining or active)
        self.active = SortedList()  # ids of live, active nodes: the checkers' truth
        self.messages_sent = 0
        self.messages_dropped = 0  # lost, partitioned, or addressed to a dead node
        # The event queue: (time, seq, kind, a, b, c) entries, run in (time, seq) order. Not
        # one heap of every pending event (at 10,000 nodes ~20,000 of them: each pop walked
        # ~15 levels of scattered tuples) but buckets of 1 ms (`_enqueue`): a heap of bucket
        # numbers, each bucket a plain list sorted when its turn comes. `_current` is the bucket
        # being run (`_current_bucket`), sorted from last to first so that popping takes the
        # next event.
        self._buckets: dict[int, list[_Event]] = {}
        self._bucket_heap: list[int] = []
        self._current: list[_Event] = []
        self._current_bucket = -1
        self._seq = 0
        self._link_last: dict[Any, float] = {}  # FIFO links: last arrival per link
        self._link_prune_at = _LINKS_PRUNED_AT  # ... forgotten when they grow past this
        self.connections = Connections(self, links) if links is not None else None
        # Joiners get the nearest active node as their seed, not a random one (`_seed_for`);
        # the active nodes' positions are then kept in a grid, made at the first such join.
        self.near_seeds = False
        self._active_grid: Grid | None = None
        self.paused: dict[int, list[tuple[float, int, Message]]] = {}  # node -> its backlog
        self._outbox: list[tuple[int, Message]] = []
        self.lookups = LookupTracker(self)
        self._retired_sent = [0, 0, 0]  # what nodes that are gone had sent
        # Called after every input to a node, before its output is sent: a workload drains
        # the application events of the node's app there.
        self.after_call: Callable[[OverlayNode], None] | None = None
        # Told how long a resumed node's backlog waited, around its delivery (0 after it).
        self.arrival_age: Callable[[OverlayNode, float], None] = lambda node, age: None
        # Shown the simulation at the times it asks for (`Observer`); None: nobody watches.
        self.observer: Observer | None = None

    # ------------------------------------------------------------------ node lifecycle
    def new_id(self) -> int:
        while True:
            node_id = random_id(self.rng)
            if node_id not in self.nodes:
                return node_id

    def add_node(self, node_id: int | None = None, seeds: tuple[int, ...] | None = None,
                 spare_seed: bool = False) -> int:
        """Create a node and start it: it joins through a random active node, or the nearest
        (`near_seeds`), and a random one besides if `spare_seed`; or through `seeds`."""
        if node_id is None:
            node_id = self.new_id()
        node = self._new_node(node_id)
        self.net.place(node_id)
        if seeds is None:
            seeds = (self._seed_for(node_id),) if self.active else ()
            if seeds and spare_seed:
                seeds = tuple(sorted({*seeds, self.random_active()}))
        node.start(self.now, seeds)
        self._flush(node, INF)
        return node_id

    def form_ring(self, count: int) -> list[int]:
        """Create `count` nodes already active in a ring formed from the truth, without joins
        (`simulations.formed`); on an empty simulation only. Their ids, in creation order."""
        if self.nodes:
            raise ValueError("a ring is formed in an empty simulation")
        ids = [self.new_id() for _ in range(count)]
        for node_id in ids:
            self.net.place(node_id)
        net = self.net.config
        state = formed_state(self.net.positions, self.config.leaf_size, net.plane,
                             2 * net.min_delay_s, net.per_unit_s)
        for node_id, leaf, entries in state:
            node = self._new_node(node_id)
            node.start_formed(self.now, leaf, entries)
            self._flush(node, INF)
        return ids

    def _new_node(self, node_id: int) -> OverlayNode:
        node = OverlayNode(node_id, self.rng, self.config)
        node.app = self.app_factory(self, node)
        node.out = self._outbox
        if self.connections is not None:
            node.failed = []  # peers whose connections the link policy closes
            node.given_up = []  # ... and peers whose connections it may reset
        self.nodes[node_id] = node
        return node

    def _seed_for(self, node_id: int) -> int:
        """The active node a joiner is given: a random one, or with `near_seeds` the nearest
        (an operator who seeds each node with one near it, as Pastry's join assumes)."""
        if not self.near_seeds:
            return self.random_active()
        grid = self._active_grid
        if grid is None:
            positions = self.net.positions
            grid = self._active_grid = Grid(self.net.config.plane, ACTIVE_GRID_SIDE)
            for node in self.active:
                grid.add(positions[node], node)
        return grid.nearest(self.net.positions[node_id])[1]

    def mark_active(self, node_id: int) -> None:
        if node_id in self.nodes and node_id not in self.active:
            self.active.add(node_id)
            if self._active_grid is not None:
                self._active_grid.add(self.net.positions[node_id], node_id)

    def crash(self, node_id: int) -> None:
        """The process dies: no goodbye, in-flight messages to it are lost."""
        node = self.nodes.pop(node_id, None)
        if node is None:
            return
        if node_id in self.active:
            self.active.remove(node_id)
            if self._active_grid is not None:
                self._active_grid.remove(self.net.positions[node_id], node_id)
        for i, count in enumerate(node.sent):
            self._retired_sent[i] += count
        self.paused.pop(node_id, None)
        if self.connections is not None:
            self.connections.forget(node_id)
        self.net.forget(node_id)

    def leave(self, node_id: int) -> None:
        """Graceful departure: the node tells its peers, then disappears."""
        node = self.nodes.get(node_id)
        if node is None:
            return
        pending = node.next_deadline
        node.leave(self.now)
        self._flush(node, pending)
        self.crash(node_id)

    def call(self, node_id: int, fn: Callable[[OverlayNode], Any]) -> None:
        """Give node `node_id` an input from its application, then send what it produced."""
        node = self.nodes.get(node_id)
        if node is not None and node_id not in self.paused:  # a paused application acts not
            pending = node.next_deadline
            fn(node)
            self._flush(node, pending)

    def random_active(self) -> int:
        node_id: int = self.active[self.rng.randrange(len(self.active))]  # SortedList is untyped
        return node_id

    # ---------------------------------------------------------------------------- faults
    def partition(self, groups: list[list[int]]) -> None:
        """Split the network: group i's members only reach each other (see `Network`)."""
        self.net.partition(groups)
        if self.connections is not None:
            self.connections.cut()

    def heal(self) -> None:
        self.net.heal()

    def reachable(self, a: int, b: int) -> bool:
        """Whether a packet from `a` gets to `b`: both processes exist, no cut between them
        (a paused process's kernel still receives)."""
        net = self.net
        if a not in net.positions or b not in net.positions:
            return False
        groups = net.groups
        return groups is None or groups.get(a, 0) == groups.get(b, 0)

    def pause(self, node_id: int) -> None:
        """Freeze a node as SIGSTOP does: no timers, no reading; what arrives waits for it."""
        if node_id in self.nodes and node_id not in self.paused:
            self.paused[node_id] = []

    def resume(self, node_id: int) -> None:
        """Thaw a paused node: it reads its backlog (each message as old as it is), then
        handles whatever timers came due meanwhile."""
        backlog = self.paused.pop(node_id, None)
        node = self.nodes.get(node_id)
        if backlog is None or node is None:
            return
        now = self.now
        for arrived, src, msg in backlog:
            self.arrival_age(node, now - arrived)
            pending = node.next_deadline
            node.receive(src, msg, now)
            self._flush(node, pending)
        self.arrival_age(node, 0.0)
        # Its wake-ups were skipped while it was paused: queue one at its deadline whatever is
        # queued already (a second one due then finds the deadline moved on and is skipped).
        if node.next_deadline <= now:
            node.handle_timer(now)
        self._flush(node, INF)

    # ----------------------------------------------------------------------- scheduling
    def _push(self, when: float, kind: int, a: Any, b: Any = None, c: Any = None) -> None:
        self._seq += 1
        self._enqueue((when, self._seq, kind, a, b, c))

    def _enqueue(self, event: _Event) -> None:
        """Queue `event` in its bucket. Buckets follow the order of time (the bucket of `t` is
        floor(t * _PER_S), which never decreases as `t` grows), and within the bucket being
        run an event takes its place by (time, seq): events run in exactly the order one heap
        of all of them gives. (`_advance` has this inlined.)"""
        when = event[0]
        bucket = int(when * _PER_S) if when < INF else _NEVER
        if bucket > self._current_bucket:
            queued = self._buckets.get(bucket)
            if queued is None:
                self._buckets[bucket] = [event]
                heappush(self._bucket_heap, bucket)
            else:
                queued.append(event)
        else:
            self._insert_current(event)

    def _insert_current(self, event: _Event) -> None:
        """Put `event` in its place in the bucket being run (kept from last to first)."""
        current = self._current
        i = len(current)
        while i and current[i - 1] < event:
            i -= 1
        current.insert(i, event)

    def _next_bucket(self) -> bool:
        """Make the earliest queued bucket the current one (the current one is empty)."""
        if not self._bucket_heap:
            return False
        bucket = heappop(self._bucket_heap)
        current = self._buckets.pop(bucket)
        current.sort(reverse=True)
        self._current = current
        self._current_bucket = bucket
        return True

    def at(self, when: float, fn: Callable[[], Any]) -> None:
        """Run `fn()` at simulated time `when` (scenario actions, workloads)."""
        self._push(when, _CALL, fn)

    def _flush(self, node: OverlayNode, pending: float) -> None:
        """Send what `node` produced and keep one wake-up pending at its next deadline.
        `pending` is the wake-up queued for it before this input: its `next_deadline` then, or
        INF if none is. (`_advance` has this inlined: it runs after every event.)

        The engine keeps no table of the wake-ups it queued: a node's queued wake-up is its
        `next_deadline` after its last input, since every input goes through the engine and
        the engine queues one whenever an input moves the deadline. A wake-up popped at any
        other time than the node's `next_deadline` is a superseded one.

        An input that moves the deadline sooner leaves the wake-up at the old one queued, and
        the node notes its time (`OverlayNode.later_wake`). When the sooner wake-up has run and
        the deadline is back at that time (a probe's timeout came before the next heartbeat,
        say), no second wake-up is queued for it: that one runs it. Such duplicates were about
        17,000 of the 27,000 wake-ups queued at 10,000 nodes. (Sound because a wake-up leaves
        the queue only at its time: a noted time still ahead is still queued; one behind can
        never equal a deadline again.)"""
        if self.after_call is not None:
            self.after_call(node)
        if node.given_up:
            self._reset_links(node)
        out = self._outbox
        if out:
            self._transmit(node.id, out)
            out.clear()
        if node.failed:
            self._close_links(node)
        deadline = node.next_deadline
        if deadline != pending and deadline < INF:
            if pending < INF:
                node.later_wake = pending
            self._push(deadline, _WAKE, node.id)

    def _close_links(self, node: OverlayNode) -> None:
        """Execute the link policy for the peers `node` gave up, as the runtime does."""
        assert node.failed is not None and self.connections is not None
        failed, node.failed = node.failed, []
        connections = self.connections
        for peer in failed:
            if connections.policy.close_when_gone(peer):
                connections.close(node.id, peer, "closed_peer_gone")

    def _reset_links(self, node: OverlayNode) -> None:
        """Execute the link policy for the hops `node` gave up, as the runtime does: before
        its output is sent, so that a frame it now writes to such a peer (a probe) goes on a
        fresh connection, not into the backlog that is discarded."""
        assert node.given_up is not None and self.connections is not None
        given_up, node.given_up = node.given_up, []
        connections = self.connections
        for peer in given_up:
            if connections.policy.reset_when_given_up(connections.stalled(node.id, peer)):
                connections.close(node.id, peer, "reset_stalled_hop")

    def deliver(self, arrival: float, link: Any, dest: int, src: int, msg: Message) -> None:
        """Put `msg` on the event queue, arriving at `dest` no earlier than what went before it
        on the same `link`."""
        self._seq += 1
        self._enqueue((self._in_order(link, arrival), self._seq, _DELIVER, dest, src, msg))

    def _transmit(self, src: int, out: list[tuple[int, Message]]) -> None:
        """Put each message on the network: dropped (partition, dead destination, loss),
        delayed, possibly duplicated. This is the hottest loop of the simulator, so the
        network's delay formula (`Network.delay`) is inlined here."""
        net = self.net
        positions = net.positions
        here = positions[src]
        groups = net.groups
        my_group = groups.get(src, 0) if groups is not None else 0
        cfg = net.config
        faulty = cfg.loss or cfg.duplicate
        min_delay, per_unit, jitter = cfg.min_delay_s, cfg.per_unit_s, cfg.jitter_s
        random = self.rng.random
        enqueue = self._enqueue
        now = self.now
        self.messages_sent += len(out)
        if self.connections is not None:
            send = self.connections.send
            for dest, msg in out:
                if dest not in positions:
                    self.messages_dropped += 1  # its process is gone: the connection resets
                    continue
                send(src, dest, decode(encode(msg)) if self.wire else msg)
            return
        seq = self._seq
        for dest, msg in out:
            there = positions.get(dest)
            if there is None or (groups is not None and groups.get(dest, 0) != my_group):
                self.messages_dropped += 1
                continue
            if faulty and cfg.loss and random() < cfg.loss:
                self.messages_dropped += 1
                continue
            if self.wire:
                msg = decode(encode(msg))
            arrival = now + (
                min_delay + abs(here - there) * per_unit - log(1.0 - random()) * jitter)
            if cfg.fifo:
                arrival = self._in_order((src, dest), arrival)
            seq += 1
            enqueue((arrival, seq, _DELIVER, dest, src, msg))
            if faulty and cfg.duplicate and random() < cfg.duplicate:
                seq += 1
                enqueue((now + net.delay(here, there), seq, _DELIVER, dest, src, msg))
        self._seq = seq

    def _in_order(self, link: Any, arrival: float) -> float:
        """No message overtakes an earlier one on the same link."""
        links = self._link_last
        last = links.get(link)
        if last is not None and arrival <= last:
            arrival = last + 1e-9
        links[link] = arrival
        if len(links) > self._link_prune_at:
            # Forget the links with nothing in flight. Those left may be many (10,000 nodes
            # under a partition, their messages stalled): the next pruning waits until the
            # record has doubled, or every message would copy it.
            now = self.now
            self._link_last = links = {k: t for k, t in links.items() if t > now}
            self._link_prune_at = max(_LINKS_PRUNED_AT, 2 * len(links))
        return arrival

    # ----------------------------------------------------------------------------- running
    def run_until_time(self, end: float) -> None:
        """Process every event due up to simulated time `end`, then set the clock to `end`.

        An observer is shown the state at each of its due times on the way: the events run
        in the same order either way, only in slices."""
        observer = self.observer
        while observer is not None and observer.due <= end:
            self._advance(observer.due)
            observer.observe(self)
        self._advance(end)

    def _advance(self, end: float) -> None:
        """`run_until_time` without the observer.

        The per-event path is inlined here: the queue (`_enqueue`), `_flush`, and for the plain
        datagram network (no connections, loss, duplication, FIFO order or codec) `_transmit`
        with its delay formula too. What could change between events (a partition, the
        workload's hook) is read again where it can change."""
        nodes, out = self.nodes, self._outbox
        buckets, bucket_heap = self._buckets, self._bucket_heap
        insert_current, next_bucket = self._insert_current, self._next_bucket
        current, current_bucket = self._current, self._current_bucket
        per_s = _PER_S
        paused = self.paused
        transmit = self._transmit
        close_links, reset_links = self._close_links, self._reset_links
        links = self.connections is not None
        after_call = self.after_call
        net = self.net
        positions = net.positions
        cfg = net.config
        # The datagram network without faults: each message is one queued event, its delay the
        # formula of `Network.delay` (the same operations in the same order: same digests).
        plain = not (links or self.wire or cfg.fifo or cfg.loss or cfg.duplicate)
        min_delay, per_unit, jitter = cfg.min_delay_s, cfg.per_unit_s, cfg.jitter_s
        random = self.rng.random
        events = 0
        gc_saved = gc.get_threshold()
        gc.set_threshold(*_GC_THRESHOLD)
        try:
            while True:
                if not current:
                    if not next_bucket():
                        break
                    current, current_bucket = self._current, self._current_bucket
                if current[-1][0] > end:
                    break
                when, _, kind, a, b, c = current.pop()
                self.now = when
                if kind == _DELIVER:
                    events += 1
                    node = nodes.get(a)
                    if node is None:
                        self.messages_dropped += 1
                        continue
                    if paused and a in paused:
                        paused[a].append((when, b, c))
                        continue
                    pending = node.next_deadline
                    node.receive(b, c, when)
                elif kind == _WAKE:
                    node = nodes.get(a)
                    if node is None or node.next_deadline != when or (paused and a in paused):
                        continue  # the node is gone, the wake-up superseded, or paused (woken
                        # on resume)
                    events += 1
                    pending = node.later_wake  # queued, if still ahead (see `_flush`)
                    node.handle_timer(when)
                else:
                    events += 1
                    a()
                    after_call = self.after_call
                    continue
                # `_flush(node, pending)`, inlined.
                if after_call is not None:
                    after_call(node)
                if links and node.given_up:
                    reset_links(node)
                if out:
                    if plain and net.groups is None:
                        # `_transmit` and `_enqueue`, inlined for the plain network.
                        here = positions[a]
                        seq = self._seq
                        for dest, msg in out:
                            there = positions.get(dest)
                            if there is None:
                                self.messages_dropped += 1
                                continue
                            seq += 1
                            arrival = when + (min_delay + abs(here - there) * per_unit
                                              - log(1.0 - random()) * jitter)
                            bucket = int(arrival * per_s)
                            if bucket > current_bucket:
                                queued = buckets.get(bucket)
                                if queued is None:
                                    buckets[bucket] = [(arrival, seq, _DELIVER, dest, a, msg)]
                                    heappush(bucket_heap, bucket)
                                else:
                                    queued.append((arrival, seq, _DELIVER, dest, a, msg))
                            else:
                                insert_current((arrival, seq, _DELIVER, dest, a, msg))
                        self._seq = seq
                        self.messages_sent += len(out)
                    else:
                        transmit(a, out)
                    out.clear()
                if links and node.failed:
                    close_links(node)
                deadline = node.next_deadline
                if deadline != pending and deadline < INF:
                    if pending < INF:
                        node.later_wake = pending
                    self._seq += 1
                    bucket = int(deadline * per_s)
                    if bucket > current_bucket:
                        queued = buckets.get(bucket)
                        if queued is None:
                            buckets[bucket] = [(deadline, self._seq, _WAKE, a, None, None)]
                            heappush(bucket_heap, bucket)
                        else:
                            queued.append((deadline, self._seq, _WAKE, a, None, None))
                    else:
                        insert_current((deadline, self._seq, _WAKE, a, None, None))
        finally:
            self.events += events
            gc.set_threshold(*gc_saved)
        self.now = max(self.now, end)

    def run_for(self, seconds: float) -> None:
        self.run_until_time(self.now + seconds)

    def run_until(
        self, predicate: Callable[[], bool], timeout: float, check_every: float = 1.0
    ) -> float | None:
        """Run until `predicate()` holds, checked every `check_every` simulated seconds.

        Returns the simulated time it took, or None if `timeout` passed first.
        """
        start = self.now
        while True:
            if predicate():
                return self.now - start
            if self.now - start >= timeout:
                return None
            self.run_for(check_every)

    # ---------------------------------------------------------------------------- reports
    def node(self, node_id: int) -> OverlayNode:
        return self.nodes[node_id]

    def sent_by_category(self) -> list[int]:
        """Messages sent so far by every node that ever ran: [maintenance, join, routed]."""
        totals = list(self._retired_sent)
        for node in self.nodes.values():
            for i, count in enumerate(node.sent):
                totals[i] += count
        return totals

    def digest(self) -> str:
        """A fingerprint of the whole state: equal for two runs with the same seed."""
        h = hashlib.sha256()
        h.update(
            f"{self.now:.9f}|{self.events}|{self.messages_sent}|{self.messages_dropped}".encode())
        for node_id in sorted(self.nodes):
            node = self.nodes[node_id]
            h.update(f"{node_id:x}:{node.state}:{node.leaf.left}:{node.leaf.right}:".encode())
            h.update(repr(sorted(node.table.entries())).encode())
        return h.hexdigest()
