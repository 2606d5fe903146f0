"""The capacity-weighted walk: how a request or a tunnel opening finds one member.

A `Request` or `TunnelOpen` is routed toward its group; the first tree node on the route starts
the walk. At each tree node it goes to the node itself (if a member), to a child, or to the
parent (never back where it came from, unless nothing else is left: a child that sent a
walk up for capacity that has just gone gets it back), each with probability proportional to
the capacity that way, which samples members in proportion to capacity. Steps are acknowledged
(`send_acked`): a dead tree neighbour is dropped and the walk goes on elsewhere. Only the root
says "no members" (it alone sees the whole tree); a node with nothing known below sends the
walk up. A root that has only just become the root, or that lost a child with members below it,
parks the walk and tries again shortly, so that the members cut off have time to graft anew.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from iris.core.messages import (
    MAX_WALK_HOPS,
    NO_MEMBERS,
    Reply,
    Request,
    TunnelClose,
    TunnelOpen,
    other_end,
)
from iris.core.state import TK_PARKED, CoreState, Service
from iris.core.trees import Trees

Walker = Request | TunnelOpen
"""What walks: a request, or the opening of a tunnel."""


class Walk:
    __slots__ = ("state", "trees", "on_request", "on_tunnel_open", "parked", "routing")

    def __init__(self, state: CoreState, trees: Trees,
                 on_request: Callable[[Request, Service, float], None],
                 on_tunnel_open: Callable[[TunnelOpen, Service], None]) -> None:
        self.state = state
        self.trees = trees
        self.on_request = on_request  # the walk chose this node for a request
        self.on_tunnel_open = on_tunnel_open  # ... or for a tunnel
        self.parked: deque[tuple[float, Walker]] = deque()
        # The walk this node is routing on toward the group right now: the overlay offers a
        # routed message to the node it leaves too (`MessagingCore.forward`), and this one must
        # leave, not walk here again.
        self.routing: Walker | None = None

    def enter(self, msg: Walker) -> None:
        """`msg` reached the group's tree (or its root) by routing: start walking, once."""
        if self._entering(msg):
            self.step_from(msg, None)

    def step_from(self, msg: Walker, came_from: int | None,
                  parked_since: float | None = None) -> None:
        """Take one step of the walk toward one member (a parked message has been held here
        since `parked_since`, a received one perhaps since `state.arrival_age` ago: a
        request's time left shrinks by that much)."""
        state = self.state
        held = state.arrival_age if parked_since is None else state.now - parked_since
        tree = state.trees.get(msg.group)
        if tree is None:
            if came_from is None:
                # We are the root and know no tree.
                if not self._wait_for_members(msg, parked_since):
                    self._fail(msg, "no members in cluster")
            else:
                # We left the tree while the walk was on its way: start again from the route.
                self._forward(msg, None, held)
            return
        service = state.services.get(msg.group)
        options: list[tuple[int | None, float]] = []
        if service is not None and tree.local:
            options.append((None, float(tree.local)))
        came_back = False  # the walk came up from a child that has members
        for child, (weight, _) in tree.children.items():
            if weight > 0:
                if child != came_from:
                    options.append((child, weight))
                else:
                    came_back = True
        parent = tree.parent
        if parent is not None and parent != came_from and tree.up_weight > 0:
            options.append((parent, float(tree.up_weight)))
        if not options:
            if parent is not None and parent != came_from and msg.hops < MAX_WALK_HOPS:
                self._forward(msg, parent, held)  # nothing known below: the root knows more
            elif came_back:
                # The child sent the walk up for a capacity outside its subtree that is gone
                # (it hears so with the next beat): its own members are the ones left.
                self._forward(msg, came_from, held)
            elif tree.is_root() or state.node.is_root(msg.group):
                # (Grafting again but the group's key is ours: routed, the walk would only
                # come back here, again and again until its hops ran out.)
                if not self._wait_for_members(msg, parked_since):
                    self._fail(msg, "no members in cluster")
            else:
                self._forward(msg, None, held)
            return
        target: int | None = options[0][0]
        if len(options) > 1:  # (a single option, as at a leaf member, needs no draw)
            pick = state.node.rng.random() * sum(w for _, w in options)
            for target, weight in options:  # noqa: B007 - the loop's last target is the pick
                pick -= weight
                if pick < 0:
                    break
        if target is not None:
            self._forward(msg, target, held)
        elif isinstance(msg, Request):
            assert service is not None
            self.on_request(msg, service, held)
        else:
            assert service is not None
            self.on_tunnel_open(msg, service)

    def release_parked(self) -> None:
        """The parking timer fired: walk every parked message again, or, where another node
        has become the root meanwhile (a joiner greeted us, a suspect answered), route it on
        to that root, which knows the tree."""
        parked, self.parked = self.parked, deque()
        is_root, now = self.state.node.is_root, self.state.now
        for since, msg in parked:
            if is_root(msg.group):
                self.step_from(msg, None, parked_since=since)
            else:
                self._forward(msg, None, now - since)

    def step_lost(self, peer: int, msg: Walker) -> None:
        """A step to `peer` was not acknowledged: drop that neighbour and walk on."""
        self.trees.drop_neighbour(msg.group, peer)
        self.state.count("walk_steps_rerouted")
        if msg.group in self.state.trees:
            self.step_from(msg, None)
        else:
            self._forward(msg, None, 0.0)

    def _wait_for_members(self, msg: Walker, parked_since: float | None) -> bool:
        """We are the group's root and know no member to walk to. Park the message and walk
        it again shortly (True) where members are probably on their way:

        - we only just became the root (a join, a merge, a failure; or the node closer to the
          key is suspected): the old root's members graft anew, within
          `root_settle_after_failure_s`;
        - a child of ours with members died (`GroupTree.lost_weight`): its members are orphans
          until they notice and graft again, as long as the tree remembers them. Answered "no
          members" at once, a request sent in those seconds failed though the cluster had live
          members (`messaging-churn`, 1,000 nodes: 3 requests of 19,006 on seed 7, 1-3 s
          after a forwarder with the cluster's only member below it crashed).

        A request waits no longer than its time left allows (less two retries, for the answer's
        way back): its caller hears "no members", not its own timeout."""
        state = self.state
        now = state.now
        since = now if parked_since is None else parked_since
        cfg = state.config
        if len(self.parked) >= cfg.max_parked:
            return False
        retry = cfg.park_retry_s
        if isinstance(msg, Request) and msg.time_left_ms / 1000 - (now - since) <= 2 * retry:
            return False
        tree = state.trees.get(msg.group)
        orphans = tree is not None and tree.lost_weight(now) > 0
        new_root = now < state.settle_until or state.node.root_in_doubt(msg.group)
        if not orphans and not (new_root and now - since < cfg.root_settle_after_failure_s):
            return False
        if not self.parked:
            state.node.schedule(now + retry, TK_PARKED)
        self.parked.append((since, msg))
        return True

    def _forward(self, msg: Walker, target: int | None, held: float) -> None:
        """One hop more: to a tree neighbour (acknowledged: a dead one must not swallow it),
        or routed toward the group again when `target` is None."""
        if msg.hops >= MAX_WALK_HOPS:
            self._fail(msg, "request walked too far")
            return
        step = self._next(msg, held)
        if step is None:
            return
        if target is None:
            # (Taken here again, it would find what it found just now and be routed again, at
            # once, until its hops ran out: "walked too far" answered by a node grafting again
            # with nothing below it, its parent just lost.)
            self.routing = step
            try:
                self.state.node.route(msg.group, step)
            finally:
                self.routing = None
        else:
            self.state.node.send_acked(target, step)

    def _next(self, msg: Walker, held: float) -> Walker | None:
        """The message for the next hop: one hop more, and a request's time left less what it
        was held here (None: its caller has given up, so it goes no further)."""
        if isinstance(msg, TunnelOpen):
            return TunnelOpen(msg.group, msg.opener, msg.tid, msg.hops + 1, msg.window)
        return self.aged(msg, held, hops=1)

    def aged(self, msg: Request, held: float, hops: int = 0) -> Request | None:
        """`msg` held `held` seconds more (and `hops` hops further): its time left less that,
        or None when its caller has given up (counted: it goes no further)."""
        time_left = msg.time_left_ms - round(held * 1000)
        if time_left <= 0:
            self.state.count("requests_expired")
            return None
        return Request(msg.group, msg.req_id, msg.origin, msg.hops + hops, msg.payload,
                       time_left)

    def _fail(self, msg: Walker, reason: str) -> None:
        """No member to walk to (or the walk went too far): the origin hears NO_MEMBERS, a
        request's as its reply's status, a tunnel opening's as its close code."""
        node = self.state.node
        if isinstance(msg, Request):
            node.send(msg.origin, Reply(msg.req_id, NO_MEMBERS, b"", reason))
        else:
            # Said for the member end that was not found (see `iris.core.tunnels.TunnelKey`).
            node.send(msg.opener, TunnelClose(msg.opener, other_end(msg.tid), NO_MEMBERS, reason))

    def _entering(self, msg: Walker) -> bool:
        """A routed request may arrive twice (a hop re-sent after a lost acknowledgement):
        only the first copy starts a walk. A walk that had to re-route counts its hops, so
        its second entry is not mistaken for a copy."""
        if isinstance(msg, Request):
            fresh = self.state.first_sight(msg.origin, msg.req_id, msg.hops)
        else:
            fresh = self.state.first_sight(msg.opener, msg.tid, msg.hops)
        if not fresh:
            self.state.count("request_duplicate_dropped")
        return fresh
