"""The messaging core: clusters, balanced requests, broadcast, publish/subscribe, tunnels.

A sans-IO `OverlayApp` above one `OverlayNode`. The application side calls methods
(`register`, `request`, `reply`, `broadcast`, `subscribe`, `publish`, `open_tunnel`,
`tunnel_send`, `tunnel_consumed`, `tunnel_close`, ...) and drains `events`; the driver feeds the
overlay node as usual. Time comes from the overlay node's clock, randomness from its RNG.

Design (numbers in `MessagingConfig`):
- One Scribe tree per cluster and per topic, rooted at the live node closest to the group id.
  Iris used 5 trees per cluster to spread the root's load; here requests enter the tree at the
  first tree node on their route (for a large cluster, usually below the root), broadcasts are
  flooded from wherever they enter, and a topic needs one tree for per-publisher order. Five
  trees would multiply tree maintenance five-fold for a load the root does not carry.
- Requests: routed toward the cluster; the first tree node starts a capacity-weighted walk: at
  each tree node, go to itself (if a member), a child, or the parent (never back where the walk
  came from), each with probability proportional to the capacity that way. That samples
  members in proportion to capacity. Only the root may say "no members" (it sees the whole
  tree); elsewhere a walk with nothing known below goes up. The reply goes straight back.
- Broadcast and publish: routed to the tree, then sent along every tree edge; every node keeps
  a bounded record of (origin, seq) it has seen, so nothing is delivered twice even while the
  tree changes (Iris's duplicate broadcasts under churn).
- Tree upkeep: neighbours exchange one aggregated beat per `tree_beat_s` (capacities up, capacity
  outside the subtree and the path to the root down). A silent parent (3 beats) or one the
  overlay declares failed makes the child graft again; a silent child is pruned. A root that is
  no longer the closest node to its group (a node joined, a partition healed) grafts into the
  tree of the new root, which merges split trees.
- Tunnels: opened like a request, then direct between the two nodes; chunked, in order, byte
  credit flow control, keep-alives, and closed at the survivor when the peer goes silent.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from iris.core import events as ev
from iris.core.deadlines import Deadlines
from iris.core.limits import ENTRY_COST, Gate, ServiceLimits, TopicLimits
from iris.core.messages import (
    MAX_ANCESTORS,
    MAX_TREE_ENTRIES,
    MAX_WALK_HOPS,
    NO_MEMBERS,
    OK,
    REFUSED,
    REMOTE_ERROR,
    Flood,
    Prune,
    Reply,
    Request,
    Subscribe,
    TreeAck,
    TreeDown,
    TreeUp,
    TunnelAccept,
    TunnelClose,
    TunnelCredit,
    TunnelData,
    TunnelOpen,
)
from iris.core.tree import GroupTree
from iris.core.tunnel_end import TunnelEnd, TunnelError
from overlay.ids import key_for
from overlay.node import OverlayApp, OverlayNode
from overlay.wire import Message

TIMEOUT = 4  # RequestDone status when no reply came in time (after OK..REFUSED)

# Timer tokens: kind in the low 2 bits, an id above.
_TK_TICK, _TK_REQUEST, _TK_TUNNEL, _TK_PARKED = range(4)


# Group keys are hashed once per name: every request and publish needs one.
@lru_cache(maxsize=4096)
def cluster_group(name: str) -> int:
    return key_for("cluster:" + name)


@lru_cache(maxsize=4096)
def topic_group(name: str) -> int:
    return key_for("topic:" + name)


@dataclass(frozen=True, slots=True)
class MessagingConfig:
    tree_beat_s: float = 5.0
    """Tree neighbours exchange one aggregated beat per this period."""

    tree_silence_beats: float = 3.0
    """A tree neighbour silent this many beats is dropped (child) or replaced (parent)."""

    graft_retry_s: float = 3.0
    """A Subscribe not acknowledged within this is sent again."""

    seen_ids: int = 16384
    """Broadcast/publish ids remembered per node for de-duplication (oldest forgotten)."""

    max_pending_requests: int = 65536
    """Outstanding requests of this node; beyond, `request` fails at once."""

    tunnel_window: int = 4 * 1024 * 1024
    """Bytes a tunnel end lets its peer send ahead of what its application consumed."""

    tunnel_send_buffer: int = 8 * 1024 * 1024
    """Bytes queued for sending on one tunnel; beyond, `tunnel_send` refuses."""

    tunnel_keepalive_s: float = 5.0
    tunnel_silence_s: float = 15.0

    max_tunnels: int = 4096

    max_trees: int = 65_536
    """Trees this node takes part in (member or forwarder); beyond, new grafts are refused."""

    root_settle_s: float = 1.0
    """A node whose leaf set changed this recently (it may have become a group's root) waits
    up to this long for the old root's re-graft before it answers "no members"."""

    root_settle_after_failure_s: float = 4.0
    """The same wait after a neighbour failed, or while the node closer to a group's key does
    not answer. The members below a dead root graft anew once they notice: most hear the
    detector's notice (they are its neighbours, or route to it) and verify it with one probe
    (`probe_timeout_s`, 1 s); the wait covers that and the graft's way, with room for a loaded
    machine. (A member that only learns from the tree's silence, 3 beats, comes later.) Only a
    node that just took over a group's key answers "no members" this late."""

    max_parked: int = 1024


class _Service:
    __slots__ = ("name", "members", "requests", "broadcasts")

    def __init__(self, name: str, limits: ServiceLimits) -> None:
        self.name = name
        self.members = 1  # registrations of this cluster on this node
        self.requests = Gate(limits.max_concurrency, limits.max_queued_bytes)
        self.broadcasts = Gate(limits.max_broadcast_concurrency, limits.max_queued_broadcast_bytes)


@dataclass(slots=True)
class _Topic:
    name: str
    limits: TopicLimits
    queued_bytes: int = 0
    dropped: int = 0


class MessagingCore(OverlayApp):
    def __init__(self, node: OverlayNode, config: MessagingConfig | None = None) -> None:
        self.node = node
        node.app = self
        self.config = config or MessagingConfig()
        self.events: list[Any] = []
        self.trees: dict[int, GroupTree] = {}
        self.services: dict[int, _Service] = {}
        self.topics: dict[int, _Topic] = {}
        self.seen: OrderedDict[tuple[int, int, int], None] = OrderedDict()
        self.pending: dict[int, float] = {}  # req_id -> deadline
        self._request_deadlines = Deadlines()  # one timer for every pending request
        self.inbound: dict[int, tuple[int, int, int]] = {}  # token -> (origin, req_id, group)
        self.tunnels: dict[tuple[int, int], TunnelEnd] = {}
        self.counters: dict[str, int] = {}
        self._next_id = 0
        self._ticking = False
        self._settle_until = -1e9  # a new root parks requests for unknown groups until then
        self._parked: deque[tuple[float, Request | TunnelOpen]] = deque()

    # ================================================================== application side
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    @property
    def now(self) -> float:
        return self.node.now

    def register(self, cluster: str, limits: ServiceLimits | None = None) -> None:
        """Become a member of `cluster` (again: one more member on this node)."""
        group = cluster_group(cluster)
        service = self.services.get(group)
        if service is None:
            self.services[group] = _Service(cluster, limits or ServiceLimits())
        else:
            service.members += 1
        self._join_tree(group, cluster, topic=False)

    def unregister(self, cluster: str) -> None:
        group = cluster_group(cluster)
        service = self.services.get(group)
        if service is None:
            return
        service.members -= 1
        if service.members <= 0:
            del self.services[group]
        self._leave_tree(group)

    def subscribe(self, topic: str, limits: TopicLimits | None = None) -> None:
        group = topic_group(topic)
        if group in self.topics:
            return
        self.topics[group] = _Topic(topic, limits or TopicLimits())
        self._join_tree(group, topic, topic=True)

    def unsubscribe(self, topic: str) -> None:
        group = topic_group(topic)
        if self.topics.pop(group, None) is not None:
            self._leave_tree(group)

    def request(self, cluster: str, payload: bytes, timeout: float) -> int:
        """Send a request to one member of `cluster`; the answer comes as `RequestDone`."""
        req_id = self._new_id()
        if len(self.pending) >= self.config.max_pending_requests:
            self.events.append(ev.RequestDone(req_id, REFUSED, b"", "too many pending requests"))
            return req_id
        deadline = self.now + timeout
        self.pending[req_id] = deadline
        at = self._request_deadlines.add(deadline, req_id, self.pending)
        if at is not None:
            self.node.schedule(at, _TK_REQUEST)
        group = cluster_group(cluster)
        self.node.route(group, Request(group, req_id, self.node.id, 0, payload))
        return req_id

    def reply(self, token: int, payload: bytes = b"", error: str | None = None) -> None:
        """Answer a `RequestReceived` (an `error` text makes it a remote error)."""
        origin, req_id, group = self.inbound.pop(token)
        status = OK if error is None else REMOTE_ERROR
        self.node.send(origin, Reply(req_id, status, payload if error is None else b"",
                                     (error or "")[:1024]))
        service = self.services.get(group)
        if service is not None:
            for queued in service.requests.done():
                self._hand_to_app(queued, service)

    def broadcast(self, cluster: str, payload: bytes) -> None:
        self._flood(cluster_group(cluster), payload)

    def publish(self, topic: str, payload: bytes) -> None:
        self._flood(topic_group(topic), payload)

    def event_done(self, topic: str, nbytes: int) -> None:
        """The application consumed an event of `nbytes` (frees room under TopicLimits)."""
        t = self.topics.get(topic_group(topic))
        if t is not None:
            t.queued_bytes = max(0, t.queued_bytes - nbytes - ENTRY_COST)

    def broadcast_done(self, cluster: str) -> None:
        """The application handled a `BroadcastReceived` (frees a slot under ServiceLimits)."""
        service = self.services.get(cluster_group(cluster))
        if service is not None:
            for payload in service.broadcasts.done():
                self.events.append(ev.BroadcastReceived(service.name, payload))

    # ----------------------------------------------------------------------------- tunnels
    def open_tunnel(self, cluster: str, timeout: float) -> tuple[int, int]:
        tid = self._new_id()
        key = (self.node.id, tid)
        if len(self.tunnels) >= self.config.max_tunnels:
            self.events.append(ev.TunnelClosed(key, "too many tunnels"))
            return key
        tunnel = TunnelEnd(key, None, self.config.tunnel_window, self.config.tunnel_send_buffer,
                           self.now)
        tunnel.open_deadline = self.now + timeout
        self.tunnels[key] = tunnel
        self.node.schedule(tunnel.open_deadline, (tid << 2) | _TK_TUNNEL)
        group = cluster_group(cluster)
        self.node.route(group, TunnelOpen(group, self.node.id, tid, 0, self.config.tunnel_window))
        self._ensure_tick()
        return key

    def tunnel_send(self, key: tuple[int, int], data: bytes) -> None:
        """Queue one message; raises TunnelError when closed or the send buffer is full."""
        tunnel = self.tunnels.get(key)
        if tunnel is None:
            raise TunnelError("tunnel is closed")
        tunnel.queue(data)
        self._pump(tunnel)

    def tunnel_consumed(self, key: tuple[int, int], nbytes: int) -> None:
        tunnel = self.tunnels.get(key)
        if tunnel is not None and tunnel.peer is not None:
            grant = tunnel.consumed(nbytes)
            if grant:
                self._tunnel_out(tunnel, TunnelCredit(key[0], key[1], grant))

    def tunnel_close(self, key: tuple[int, int], reason: str = "") -> None:
        tunnel = self.tunnels.get(key)
        if tunnel is not None:
            tunnel.closing = reason or "closed"
            self._pump(tunnel)

    # ======================================================================= overlay upcalls
    def deliver(self, key: int, payload: Message, origin: int, hops: int) -> None:
        kind = type(payload)
        if kind is Subscribe:
            self._on_subscribe_at_root(payload)
        elif kind is Request or kind is TunnelOpen:
            if self._entering(payload):
                self._walk(payload, None)
        elif kind is Flood:
            tree = self.trees.get(payload.group)
            if tree is None:
                self._count("flood_no_tree")
            else:
                self._spread(payload, None)

    def forward(self, key: int, payload: Message, next_hop: int) -> Message | None:
        kind = type(payload)
        if kind is Subscribe:
            return self._on_subscribe_passing(payload)
        if kind is Request or kind is TunnelOpen:
            if payload.group in self.trees:
                if self._entering(payload):
                    self._walk(payload, None)
                return None
        elif kind is Flood and payload.group in self.trees:
            self._spread(payload, None)
            return None
        return payload

    def receive_direct(self, src: int, payload: Message) -> None:
        handler = _DIRECT.get(type(payload))
        if handler is not None:
            handler(self, src, payload)
        else:
            self._count("unexpected_direct")

    def activated(self) -> None:
        self._settle(self.config.root_settle_s)
        self._ensure_tick()

    def _settle(self, period: float) -> None:
        self._settle_until = max(self._settle_until, self.now + period)

    def leafset_changed(self) -> None:
        self._settle(self.config.root_settle_s)
        # A root that is no longer the closest node to its group grafts into the new root's
        # tree: after joins, and after a partition heals (the two trees merge).
        for tree in self.trees.values():
            if tree.is_root() and not self.node.is_root(tree.group):
                self._graft(tree)

    def peer_failed(self, peer: int) -> None:
        self._settle(self.config.root_settle_after_failure_s)
        for tree in list(self.trees.values()):
            if tree.parent == peer:
                tree.parent = None
                self._graft(tree)
            if tree.children.pop(peer, None) is not None:
                self._after_weight_change(tree)
        for tunnel in list(self.tunnels.values()):
            if tunnel.peer == peer:
                self._tunnel_lost(tunnel, "peer failed")

    def timer(self, token: int) -> None:
        kind, ident = token & 3, token >> 2
        if kind == _TK_TICK:
            self._tick()
        elif kind == _TK_REQUEST:
            expired, at = self._request_deadlines.expire(self.now, self.pending)
            for req_id in expired:
                del self.pending[req_id]
                self.events.append(ev.RequestDone(req_id, TIMEOUT, b"", "request timed out"))
            if at is not None:
                self.node.schedule(at, _TK_REQUEST)
        elif kind == _TK_TUNNEL:
            tunnel = self.tunnels.get((self.node.id, ident))
            if tunnel is not None and tunnel.peer is None and self.now >= tunnel.open_deadline:
                self._tunnel_lost(tunnel, "tunnel open timed out")
        else:
            parked, self._parked = self._parked, deque()
            for since, msg in parked:
                self._walk(msg, None, parked_since=since)

    # ============================================================================== trees
    def _join_tree(self, group: int, name: str, topic: bool) -> None:
        tree = self.trees.get(group)
        if tree is None:
            tree = self.trees[group] = GroupTree(group, name, topic, self.now)
            tree.local = 1
            self._graft(tree)
        else:
            tree.name = name
            tree.topic = topic
            tree.local += 1
            if not tree.grafting:
                self.events.append(ev.Joined(name, topic))
            self._after_weight_change(tree)
        self._ensure_tick()

    def _leave_tree(self, group: int) -> None:
        tree = self.trees.get(group)
        if tree is None:
            return
        tree.local = max(0, tree.local - 1)
        if tree.local == 0:
            tree.name = None
        self._after_weight_change(tree)

    def _graft(self, tree: GroupTree) -> None:
        """Route a Subscribe toward the group: the first tree node on the way adopts us."""
        tree.grafting = True
        tree.graft_sent = self.now
        self.node.route(tree.group, Subscribe(tree.group, self.node.id, tree.weight))

    def _adopt(self, tree: GroupTree, child: int, weight: int) -> None:
        tree.children[child] = [weight, self.now]
        self.node.send(child, TreeAck(tree.group, tree.weight_outside(child),
                                      tree.ancestors[: MAX_ANCESTORS - 1]))

    def _on_subscribe_passing(self, msg: Subscribe) -> Message | None:
        child = msg.subscriber
        if child == self.node.id:
            return msg  # our own graft leaving us
        tree = self.trees.get(msg.group)
        if tree is not None:
            if child in tree.ancestors:
                return msg  # adopting our own ancestor would close a loop: let it pass
            before = tree.weight
            self._adopt(tree, child, msg.weight)
            if tree.weight != before:
                self._send_up(tree)
            return None
        if len(self.trees) >= self.config.max_trees:
            self._count("grafts_refused")
            return None  # the subscriber's graft times out and is retried
        # Not in the tree yet: become a forwarder, adopt the child, and graft ourselves.
        tree = self.trees[msg.group] = GroupTree(msg.group, None, False, self.now)
        self._adopt(tree, child, msg.weight)
        tree.grafting = True
        tree.graft_sent = self.now
        self._ensure_tick()
        return Subscribe(msg.group, self.node.id, tree.weight)

    def _on_subscribe_at_root(self, msg: Subscribe) -> None:
        tree = self.trees.get(msg.group)
        if msg.subscriber == self.node.id:
            if tree is not None and tree.grafting:
                tree.parent = None
                tree.ancestors = ()
                tree.grafting = False
                self._grafted(tree)
            return
        if tree is None:
            if len(self.trees) >= self.config.max_trees:
                self._count("grafts_refused")
                return
            tree = self.trees[msg.group] = GroupTree(msg.group, None, False, self.now)
            self._ensure_tick()
        elif tree.grafting:
            # We are the closest node after all: stop grafting, we are the root.
            tree.parent = None
            tree.ancestors = ()
            tree.grafting = False
        if msg.subscriber in tree.ancestors:
            return
        self._adopt(tree, msg.subscriber, msg.weight)

    def _grafted(self, tree: GroupTree) -> None:
        if tree.name is not None:
            self.events.append(ev.Joined(tree.name, tree.topic))

    def _on_tree_ack(self, src: int, msg: TreeAck) -> None:
        tree = self.trees.get(msg.group)
        if tree is None:
            self.node.send(src, Prune(msg.group))
            return
        if tree.parent is not None and tree.parent != src and not tree.grafting:
            self.node.send(src, Prune(msg.group))  # a late answer to an older graft
            return
        was_grafting = tree.grafting
        tree.set_parent(src, msg.ancestors, self.now)
        tree.up_weight = msg.outside
        if was_grafting:
            self._grafted(tree)

    def _on_prune(self, src: int, msg: Prune) -> None:
        tree = self.trees.get(msg.group)
        if tree is None:
            return
        if tree.children.pop(src, None) is not None:
            self._after_weight_change(tree)
        elif tree.parent == src:
            tree.parent = None  # our parent disowns us: graft again
            self._graft(tree)

    def _after_weight_change(self, tree: GroupTree) -> None:
        if tree.empty():
            del self.trees[tree.group]
            if tree.parent is not None:
                self.node.send(tree.parent, Prune(tree.group))
        else:
            self._send_up(tree)

    def _send_up(self, tree: GroupTree) -> None:
        if tree.parent is not None:
            self.node.send(tree.parent, TreeUp(((tree.group, tree.weight),)))

    def _on_tree_up(self, src: int, msg: TreeUp) -> None:
        for group, weight in msg.entries:
            tree = self.trees.get(group)
            if tree is None:
                self.node.send(src, Prune(group))  # "I am not in that tree": it grafts again
                continue
            child = tree.children.get(src)
            if child is None:
                if src in tree.ancestors or src == tree.parent:
                    self.node.send(src, Prune(group))
                    continue
                tree.children[src] = [weight, self.now]
                self._send_up(tree)
                continue
            changed = child[0] != weight
            child[0] = weight
            child[1] = self.now
            if changed:
                self._send_up(tree)

    def _on_tree_down(self, src: int, msg: TreeDown) -> None:
        for group, weight, ancestors in msg.entries:
            tree = self.trees.get(group)
            if tree is None or tree.parent != src:
                self.node.send(src, Prune(group))
                continue
            tree.up_weight = weight
            tree.parent_heard = self.now
            tree.ancestors = (src, *ancestors)[:MAX_ANCESTORS]

    def _ensure_tick(self) -> None:
        if not self._ticking and self.node.active:
            self._ticking = True
            jitter = self.node.rng.uniform(0.5, 1.0)
            self.node.schedule(self.now + self.config.tree_beat_s * jitter, _TK_TICK)

    def _tick(self) -> None:
        """One tree beat: check every tree, then send each tree neighbour one message."""
        self._ticking = False
        now, cfg = self.now, self.config
        silence = cfg.tree_beat_s * cfg.tree_silence_beats
        up: dict[int, list[tuple[int, int]]] = {}
        down: dict[int, list[tuple[int, int, tuple[int, ...]]]] = {}
        for tree in list(self.trees.values()):
            for child in [c for c, (_, heard) in tree.children.items() if now - heard > silence]:
                del tree.children[child]
            if tree.empty():
                self._after_weight_change(tree)
                continue
            if tree.grafting:
                if now - tree.graft_sent >= cfg.graft_retry_s:
                    self._graft(tree)
            elif tree.parent is not None and now - tree.parent_heard > silence:
                tree.parent = None
                self._graft(tree)
            elif tree.parent is None and not self.node.is_root(tree.group):
                self._graft(tree)
            if tree.parent is not None and not tree.grafting:
                up.setdefault(tree.parent, []).append((tree.group, tree.weight))
            for child in tree.children:
                down.setdefault(child, []).append((tree.group, tree.weight_outside(child),
                                                    tree.ancestors[: MAX_ANCESTORS - 1]))
        for peer, entries in up.items():
            for i in range(0, len(entries), MAX_TREE_ENTRIES):
                self.node.send(peer, TreeUp(tuple(entries[i : i + MAX_TREE_ENTRIES])))
        for peer, entries in down.items():
            for i in range(0, len(entries), MAX_TREE_ENTRIES):
                self.node.send(peer, TreeDown(tuple(entries[i : i + MAX_TREE_ENTRIES])))
        self._tunnel_tick()
        if self.trees or self.tunnels:
            self._ticking = True
            self.node.schedule(now + cfg.tree_beat_s, _TK_TICK)

    # ===================================================================== requests (walk)
    def _walk(self, msg: Request | TunnelOpen, came_from: int | None,
              parked_since: float | None = None) -> None:
        """Take one step of the capacity-weighted walk toward one member."""
        tree = self.trees.get(msg.group)
        if tree is None:
            if came_from is None:
                # We are the root and know no tree.
                if not self._wait_for_members(msg, parked_since):
                    self._fail_walk(msg, NO_MEMBERS, "no members in cluster")
            else:
                # We left the tree while the walk was on its way: start again from the route.
                self._reroute(msg)
            return
        service = self.services.get(msg.group)
        options: list[tuple[int | None, float]] = []
        # A tunnel's two ends live on two nodes: its opener never serves it.
        serves_here = type(msg) is Request or msg.opener != self.node.id
        if service is not None and tree.local and serves_here:
            options.append((None, float(tree.local)))
        for child, (weight, _) in tree.children.items():
            if child != came_from and weight > 0:
                options.append((child, weight))
        parent = tree.parent
        if parent is not None and parent != came_from and tree.up_weight > 0:
            options.append((parent, float(tree.up_weight)))
        total = sum(w for _, w in options)
        if total <= 0:
            if parent is not None and parent != came_from and msg.hops < MAX_WALK_HOPS:
                self._step(msg, parent)  # nothing known below: the root knows more
            elif tree.is_root():
                if not self._wait_for_members(msg, parked_since):
                    self._fail_walk(msg, NO_MEMBERS, "no members in cluster")
            else:
                self._reroute(msg)
            return
        pick = self.node.rng.random() * total
        for target, weight in options:
            pick -= weight
            if pick < 0:
                break
        if target is None:
            self._arrive(msg, service)
        else:
            self._step(msg, target)

    def _wait_for_members(self, msg: Request | TunnelOpen, parked_since: float | None) -> bool:
        """We are the root of the group and know no member. If we only just became the root
        (a join, a merge, a failure; or the node closer to the key is suspected), the members'
        grafts are probably on their way: park the message and walk it again shortly, up to
        `root_settle_after_failure_s`. True if parked."""
        since = self.now if parked_since is None else parked_since
        cfg = self.config
        unsettled = self.now < self._settle_until or self.node.root_in_doubt(msg.group)
        if not unsettled or self.now - since >= cfg.root_settle_after_failure_s or len(self._parked) >= cfg.max_parked:
            return False
        if not self._parked:
            self.node.schedule(self.now + cfg.root_settle_s / 8, _TK_PARKED)
        self._parked.append((since, msg))
        return True

    def _step(self, msg: Request | TunnelOpen, target: int) -> None:
        if msg.hops >= MAX_WALK_HOPS:
            self._fail_walk(msg, NO_MEMBERS, "request walked too far")
            return
        if type(msg) is Request:
            step = Request(msg.group, msg.req_id, msg.origin, msg.hops + 1, msg.payload)
        else:
            step = TunnelOpen(msg.group, msg.opener, msg.tid, msg.hops + 1, msg.window)
        self.node.send_acked(target, step)  # a dead tree neighbour must not swallow it

    def undeliverable(self, peer: int, payload: Message) -> None:
        """A walk step was not acknowledged: drop that neighbour from the tree and walk on.
        A tunnel keep-alive was not: the tunnel's peer is gone."""
        if type(payload) is TunnelCredit:
            tunnel = self.tunnels.get((payload.opener, payload.tid))
            if tunnel is not None and tunnel.peer == peer:
                self._tunnel_lost(tunnel, "peer unreachable")
            return
        if type(payload) is not Request and type(payload) is not TunnelOpen:
            return
        tree = self.trees.get(payload.group)
        if tree is not None:
            if tree.children.pop(peer, None) is not None:
                self._after_weight_change(tree)
            elif tree.parent == peer:
                tree.parent = None
                self._graft(tree)
        self._count("walk_steps_rerouted")
        if payload.group in self.trees:
            self._walk(payload, None)
        else:
            self._reroute(payload)

    def _reroute(self, msg: Request | TunnelOpen) -> None:
        if msg.hops >= MAX_WALK_HOPS:
            self._fail_walk(msg, NO_MEMBERS, "request walked too far")
        elif type(msg) is Request:
            self.node.route(msg.group, Request(msg.group, msg.req_id, msg.origin, msg.hops + 1,
                                               msg.payload))
        else:
            self.node.route(msg.group, TunnelOpen(msg.group, msg.opener, msg.tid, msg.hops + 1,
                                                  msg.window))

    def _fail_walk(self, msg: Request | TunnelOpen, status: int, reason: str) -> None:
        if type(msg) is Request:
            self.node.send(msg.origin, Reply(msg.req_id, status, b"", reason))
        else:
            self.node.send(msg.opener, TunnelClose(msg.opener, msg.tid, reason))

    def _on_walk(self, src: int, msg: Request | TunnelOpen) -> None:
        self._walk(msg, src)

    def _entering(self, msg: Request | TunnelOpen) -> bool:
        """A routed request may arrive twice (a hop re-sent after a lost acknowledgement):
        only the first copy starts a walk. A walk that had to re-route counts its hops, so
        its second entry is not mistaken for a copy."""
        if type(msg) is Request:
            fresh = self._first_sight(msg.origin, msg.req_id, msg.hops)
        else:
            fresh = self._first_sight(msg.opener, msg.tid, msg.hops)
        if not fresh:
            self._count("request_duplicate_dropped")
        return fresh

    def _first_sight(self, origin: int, seq: int, hops: int = 0) -> bool:
        seen = self.seen
        key = (origin, seq, hops)
        if key in seen:
            return False
        seen[key] = None
        if len(seen) > self.config.seen_ids:
            seen.popitem(last=False)
        return True

    def _arrive(self, msg: Request | TunnelOpen, service: _Service) -> None:
        if type(msg) is TunnelOpen:
            self._accept_tunnel(msg, service)
            return
        admitted = service.requests.offer(msg, len(msg.payload))
        if admitted:
            self._hand_to_app(msg, service)
        elif admitted is None:
            self._count("requests_refused")
            self.node.send(msg.origin, Reply(msg.req_id, REFUSED, b"", "service limits exceeded"))

    def _hand_to_app(self, msg: Request, service: _Service) -> None:
        """`msg` was admitted (it counts as in flight): the application gets it."""
        token = self._new_id()
        self.inbound[token] = (msg.origin, msg.req_id, msg.group)
        self.events.append(ev.RequestReceived(service.name, token, msg.payload))

    def _on_reply(self, src: int, msg: Reply) -> None:
        if self.pending.pop(msg.req_id, None) is None:
            self._count("late_replies")
            return
        self.events.append(ev.RequestDone(msg.req_id, msg.status, msg.payload, msg.error))

    # ========================================================================= broadcast
    def _flood(self, group: int, payload: bytes) -> None:
        msg = Flood(group, self.node.id, self._new_id(), payload)
        if group in self.trees:
            self._spread(msg, None)
        else:
            self.node.route(group, msg)

    def _spread(self, msg: Flood, came_from: int | None) -> None:
        if not self._first_sight(msg.origin, msg.seq):
            self._count("flood_duplicate_dropped")
            return
        tree = self.trees.get(msg.group)
        if tree is None:
            return
        for peer in tree.neighbours():
            if peer != came_from:
                self.node.send(peer, msg)
        if tree.local:
            self._deliver_flood(msg, tree)

    def _deliver_flood(self, msg: Flood, tree: GroupTree) -> None:
        if tree.topic:
            topic = self.topics.get(msg.group)
            if topic is None:
                return
            if topic.queued_bytes + len(msg.payload) + ENTRY_COST > topic.limits.max_queued_bytes:
                topic.dropped += 1
                self._count("events_dropped")
                return
            topic.queued_bytes += len(msg.payload) + ENTRY_COST
            self.events.append(ev.EventReceived(topic.name, msg.payload, msg.origin, msg.seq))
        else:
            service = self.services.get(msg.group)
            if service is not None:
                # One copy per registration on this node; a slow handler cannot make them pile up.
                for _ in range(service.members):
                    admitted = service.broadcasts.offer(msg.payload, len(msg.payload))
                    if admitted:
                        self.events.append(ev.BroadcastReceived(service.name, msg.payload))
                    elif admitted is None:
                        self._count("broadcasts_dropped")

    def _on_flood(self, src: int, msg: Flood) -> None:
        self._spread(msg, src)

    # =========================================================================== tunnels
    def _accept_tunnel(self, msg: TunnelOpen, service: _Service) -> None:
        key = (msg.opener, msg.tid)
        if key in self.tunnels:
            return
        if len(self.tunnels) >= self.config.max_tunnels:
            self.node.send(msg.opener, TunnelClose(msg.opener, msg.tid, "too many tunnels"))
            return
        tunnel = TunnelEnd(key, msg.opener, self.config.tunnel_window,
                           self.config.tunnel_send_buffer, self.now)
        tunnel.credit = msg.window
        self.tunnels[key] = tunnel
        self._tunnel_out(tunnel, TunnelAccept(msg.opener, msg.tid, self.config.tunnel_window))
        self.events.append(ev.TunnelIncoming(key, service.name))
        self._ensure_tick()

    def _on_tunnel_accept(self, src: int, msg: TunnelAccept) -> None:
        tunnel = self.tunnels.get((msg.opener, msg.tid))
        if tunnel is None or tunnel.peer is not None or msg.opener != self.node.id:
            self.node.send(src, TunnelClose(msg.opener, msg.tid, "no such tunnel"))
            return
        tunnel.peer = src
        tunnel.credit = msg.window
        tunnel.last_heard = self.now
        self.events.append(ev.TunnelOpened(tunnel.key))
        self._pump(tunnel)

    def _tunnel_for(self, src: int, opener: int, tid: int) -> TunnelEnd | None:
        tunnel = self.tunnels.get((opener, tid))
        if tunnel is None or tunnel.peer != src:
            return None
        tunnel.last_heard = self.now
        return tunnel

    def _on_tunnel_data(self, src: int, msg: TunnelData) -> None:
        tunnel = self._tunnel_for(src, msg.opener, msg.tid)
        if tunnel is None:
            return
        try:
            done = tunnel.receive(msg.seq, msg.total, msg.chunk)
        except TunnelError as exc:
            self._tunnel_out(tunnel, TunnelClose(msg.opener, msg.tid, str(exc)))
            self._tunnel_lost(tunnel, str(exc))
            return
        if done is not None:
            self.events.append(ev.TunnelMessage(tunnel.key, done))

    def _on_tunnel_credit(self, src: int, msg: TunnelCredit) -> None:
        tunnel = self._tunnel_for(src, msg.opener, msg.tid)
        if tunnel is not None and msg.amount:
            tunnel.credit += msg.amount
            self._pump(tunnel)
            self.events.append(ev.TunnelDrained(tunnel.key))

    def _on_tunnel_close(self, src: int, msg: TunnelClose) -> None:
        key = (msg.opener, msg.tid)
        tunnel = self.tunnels.get(key)
        if tunnel is None or (tunnel.peer is not None and tunnel.peer != src):
            return
        self._tunnel_lost(tunnel, msg.reason or "closed by peer")

    def _pump(self, tunnel: TunnelEnd) -> None:
        if tunnel.peer is None:
            return
        opener, tid = tunnel.key
        for seq, total, chunk in tunnel.chunks():
            self._tunnel_out(tunnel, TunnelData(opener, tid, seq, total, chunk))
        if tunnel.closing is not None and not tunnel.has_output():
            self._tunnel_out(tunnel, TunnelClose(opener, tid, tunnel.closing))
            self._tunnel_lost(tunnel, tunnel.closing)

    def _tunnel_out(self, tunnel: TunnelEnd, msg: Message) -> None:
        tunnel.last_sent = self.now
        self.node.send(tunnel.peer, msg)

    def _tunnel_lost(self, tunnel: TunnelEnd, reason: str) -> None:
        if self.tunnels.pop(tunnel.key, None) is not None:
            self.events.append(ev.TunnelClosed(tunnel.key, reason))

    def _tunnel_tick(self) -> None:
        """A tunnel quiet for a keep-alive period sends an acknowledged keep-alive: a dead
        peer is then noticed within one acknowledgement timeout (`undeliverable`)."""
        now, cfg = self.now, self.config
        for tunnel in list(self.tunnels.values()):
            if tunnel.peer is None:
                continue
            if now - tunnel.last_heard > cfg.tunnel_silence_s:
                self._tunnel_lost(tunnel, "peer unreachable")
            elif (now - tunnel.last_sent >= cfg.tunnel_keepalive_s
                  or now - tunnel.last_heard >= cfg.tunnel_keepalive_s):
                tunnel.last_sent = now
                self.node.send_acked(tunnel.peer, TunnelCredit(tunnel.key[0], tunnel.key[1], 0))


_DIRECT = {
    TreeAck: MessagingCore._on_tree_ack,
    Prune: MessagingCore._on_prune,
    TreeUp: MessagingCore._on_tree_up,
    TreeDown: MessagingCore._on_tree_down,
    Request: MessagingCore._on_walk,
    TunnelOpen: MessagingCore._on_walk,
    Reply: MessagingCore._on_reply,
    Flood: MessagingCore._on_flood,
    TunnelAccept: MessagingCore._on_tunnel_accept,
    TunnelData: MessagingCore._on_tunnel_data,
    TunnelCredit: MessagingCore._on_tunnel_credit,
    TunnelClose: MessagingCore._on_tunnel_close,
}
