"""Broadcast and publish: a `Flood` is routed to the group's tree and then sent along every
tree edge except the one it came from.

A `Flood` carries a batch of one origin's messages with consecutive sequence numbers (a
publisher's events queued within one turn of its loop: `MessagingCore.publish_batch`). Every
node remembers the last `seen_ids` (origin, first seq) pairs and drops repeats, so no member
gets a message twice even while the tree changes. Over FIFO links a publisher's messages take
the same path while the tree is stable, so they arrive in order; when they do not (a message
held up on a stalled connection arriving after newer ones that took another way, as after a
partition), a member delivers none older than the latest it delivered from that origin in that
group: a late one is dropped (counted as `floods_out_of_order`), never delivered out of order.
Every tree node records the floods it passes for a few seconds, so that a subtree cut off by a
dead tree node gets what it missed once it grafts again (`iris.core.replay`).
Delivery is bounded by the service's broadcast limits and the topic's limits; beyond, messages
are dropped and counted. A publisher also sends each event straight to the subscribers that
asked for it (`iris.core.direct`); the tree's copy of one delivered that way is dropped
silently.
"""

from __future__ import annotations

from dataclasses import replace

from iris.core import events as ev
from iris.core.direct import DirectPublish
from iris.core.limits import ENTRY_COST
from iris.core.messages import MAX_AGE_MS, Flood
from iris.core.state import CoreState
from iris.core.tree import GroupTree


class Flooding:
    __slots__ = ("state", "direct")

    def __init__(self, state: CoreState) -> None:
        self.state = state
        self.direct = DirectPublish(state, self._deliver_events)

    def start(self, group: int, payloads: tuple[bytes, ...]) -> Flood:
        state = self.state
        msg = Flood(group, state.node.id, state.new_ids(len(payloads)), payloads)
        if group in state.trees:
            self.spread(msg, None)
        else:
            state.node.route(group, msg)
        return msg

    def publish(self, group: int, payloads: tuple[bytes, ...]) -> None:
        """A topic's events: into the tree, and straight to the subscribers that asked."""
        self.direct.published(self.start(group, payloads))

    def on_flood(self, src: int, msg: Flood) -> None:
        self.spread(msg, src)

    def spread(self, msg: Flood, came_from: int | None) -> None:
        """Deliver `msg` here (if a member) and pass it along every other tree edge, once."""
        state = self.state
        if not state.first_sight(msg.origin, msg.seq):
            state.count("flood_duplicate_dropped")
            return
        tree = state.trees.get(msg.group)
        if tree is None:
            return
        tree.busy_at = state.now
        # Kept as of when it would have come, had it not waited on its way into the tree or
        # in our own backlog while our process was frozen; a `Replayed`, as of when it passed
        # the node that sent it again (`iris.core.replay`).
        state.history.record(msg, came_from, state.now - state.arrival_age - msg.age_ms / 1000)
        for peer in tree.neighbours():
            if peer != came_from:
                state.node.send(peer, msg)
        if tree.local:
            self._deliver(msg, tree)

    def without_tree(self, msg: Flood) -> None:
        """`msg` reached us as the group's root, and we have no tree for it. Most often the
        group has no member; but a root that took over a moment ago (settling, or the node
        that would be root suspected) may be where the orphans of the dead root are about to
        graft, cut off since before this flood: it keeps the flood for them as if it had
        passed here, and they get it with the rest of their cut (`iris.core.replay`). Before,
        every member missed it (`messaging-churn`, 1,000 nodes, seed 10: a broadcast sent as
        its cluster's root crashed)."""
        state = self.state
        unsettled = state.now < state.settle_until or state.node.root_in_doubt(msg.group)
        if unsettled and state.first_sight(msg.origin, msg.seq):
            state.history.record(msg, None, state.now - state.arrival_age - msg.age_ms / 1000)
            state.count("floods_kept_for_orphans")
        else:
            state.count("flood_no_tree")

    def _deliver(self, msg: Flood, tree: GroupTree) -> None:
        state = self.state
        payloads = msg.payloads
        if not state.in_order(msg.group, msg.origin, msg.seq, len(payloads)):
            if self.direct.delivered_directly(msg.origin, msg.seq):
                state.count("floods_delivered_directly")
            else:
                state.count("floods_out_of_order", len(payloads))
            return
        if tree.topic:
            if msg.group in state.topics:
                self._deliver_events(msg.group, msg.origin, msg.seq, payloads)
                self.direct.tree_delivered(msg.group, msg.origin)
        else:
            service = state.services.get(msg.group)
            if service is not None:
                # One copy per registration on this node; a slow handler cannot make them pile up.
                for payload in payloads:
                    for _ in range(service.members):
                        admitted = service.broadcasts.offer(payload, len(payload))
                        if admitted:
                            state.events.append(ev.BroadcastReceived(service.name, payload))
                        elif admitted is None:
                            state.count("broadcasts_dropped")

    def _deliver_events(self, group: int, origin: int, seq: int,
                        payloads: tuple[bytes, ...]) -> None:
        """Hand a subscribed topic's events to the application, under the topic's limits."""
        state = self.state
        topic = state.topics[group]
        events, limit = state.events, topic.limits.max_queued_bytes
        for payload in payloads:
            cost = len(payload) + ENTRY_COST
            if topic.queued_bytes + cost > limit:
                state.count("events_dropped")
            else:
                topic.queued_bytes += cost
                events.append(ev.EventReceived(topic.name, payload, origin, seq))
            seq += 1


def flood_aged(msg: Flood, seconds: float) -> Flood:
    """`msg` as it goes on after waiting `seconds` for a hop that did not acknowledge it."""
    return replace(msg, age_ms=min(msg.age_ms + int(seconds * 1000), MAX_AGE_MS))
