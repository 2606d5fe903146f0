"""What the messaging protocols of one node share: the overlay node they speak through, the
configuration, the trees, the local services and topics, the event list the driver drains,
counters, the id source and the de-duplication record.

The protocols (`trees`, `walk`, `requests`, `flood`, `tunnels`) are separate objects that each
hold this one state, so none of them needs to import another to reach the data they all use.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

from iris.core.events import Event
from iris.core.limits import Gate, ServiceLimits, TopicLimits
from iris.core.replay import FloodHistory
from iris.core.tree import GroupTree
from overlay.ids import key_for
from overlay.node import OverlayNode

# Timer tokens: kind in the low 3 bits (`TK_BITS`), an id above.
TK_TICK, TK_REQUEST, TK_TUNNEL, TK_PARKED, TK_SURVEY = range(5)
TK_BITS = 3


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

    tree_late_beats: float = 1.1
    """A parent not heard for this many beats is late: the child's next beat to it, or its
    check half a beat after a beat, sends it a beat acknowledged, and a parent that does not
    acknowledge is replaced then rather than after `tree_silence_beats` (under churn at
    1,000 nodes: about a ninth of the events and half of the broadcasts missed before,
    docs/BENCHMARKS.md). A parent that answers costs one acknowledgement; one in time,
    nothing."""

    graft_retry_s: float = 3.0
    """A Subscribe not acknowledged within this is sent again."""

    reshape_quiet_s: float = 2.0
    """A tree node moves to a nearer ancestor, and a node adopts such a mover, only when no
    broadcast, event or survey passed it for this long (`iris.core.reshape`): longer than an
    event takes down the few hops the move cuts out."""

    reshape_reach: float = 1.5
    """A tree node moves to an ancestor whose round trip is at most this many times its
    parent's (`iris.core.reshape`). Measured at 1,000 nodes (docs/BENCHMARKS.md): 1.0 cut the
    publish stretch about half as much; 2.0 a little more, with about 40% more children at the
    busiest tree node."""

    reshape_calm_s: float = 60.0
    """Nor within this long of trouble at the node (the overlay declared a peer failed, a tree
    neighbour was lost, a root moved): a partition leaves events on stalled connections,
    delivered after the heal tens of seconds late, and a move meanwhile would let newer ones
    overtake them on the way it shortened."""

    replay_s: float = 9.0
    """A node grafting again after it lost its parent and the node adopting it send each other
    the floods of that tree they passed in the time it was cut off, up to this long before
    (`iris.core.replay`); so what comes again is at most about this late, short of the 10 s
    after which the checks count a flood as late. It must outlast the longest cut a late
    parent makes: 5.5 s late, found at a check up to 2.5 s later, then a hop's timeout (5 s
    missed a whole event whose cut-off members grafted 5-7 s after it; 8 s, one broadcast to
    a member cut off for 8.4 s, docs/BENCHMARKS.md)."""

    replay_floods: int = 4096
    replay_bytes: int = 4 * 1024 * 1024
    """Floods, and their payload bytes, a node keeps for that (all trees together); beyond,
    the oldest are forgotten first."""

    seen_ids: int = 16384
    """Broadcast/publish ids remembered per node for de-duplication (oldest forgotten)."""

    direct_audience: int = 256
    """Subscribers of one topic a publisher sends its events straight to (`iris.core.direct`);
    beyond, the others get them through the tree only."""

    direct_topics: int = 256
    """Topics a publisher keeps such an audience for (the least recently published forgotten)."""

    direct_asked: int = 4096
    """(topic, publisher) pairs a subscriber remembers having asked for direct copies."""

    direct_held: int = 64
    """Direct copies a subscriber holds until the tree brings the event before each (one per
    publisher and topic, the least recently held dropped first)."""

    direct_ttl_s: float = 60.0
    """A publisher stops sending straight to a subscriber that has not asked again for this
    long; a subscriber asks again after half of it while events come."""

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

    @property
    def park_retry_s(self) -> float:
        """How often a message parked at a settling root is tried again: an eighth of
        `root_settle_s`, and never less than 10 ms. A config whose roots answer at once
        (`root_settle_s` 0) still parks through a failure's settle, and a retry at the same
        instant would run the timer loop in place until the settle ends (in the simulator,
        forever)."""
        return max(self.root_settle_s / 8, 0.01)

    max_surveys: int = 4096
    """Surveys this node takes part in at once (as a tree node) and surveys it waits for (as
    their origin), each; beyond, a question is answered with nothing (its members counted as
    not answered) and a new survey is refused."""

    survey_root_share: float = 0.8
    """Of a survey's timeout, the share the root has to gather its tree's answers: the rest
    covers the question's way to the root and the root's batch's way back."""

    survey_child_share: float = 0.8
    """Of what a tree node has left of a survey's time, the share it passes its tree
    neighbours: the rest covers their batches' way back and its own."""

    def __post_init__(self) -> None:
        """Refuse, with the field's name, a config the core cannot run: a period of 0 would
        arm its timer at the same instant over and over, a tunnel window of 0 lets no byte
        through, no memory of seen ids delivers every duplicate, and a tunnel silent for less
        than its keepalive is declared dead between two keepalives. A limit of 0 is a choice
        (`max_tunnels=0` refuses every tunnel), and so are waits of 0."""
        for name in _POSITIVE:
            if getattr(self, name) <= 0:
                raise ValueError(f"MessagingConfig.{name} must be positive")
        for name in _NOT_NEGATIVE:
            if getattr(self, name) < 0:
                raise ValueError(f"MessagingConfig.{name} must not be negative")
        for name in ("survey_root_share", "survey_child_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"MessagingConfig.{name} must be above 0 and at most 1")
        if self.tunnel_silence_s <= self.tunnel_keepalive_s:
            raise ValueError("MessagingConfig.tunnel_silence_s must exceed tunnel_keepalive_s")


_POSITIVE = ("tree_beat_s", "tree_silence_beats", "tree_late_beats", "graft_retry_s",
             "reshape_reach", "direct_ttl_s", "tunnel_window", "tunnel_send_buffer",
             "tunnel_keepalive_s", "tunnel_silence_s", "seen_ids")
_NOT_NEGATIVE = ("reshape_quiet_s", "reshape_calm_s", "replay_s", "replay_floods",
                 "replay_bytes", "direct_audience", "direct_topics", "direct_asked",
                 "direct_held", "max_pending_requests", "max_tunnels", "max_trees",
                 "root_settle_s", "root_settle_after_failure_s", "max_parked", "max_surveys")


class Service:
    """A cluster this node serves: how many registrations, and the admission of its requests
    and broadcasts under the service's limits."""

    __slots__ = ("name", "members", "requests", "broadcasts")

    def __init__(self, name: str, limits: ServiceLimits) -> None:
        self.name = name
        self.members = 1  # registrations of this cluster on this node
        self.requests = Gate(limits.max_concurrency, limits.max_queued_bytes)
        self.broadcasts = Gate(limits.max_broadcast_concurrency, limits.max_queued_broadcast_bytes)


@dataclass(slots=True)
class Topic:
    """A topic this node subscribes to, with the bytes of events not consumed yet."""

    name: str
    limits: TopicLimits
    queued_bytes: int = 0


class CoreState:
    __slots__ = (
        "node", "config", "events", "trees", "services", "topics", "seen", "latest", "counters",
        "_next_id", "ticking", "between_beats", "settle_until", "arrival_age", "trouble_at",
        "history",
    )

    def __init__(self, node: OverlayNode, config: MessagingConfig) -> None:
        self.node = node
        self.config = config
        self.events: list[Event] = []
        self.trees: dict[int, GroupTree] = {}
        self.services: dict[int, Service] = {}
        self.topics: dict[int, Topic] = {}
        self.seen: OrderedDict[tuple[int, int, int], None] = OrderedDict()
        # (group, origin) -> the seq of the latest flood delivered here from that origin
        self.latest: OrderedDict[tuple[int, int], int] = OrderedDict()
        self.counters: dict[str, int] = {}
        self._next_id = 0
        self.ticking = False  # the tree beat timer is set
        self.between_beats = False  # the timer set is the check half a beat after a beat
        self.settle_until = -1e9  # a new root parks requests for unknown groups until then
        # How long before `now` the messages being received may have arrived: the driver sets
        # it while it delivers what piled up during a freeze of its process (0 otherwise).
        self.arrival_age = 0.0
        # When the overlay last declared a peer failed, a tree neighbour was lost or a root
        # moved: trees are not reshaped for a while after (`MessagingConfig.reshape_calm_s`).
        self.trouble_at = -1e9
        # The floods this node passed lately, sent again to mend a broken tree path.
        self.history = FloodHistory(config.replay_s, config.replay_floods, config.replay_bytes)

    @property
    def now(self) -> float:
        return self.node.now

    def new_id(self) -> int:
        """One sequence for request ids, flood sequence numbers, tunnel ids and tokens."""
        self._next_id += 1
        return self._next_id

    def new_ids(self, n: int) -> int:
        """`n` consecutive ids (a batch of floods); returns the first."""
        first = self._next_id + 1
        self._next_id += n
        return first

    def count(self, what: str, n: int = 1) -> None:
        self.counters[what] = self.counters.get(what, 0) + n

    def settle(self, period: float) -> None:
        self.settle_until = max(self.settle_until, self.now + period)

    def first_sight(self, origin: int, seq: int, hops: int = 0) -> bool:
        """True the first time (origin, seq, hops) is seen (within the bounded record)."""
        seen = self.seen
        key = (origin, seq, hops)
        if key in seen:
            return False
        seen[key] = None
        if len(seen) > self.config.seen_ids:
            seen.popitem(last=False)
        return True

    def has_seen(self, origin: int, seq: int, hops: int = 0) -> bool:
        """Whether (origin, seq, hops) is in the bounded record, without adding it."""
        return (origin, seq, hops) in self.seen

    def in_order(self, group: int, origin: int, seq: int, count: int = 1) -> bool:
        """True when floods `seq` .. `seq + count - 1` from `origin` in `group` are newer than
        every one delivered here from it (seqs grow at each origin), and the last becomes the
        latest; a bounded record, the origins least recently heard forgotten first."""
        latest, key = self.latest, (group, origin)
        last = latest.get(key)
        if last is not None and seq <= last:
            return False
        latest[key] = seq + count - 1
        latest.move_to_end(key)
        if len(latest) > self.config.seen_ids:
            latest.popitem(last=False)
        return True

    def ensure_tick(self) -> None:
        """Arm the tree beat (it also checks tunnels) unless it is armed already."""
        if not self.ticking and self.node.active:
            self.ticking = True
            jitter = self.node.rng.uniform(0.5, 1.0)
            self.node.schedule(self.now + self.config.tree_beat_s * jitter, TK_TICK)
