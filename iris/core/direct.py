"""Publish straight to the subscribers: each event also goes from its publisher to the
subscribers that asked for it, one direct message each, beside its copy through the tree.

Why: a topic's tree is shared by its publishers, so an event climbs from where it enters to
the common ancestor of publisher and subscriber and comes down, through the random places of
the upper tree nodes and the root; at 1,000 simulated nodes that made deliveries about 3.4
times slower than a direct message, and no shape of one shared tree came under 2.2
(docs/ARCHITECTURE.md, "Publish delay, where it goes"). A direct copy takes one hop.

How it stays correct: the tree still carries every event to every subscriber, so the direct
copy only ever makes one arrive sooner. It carries `prev`, the seq of the publisher's previous
event to the topic, and a subscriber delivers it only if that is the latest it delivered from
the publisher in that topic: a copy can then never overtake an older event, nor make one
dropped as out of order (`CoreState.in_order`). One that finds a gap (the tree has not brought
the previous event yet) is held, the newest one per publisher and topic, and goes as soon as
the tree delivers the event before it; without that, a publisher sending faster than the tree
is slower than the direct way never got its copies delivered again once one was early. One
that comes after the event it carries was delivered is discarded. A tree copy of an event
delivered directly is dropped silently, after it was passed along the tree. A publisher's
first event to a topic goes through the tree only (it has no `prev` it can vouch for), and so
does every event after it forgot the topic. No copy goes to a subscriber the tree's copy
reaches in its first hop (a tree neighbour of the publisher, or the next hop toward the root):
it would only double the traffic (two nodes publishing 1 KiB events to each other received
32% fewer per second with it).

Who gets copies: a subscriber that delivers an event from a publisher asks it
(`DirectSubscribe`) and asks again while events come (after half of `direct_ttl_s`, or after
`graft_retry_s` when the event came only through the tree); the publisher keeps, per topic it
published to lately, up to `direct_audience` subscribers that asked within `direct_ttl_s`, and
forgets a subscriber the overlay declared failed. A node that gets copies for a topic it does
not subscribe to asks the publisher to stop. All of it is bounded: `direct_topics` audiences
per publisher, `direct_asked` (topic, publisher) pairs per subscriber, `direct_held` copies
held per subscriber, none larger than `MAX_HELD_BYTES`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from iris.core.messages import DirectFlood, DirectSubscribe, Flood
from iris.core.state import CoreState

DIRECT = -2
"""Marks (origin, seq) of an event delivered from its direct copy in the de-duplication
record (`CoreState.first_sight`), apart from the floods seen along the tree."""

MAX_HELD_BYTES = 64 * 1024
"""A direct copy with more payload than this is not held: the tree's copy will do."""

Deliver = Callable[[int, int, int, tuple[bytes, ...]], None]
"""Hand a topic's events to the application: (group, origin, first seq, payloads)."""


class Audience:
    """The subscribers a publisher sends one topic's events straight to, and the last seq of
    its previous event there."""

    __slots__ = ("prev", "asked")

    def __init__(self, prev: int) -> None:
        self.prev = prev
        self.asked: OrderedDict[int, float] = OrderedDict()  # subscriber -> when it last asked


class DirectPublish:
    __slots__ = ("state", "deliver", "audiences", "asked", "held")

    def __init__(self, state: CoreState, deliver: Deliver) -> None:
        self.state = state
        self.deliver = deliver
        # Each made when first needed: most nodes publish nothing, and most never hold a copy.
        self.audiences: OrderedDict[int, Audience] | None = None
        self.asked: OrderedDict[tuple[int, int], float] | None = None
        self.held: OrderedDict[tuple[int, int], DirectFlood] | None = None  # (group, origin)

    # ----------------------------------------------------------------------- publisher side
    def published(self, msg: Flood) -> None:
        """`msg` went into its topic's tree: send the copies, and remember its last seq."""
        state = self.state
        audiences = self.audiences
        if audiences is None:
            audiences = self.audiences = OrderedDict()
        last = msg.seq + len(msg.payloads) - 1
        audience = audiences.get(msg.group)
        if audience is None:
            audiences[msg.group] = Audience(last)
            if len(audiences) > state.config.direct_topics:
                audiences.popitem(last=False)
            return
        audiences.move_to_end(msg.group)
        self._forget_stale(audience)
        if audience.asked:
            copy = DirectFlood(msg.group, msg.origin, msg.seq, audience.prev, msg.payloads)
            tree = state.trees.get(msg.group)
            first: set[int | None]
            if tree is not None:
                first = {tree.parent, *tree.children}
            else:
                first = {state.node.next_hop(msg.group)}
            for subscriber in audience.asked:
                if subscriber not in first:  # else the tree's own copy goes straight there
                    state.node.send(subscriber, copy)
        audience.prev = last

    def _forget_stale(self, audience: Audience) -> None:
        asked, oldest = audience.asked, self.state.now - self.state.config.direct_ttl_s
        while asked and next(iter(asked.values())) < oldest:
            asked.popitem(last=False)

    def on_subscribe(self, src: int, msg: DirectSubscribe) -> None:
        """A subscriber asks for copies (or no more): only for a topic we published to lately,
        and within the audience's bound."""
        audience = self.audiences.get(msg.group) if self.audiences else None
        if audience is None or src == self.state.node.id:
            return
        asked = audience.asked
        if not msg.on:
            asked.pop(src, None)
        elif src in asked or len(asked) < self.state.config.direct_audience:
            asked[src] = self.state.now
            asked.move_to_end(src)
        else:
            self.state.count("direct_audience_full")

    def peer_failed(self, peer: int) -> None:
        for audience in (self.audiences or {}).values():
            audience.asked.pop(peer, None)

    # ---------------------------------------------------------------------- subscriber side
    def on_copy(self, src: int, msg: DirectFlood) -> None:
        """A direct copy: delivered right after the publisher's previous event, or held
        until the tree delivers that."""
        state = self.state
        if src != msg.origin:
            state.count("direct_floods_refused")  # only the publisher sends its copies
            return
        if msg.group not in state.topics:
            state.node.send(src, DirectSubscribe(msg.group, False))
            return
        self._offer(msg)

    def _offer(self, msg: DirectFlood) -> None:
        state = self.state
        key = (msg.group, msg.origin)
        latest = state.latest.get(key)
        if latest == msg.prev:
            if state.in_order(msg.group, msg.origin, msg.seq, len(msg.payloads)):
                state.first_sight(msg.origin, msg.seq, DIRECT)
                self.deliver(msg.group, msg.origin, msg.seq, msg.payloads)
                self.heard(msg.group, msg.origin, directly=True)
                return
        elif ((latest is None or latest < msg.prev)
              and sum(map(len, msg.payloads)) <= MAX_HELD_BYTES):
            held = self.held
            if held is None:
                held = self.held = OrderedDict()
            held[key] = msg  # the newest copy: the older ones the tree brings first
            held.move_to_end(key)
            if len(held) > state.config.direct_held:
                held.popitem(last=False)
            return
        # Its event came through the tree already (or it is too large to hold, and will).
        state.count("direct_floods_behind")

    def tree_delivered(self, group: int, origin: int) -> None:
        """The tree delivered an event from `origin` here: a copy held for the event after it
        goes now, and we ask for copies if we did not lately."""
        held = self.held.pop((group, origin), None) if self.held else None
        if held is not None:
            self._offer(held)
        self.heard(group, origin, directly=False)

    def delivered_directly(self, origin: int, seq: int) -> bool:
        """Whether the event (origin, seq) was delivered here from its direct copy."""
        return self.state.has_seen(origin, seq, DIRECT)

    def heard(self, group: int, origin: int, directly: bool) -> None:
        """An event from `origin` in `group` was delivered here: ask for direct copies, unless
        we asked lately (half the publisher's memory of it; or, when copies did not come,
        the graft retry period)."""
        state = self.state
        if origin == state.node.id:
            return
        asked = self.asked
        if asked is None:
            asked = self.asked = OrderedDict()
        key = (group, origin)
        last = asked.get(key)
        wait = state.config.direct_ttl_s / 2 if directly else state.config.graft_retry_s
        if last is not None and state.now - last < wait:
            return
        asked[key] = state.now
        asked.move_to_end(key)
        if len(asked) > state.config.direct_asked:
            asked.popitem(last=False)
        state.node.send(origin, DirectSubscribe(group, True))
