"""The messaging core of one node: clusters, balanced requests, broadcast, publish/subscribe
and tunnels, as a sans-IO `OverlayApp` above one `OverlayNode`.

The application side calls methods (`register`, `request`, `reply`, `broadcast`, `subscribe`,
`publish`, `open_tunnel`, `tunnel_send`, `tunnel_consumed`, `tunnel_close`, ...) and drains
`events`; the driver feeds the overlay node as usual. Time comes from the overlay node's clock,
randomness from its RNG. This class only routes calls and upcalls to the protocols, one module
each: `trees` (Scribe trees and their upkeep), `walk` (one member chosen by capacity),
`requests` (both ends of a request), `flood` (broadcast and publish), `survey` (ask every
member, gather the answers up the tree) and `tunnels`.

Why one tree per cluster, not Iris's five: requests enter the tree at the first tree node on
their route (for a large cluster, usually below the root), broadcasts are flooded from wherever
they enter, and a topic needs one tree for per-publisher order. Five trees would multiply tree
upkeep five-fold for a load the root does not carry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iris.core import events as ev
from iris.core.events import Event
from iris.core.flood import Flooding, flood_aged
from iris.core.limits import ENTRY_COST, ServiceLimits, TopicLimits
from iris.core.messages import (
    MAX_SURVEY_BYTES,
    DirectFlood,
    DirectSubscribe,
    Flood,
    Moved,
    Prune,
    Replayed,
    Reply,
    Request,
    Subscribe,
    SurveyAnswers,
    SurveyAsk,
    TreeAck,
    TreeDown,
    TreeUp,
    TunnelAccept,
    TunnelClose,
    TunnelCredit,
    TunnelData,
    TunnelOpen,
)
from iris.core.requests import Requests
from iris.core.state import (
    TK_BITS,
    TK_PARKED,
    TK_REQUEST,
    TK_SURVEY,
    TK_TICK,
    TK_TUNNEL,
    CoreState,
    MessagingConfig,
    Service,
    Topic,
    cluster_group,
    topic_group,
)
from iris.core.survey import Surveys
from iris.core.survey import aged as survey_aged
from iris.core.tree import GroupTree
from iris.core.trees import Trees
from iris.core.tunnel_end import TunnelEnd
from iris.core.tunnels import TunnelKey, Tunnels
from iris.core.walk import Walk
from overlay.node import OverlayApp, OverlayNode
from overlay.wire import Message

THAWED_S = 1.0
"""A message read this long after it arrived (`CoreState.arrival_age`) says this process was
frozen (the runtime's `FreezeWatch` counts a gap of a second past its tick as a freeze), or a
segment was retransmitted more than once: either way the ring may have gone on without us."""

__all__ = ["MessagingConfig", "MessagingCore", "cluster_group", "topic_group"]


class MessagingCore(OverlayApp):
    # A request, publish or graft whose root is suspected goes on at once where the suspect is
    # routed around, rather than wait for the verdict (two probe timeouts or more): a caller
    # with a 2 s deadline would time out behind a frozen root, and the layer copes with roots in
    # doubt itself (`Walk._wait_for_members`, grafts when `root_moved`).
    consistent_roots = False

    def __init__(self, node: OverlayNode, config: MessagingConfig | None = None) -> None:
        self.node = node
        node.app = self
        state = self.state = CoreState(node, config or MessagingConfig())
        self.trees_protocol = Trees(state)
        self.requests = Requests(state)
        self.tunnels_protocol = Tunnels(state)
        self.walk = Walk(state, self.trees_protocol, self.requests.arrive,
                         self.tunnels_protocol.accept)
        self.flood = Flooding(state)
        self.surveys = Surveys(state)
        self._direct: dict[type[Message], Callable[[int, Any], None]] = {
            TreeAck: self.trees_protocol.on_tree_ack,
            Prune: self.trees_protocol.on_prune,
            Moved: self.trees_protocol.on_moved,
            TreeUp: self.trees_protocol.on_tree_up,
            TreeDown: self.trees_protocol.on_tree_down,
            Request: self._on_walk,
            TunnelOpen: self._on_walk,
            Reply: self.requests.on_reply,
            Flood: self.flood.on_flood,
            Replayed: self.flood.on_flood,
            TunnelAccept: self.tunnels_protocol.on_accept,
            TunnelData: self.tunnels_protocol.on_data,
            TunnelCredit: self.tunnels_protocol.on_credit,
            TunnelClose: self.tunnels_protocol.on_close,
            SurveyAsk: self._on_survey_ask,
            SurveyAnswers: self.surveys.on_answers,
            Subscribe: self.trees_protocol.asked,
            DirectFlood: self.flood.direct.on_copy,
            DirectSubscribe: self.flood.direct.on_subscribe,
        }

    # The state the driver and the tests read.
    @property
    def config(self) -> MessagingConfig:
        return self.state.config

    @property
    def events(self) -> list[Event]:
        return self.state.events

    @events.setter
    def events(self, value: list[Event]) -> None:
        self.state.events = value

    @property
    def counters(self) -> dict[str, int]:
        return self.state.counters

    @property
    def trees(self) -> dict[int, GroupTree]:
        return self.state.trees

    @property
    def services(self) -> dict[int, Service]:
        return self.state.services

    @property
    def topics(self) -> dict[int, Topic]:
        return self.state.topics

    @property
    def tunnels(self) -> dict[TunnelKey, TunnelEnd]:
        return self.tunnels_protocol.ends

    # ================================================================== application side
    def register(self, cluster: str, limits: ServiceLimits | None = None) -> None:
        """Become a member of `cluster` (again: one more member on this node)."""
        group = cluster_group(cluster)
        service = self.state.services.get(group)
        if service is None:
            self.state.services[group] = Service(cluster, limits or ServiceLimits())
        else:
            service.members += 1
        self.trees_protocol.join(group, cluster, topic=False)

    def unregister(self, cluster: str) -> None:
        group = cluster_group(cluster)
        service = self.state.services.get(group)
        if service is None:
            return
        service.members -= 1
        if service.members <= 0:
            del self.state.services[group]
        self.trees_protocol.leave(group)

    def subscribe(self, topic: str, limits: TopicLimits | None = None) -> None:
        group = topic_group(topic)
        if group in self.state.topics:
            return
        self.state.topics[group] = Topic(topic, limits or TopicLimits())
        self.trees_protocol.join(group, topic, topic=True)

    def unsubscribe(self, topic: str) -> None:
        group = topic_group(topic)
        if self.state.topics.pop(group, None) is not None:
            self.trees_protocol.leave(group)

    def request(self, cluster: str, payload: bytes, timeout: float) -> int:
        """Send a request to one member of `cluster`; the answer comes as `RequestDone`."""
        return self.requests.request(cluster, payload, timeout)

    def reply(self, token: int, payload: bytes = b"", error: str | None = None) -> None:
        """Answer a `RequestReceived` (an `error` text makes it a remote error)."""
        self.requests.reply(token, payload, error)

    def expired(self, token: int) -> None:
        """A `RequestReceived` the application did not start: its caller gave up already (no
        reply: the caller's own deadline reports it)."""
        self.requests.expired(token)

    def broadcast(self, cluster: str, payload: bytes) -> None:
        self.flood.start(cluster_group(cluster), (payload,))

    def publish(self, topic: str, payload: bytes) -> None:
        self.flood.publish(topic_group(topic), (payload,))

    def publish_batch(self, topic: str, payloads: tuple[bytes, ...]) -> None:
        """Publish `payloads` in order as one `Flood` (at most `MAX_FLOOD_BATCH` of them):
        routed, acknowledged and deduplicated once, delivered one by one."""
        self.flood.publish(topic_group(topic), payloads)

    def event_done(self, topic: str, nbytes: int) -> None:
        """The application consumed an event of `nbytes` (frees room under TopicLimits)."""
        t = self.state.topics.get(topic_group(topic))
        if t is not None:
            t.queued_bytes = max(0, t.queued_bytes - nbytes - ENTRY_COST)

    def broadcast_done(self, cluster: str) -> None:
        """The application handled a `BroadcastReceived` (frees a slot under ServiceLimits)."""
        service = self.state.services.get(cluster_group(cluster))
        if service is not None:
            for payload in service.broadcasts.done():
                self.state.events.append(ev.BroadcastReceived(service.name, payload))

    def survey(self, cluster: str, payload: bytes, timeout: float,
               max_bytes: int = MAX_SURVEY_BYTES) -> int:
        """Ask every member of `cluster` (`iris.core.survey`); the outcome comes as
        `SurveyDone` with the id returned. At most `max_bytes` of answers are gathered."""
        return self.surveys.survey(cluster, payload, timeout, max_bytes)

    def survey_answer(self, token: int, data: bytes | None) -> None:
        """Answer a `SurveyReceived` (None: no answer; the member counts as not answered)."""
        self.surveys.answer(token, data)

    def open_tunnel(self, cluster: str, timeout: float) -> TunnelKey:
        return self.tunnels_protocol.open(cluster, timeout)

    def tunnel_send(self, key: TunnelKey, data: bytes) -> None:
        """Queue one message; raises TunnelError when closed or the send buffer is full."""
        self.tunnels_protocol.send(key, data)

    def tunnel_consumed(self, key: TunnelKey, nbytes: int) -> None:
        self.tunnels_protocol.consumed(key, nbytes)

    def tunnel_close(self, key: TunnelKey, reason: str = "") -> None:
        self.tunnels_protocol.close(key, reason)

    # ======================================================================= overlay upcalls
    def _thawed(self) -> None:
        """A message that waited `THAWED_S` or longer to be read: most often this process was
        frozen, and the ring went on without it (its trees' members grafted to a
        node standing in for it, which grafts back only once it hears of us again). Until
        that settles, a request for a group this node finds no member of waits as at a new
        root, rather than "no members" while the members are a moment away (real processes,
        `iris chaos --fault pause`: a thawed root so answered 17-21 requests in 2.5 s)."""
        if self.state.arrival_age >= THAWED_S:
            self.state.settle(self.config.root_settle_after_failure_s)

    def deliver(self, key: int, payload: Message, origin: int, hops: int) -> None:
        self._thawed()
        if isinstance(payload, Subscribe):
            self.trees_protocol.subscribe_at_root(payload)
        elif isinstance(payload, (Request, TunnelOpen)):
            self.walk.enter(payload)
        elif isinstance(payload, Flood):
            if payload.group in self.state.trees:
                self.flood.spread(payload, None)
            else:
                self.flood.without_tree(payload)
        elif isinstance(payload, SurveyAsk):
            self.surveys.arrive(payload, None)

    def forward(self, key: int, payload: Message, next_hop: int) -> Message | None:
        self._thawed()
        if isinstance(payload, Subscribe):
            return self.trees_protocol.subscribe_passing(payload)
        if isinstance(payload, (Request, TunnelOpen)):
            if payload.group in self.state.trees and payload is not self.walk.routing:
                self.walk.enter(payload)
                return None
            if isinstance(payload, Request) and self.state.arrival_age:
                # It arrived late (a frozen process's backlog, a link's retransmission): its
                # caller's time left goes on less that wait, as at a walk's step.
                return self.walk.aged(payload, self.state.arrival_age)
        elif isinstance(payload, Flood):
            tree = self.state.trees.get(payload.group)
            if tree is not None:
                self.flood.spread(payload, None)
                if not tree.grafting:
                    return None
                # Our graft is still on its way: what we spread reaches our subtree only, so
                # the flood goes on toward the root too (each node drops what it has seen).
                # Sending it up once adopted covers only a node grafting after a cut; one new
                # to the tree sends its new parent nothing.
        return payload

    def receive_direct(self, src: int, payload: Message) -> None:
        self._thawed()
        handler = self._direct.get(type(payload))
        if handler is not None:
            handler(src, payload)
        else:
            self.state.count("unexpected_direct")

    def _on_survey_ask(self, src: int, msg: SurveyAsk) -> None:
        self.surveys.arrive(msg, src)

    def _on_walk(self, src: int, msg: Request | TunnelOpen) -> None:
        self.walk.step_from(msg, src)

    def activated(self) -> None:
        self.state.settle(self.config.root_settle_s)
        self.state.ensure_tick()

    def leafset_changed(self) -> None:
        self.state.settle(self.config.root_settle_s)
        self.trees_protocol.root_moved()

    def link_lost(self, peer: int) -> None:
        self.trees_protocol.link_lost(peer)

    def suspect_cleared(self, peer: int) -> None:
        self.trees_protocol.root_moved()  # a root we took over while it was suspected

    def peer_failed(self, peer: int) -> None:
        self.state.settle(self.config.root_settle_after_failure_s)
        self.state.trouble_at = self.state.now
        self.trees_protocol.neighbour_failed(peer)
        self.tunnels_protocol.peer_failed(peer)
        self.surveys.peer_failed(peer)
        self.flood.direct.peer_failed(peer)

    def aged(self, payload: Message, seconds: float) -> Message | None:
        """A hop did not acknowledge `payload` and it goes on another way: a request's time
        left counts the wait (each unacknowledged hop costs the hop timeout, 0.6 s or more), and
        so does a flood's age."""
        if isinstance(payload, Request):
            return self.walk.aged(payload, seconds)
        if isinstance(payload, SurveyAsk):
            return survey_aged(payload, seconds)
        if isinstance(payload, Flood):
            return flood_aged(payload, seconds)
        return payload

    def undeliverable(self, peer: int, payload: Message) -> None:
        """A walk step was not acknowledged: drop that neighbour from the tree and walk on.
        A tunnel keep-alive was not: the tunnel's peer is gone. A late parent's beat was not:
        graft again; a child's, after its connection ended: drop it."""
        if isinstance(payload, TunnelCredit):
            self.tunnels_protocol.keepalive_lost(peer, payload)
        elif isinstance(payload, (Request, TunnelOpen)):
            self.walk.step_lost(peer, payload)
        elif isinstance(payload, SurveyAsk):
            self.surveys.lost(peer, payload)
        elif isinstance(payload, TreeUp):
            self.trees_protocol.beat_lost(peer, payload)
        elif isinstance(payload, TreeDown):
            self.trees_protocol.beat_down_lost(peer, payload)

    def timer(self, token: int) -> None:
        kind, ident = token & ((1 << TK_BITS) - 1), token >> TK_BITS
        if kind == TK_TICK:
            self._tick()
        elif kind == TK_REQUEST:
            self.requests.expire()
        elif kind == TK_TUNNEL:
            self.tunnels_protocol.open_expired(ident)
        elif kind == TK_PARKED:
            self.walk.release_parked()
        elif kind == TK_SURVEY:
            self.surveys.timer(ident)

    def _tick(self) -> None:
        """The beat: tree upkeep and tunnel keep-alives, then the next beat while either
        has something to keep; half a beat after each, a check for late tree parents."""
        state = self.state
        state.ticking = False
        if state.between_beats:
            self.trees_protocol.check_late()
        else:
            self.trees_protocol.beat()
            self.tunnels_protocol.tick()
        if state.trees or self.tunnels_protocol.ends:
            state.ticking = True
            state.between_beats = not state.between_beats
            state.node.schedule(state.now + state.config.tree_beat_s / 2, TK_TICK)
        else:
            state.between_beats = False
