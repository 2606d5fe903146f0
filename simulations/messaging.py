"""Messaging scenarios in the simulator: clusters, requests, broadcasts, topics, a tunnel.

Every node runs a `MessagingCore` with a scripted application on top
(`simulations.messaging_workload`), which scores every delivery exactly. The scenarios here
build a ring, set up the groups, drive the traffic, disturb the ring (churn, a partition) and
report what the scoring found.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from iris.core import OK, MessagingCore, cluster_group, topic_group, tunnel_of
from iris.core import events as ev
from simulations import checkers, timeline
from simulations.connections import link_policy
from simulations.engine import Simulation
from simulations.messaging_workload import (
    MessagingWorkload,
    RequestRecord,
    SimMessaging,
    TunnelKey,
    core_of,
)
from simulations.network import NetworkConfig
from simulations.report import Check, judge
from simulations.scenarios import ScenarioOptions, base_result, build_ring, link_figures

CLUSTER_SIZES = (1, 3, 5, 10, 20, 35, 50, 65, 80, 100)
TOPIC_COUNT = 20
MAX_SUBSCRIBERS = 200

AFTER_HEAL_S = 20.0  # messaging-partition: events go on this long after the heal
SETTLED_S = 10.0  # ... and every one published this long after it must reach every subscriber

_TunnelEvent = TypeVar("_TunnelEvent", ev.TunnelIncoming, ev.TunnelOpened)

# What the messaging scenarios check (`simulations.report.judge`), where several do.
_REQUEST_OUTCOMES = ("requests", "request_errors", "request_timeouts", "request_unresolved")
REQUESTS_ALL_ANSWERED = Check("request_success_ratio", "==", 1.0,
                              "requests from live nodes answered OK", context=_REQUEST_OUTCOMES)
REQUESTS_MOSTLY_ANSWERED = Check("request_success_ratio", ">=", 0.99,
                                 "requests from live nodes answered OK",
                                 context=_REQUEST_OUTCOMES)
NO_REQUEST_DUPLICATES = Check("request_duplicates", "==", 0,
                              "requests handled more than once")
NO_MISDELIVERY = Check("request_misdelivered", "==", 0,
                       "requests handled outside their cluster, or replies matched wrongly")
NO_ORDER_VIOLATIONS = Check("publish_order_violations", "==", 0,
                            "events delivered out of their publisher's order")
TUNNEL_IN_ORDER = Check("tunnel_in_order", "true", None,
                        "every numbered tunnel message arrived, in order")


# ======================================================================== scenario plumbing
@dataclass
class MessagingOptions(ScenarioOptions):
    requests: int = 20_000
    request_rate: float = 1000.0
    broadcasts: int = 200
    publishes: int = 1000
    tunnel_messages: int = 10_000
    tunnel_big_mib: int = 10
    churn_fraction: float = 0.10
    pause_s: float = 15.0


def make_messaging_sim(opts: ScenarioOptions) -> tuple[Simulation, MessagingWorkload]:
    """The messaging layer runs over TCP in the real runtime: by default its links are modelled
    as connections; as datagrams they are at least in order (`fifo`)."""
    net = NetworkConfig(loss=opts.loss, duplicate=opts.duplicate, fifo=True)
    sim = Simulation(opts.seed, network=net, app_factory=SimMessaging, wire=opts.wire,
                     links=link_policy(opts.links or "connections"))
    sim.near_seeds = opts.near_seeds
    work = MessagingWorkload(sim)
    timeline.attach(sim, work)
    return sim, work


def setup_groups(
    sim: Simulation, work: MessagingWorkload, opts: ScenarioOptions
) -> dict[str, Any]:
    rng = sim.rng
    ids = list(sim.active)
    timeline.phase(sim, "grouping")
    sizes = [min(s, len(ids)) for s in CLUSTER_SIZES]
    for i, size in enumerate(sizes):
        for node in rng.sample(ids, size):
            work.register(node, f"c{i}")
    for i in range(TOPIC_COUNT):
        size = max(1, round(1 + (min(MAX_SUBSCRIBERS, len(ids)) - 1) * i / (TOPIC_COUNT - 1)))
        for node in rng.sample(ids, size):
            work.subscribe(node, f"t{i}")
    settle = sim.run_until(work.all_grafted, timeout=60.0, check_every=0.5)
    # Two tree beats: capacities have travelled the whole tree, so balancing is as designed.
    sim.run_for(2 * work.core(ids[0]).config.tree_beat_s)
    return {"clusters": len(sizes), "topics": TOPIC_COUNT, "graft_s": settle}


def run_requests(sim: Simulation, work: MessagingWorkload, count: int, rate: float,
                 requesters: Callable[[], int] | None = None,
                 clusters: list[str] | None = None) -> None:
    """`count` requests at `rate` from random nodes (or `requesters()`) to random clusters,
    weighted by their size (or to the given `clusters`)."""
    rng = sim.rng
    clusters = clusters or sorted(work.members)
    weights = [len(work.members[c]) for c in clusters]
    start = sim.now
    sent = 0

    def next_request() -> None:
        nonlocal sent
        requester = requesters() if requesters else sim.random_active()
        cluster = rng.choices(clusters, weights)[0]
        work.request(requester, cluster)
        sent += 1
        if sent < count:
            sim.at(start + sent / rate, next_request)

    if count:
        sim.at(start, next_request)


def run_floods(sim: Simulation, work: MessagingWorkload, broadcasts: int, publishes: int,
               span: float) -> None:
    """Broadcasts to random clusters from random nodes; publishes from 3 publishers per topic."""
    rng = sim.rng
    clusters = sorted(work.members)
    topics = sorted(work.subscribers)
    start = sim.now
    for i in range(broadcasts):
        sim.at(start + span * i / max(1, broadcasts),
               lambda: work.flood(sim.random_active(), rng.choice(clusters), False))
    publishers = {t: [sim.random_active() for _ in range(3)] for t in topics}
    for i in range(publishes):
        topic = topics[i % len(topics)]

        def publish(topic: str = topic) -> None:
            origin = rng.choice(publishers[topic])
            if origin in sim.nodes:
                work.flood(origin, topic, True)

        sim.at(start + span * i / max(1, publishes), publish)


def tree_quality(sim: Simulation) -> dict[str, Any]:
    max_children = 0
    for node in sim.nodes.values():
        app = node.app
        if isinstance(app, MessagingCore):
            for tree in app.trees.values():
                max_children = max(max_children, len(tree.children))
    return {"max_children": max_children}


class TunnelRun:
    """One tunnel from a random node to `cluster`: `messages` numbered messages, then one big
    message; `finish()` waits for them and checks order and integrity.

    With `consume_bps` the receiving application reads at that many bytes per simulated
    second, so the sender runs into the window and must wait for credit."""

    def __init__(self, sim: Simulation, work: MessagingWorkload, cluster: str, messages: int,
                 big_mib: int, size: int = 1024, consume_bps: float | None = None) -> None:
        self.sim, self.work, self.messages, self.big_mib = sim, work, messages, big_mib
        timeline.phase(sim, "tunnel opening")
        self.sent = 0
        self.opener = opener = sim.random_active()
        if consume_bps is not None:
            self._consume_on_a_clock(consume_bps)
        key = work.act(opener, lambda core: core.open_tunnel(cluster, timeout=10.0))
        assert key is not None  # the opener is a live node
        self.key: TunnelKey = key
        self.window = work.core(opener).config.tunnel_window  # (the opener may die later)
        sim.run_until(lambda: self.member is not None and self.opened, timeout=15.0,
                      check_every=0.1)
        self.filler = b"m" * max(0, size - 8)
        self.wall = time.perf_counter()
        if self.opened:
            sim.at(sim.now, self._send_some)

    def _event(self, kind: type[_TunnelEvent]) -> tuple[int, _TunnelEvent] | None:
        for me, event in self.work.tunnel_events:
            if isinstance(event, kind) and tunnel_of(event.key) == self.key:
                return me, event
        return None

    @property
    def opened(self) -> bool:
        return self._event(ev.TunnelOpened) is not None

    @property
    def member(self) -> int | None:
        found = self._event(ev.TunnelIncoming)
        return None if found is None else found[0]

    def _consume_on_a_clock(self, consume_bps: float) -> None:
        sim, work = self.sim, self.work
        work.slow_consumer = True
        period = 0.01

        def consume() -> None:
            budget = int(consume_bps * period)
            for (node_id, key), pending in list(work.unconsumed.items()):
                take = min(pending, budget)
                if take and node_id in sim.nodes:
                    work.unconsumed[(node_id, key)] -= take
                    work.tunnel_consumed(node_id, key, take)
            sim.at(sim.now + period, consume)

        sim.at(sim.now + period, consume)

    def _send_some(self) -> None:
        sim, work, key = self.sim, self.work, self.key
        if self.opener not in sim.nodes:
            return
        core = work.core(self.opener)
        tunnel = core.tunnels.get(key)
        if tunnel is None:
            return
        # Keep about one window queued: the application waits for credit like a real one.
        while self.sent < self.messages and tunnel.queued_bytes < self.window:
            work.tunnel_send(self.opener, key, self.sent.to_bytes(8, "big") + self.filler)
            self.sent += 1
        if self.sent < self.messages:
            sim.at(sim.now + 0.01, self._send_some)

    def finish(self) -> dict[str, Any]:
        sim, work, key, messages = self.sim, self.work, self.key, self.messages
        if not self.opened:
            return {"tunnel_messages": 0, "tunnel_in_order": False, "tunnel_opened": False}
        log = work.tunnel_log[key]
        timeline.phase(sim, "tunnel")
        sim.run_until(lambda: self.sent >= messages and len(log) >= messages,
                      timeout=600.0, check_every=0.5)
        stream_max_buffered = work.tunnel_max_buffered
        big = bytes(range(256)) * (self.big_mib * 4096)
        # The tunnel may have closed meanwhile (its opener or member failed, a keep-alive went
        # unacknowledged on a lossy network): then there is no big message to send.
        still_open = self.opener in sim.nodes and key in work.core(self.opener).tunnels
        if self.big_mib and still_open:
            work.tunnel_send(self.opener, key, big)
            sim.run_until(lambda: len(log) > messages, timeout=120.0, check_every=0.2)
        numbered = log[:messages]
        in_order = len(numbered) == messages and all(
            int.from_bytes(m[:8], "big") == i for i, m in enumerate(numbered))
        return {
            "tunnel_messages": len(numbered),
            "tunnel_in_order": in_order,
            "tunnel_big_intact": (
                (len(log) > messages and log[messages] == big) if self.big_mib else None),
            "tunnel_max_buffered": stream_max_buffered,
            "tunnel_closed_early": not still_open,
            "tunnel_window": self.window,
            "tunnel_wall_s": round(time.perf_counter() - self.wall, 2),
            "tunnel_key": key,
        }


def run_tunnel(sim: Simulation, work: MessagingWorkload, cluster: str, messages: int,
               big_mib: int, size: int = 1024, consume_bps: float | None = None) -> dict[str, Any]:
    return TunnelRun(sim, work, cluster, messages, big_mib, size, consume_bps).finish()


def _finish(result: dict[str, Any], sim: Simulation, wall: float) -> dict[str, Any]:
    timeline.phase(sim, "done")
    result.update(link_figures(sim))
    result["events"] = sim.events
    result["wall_s"] = round(time.perf_counter() - wall, 3)
    result["sim_s"] = round(sim.now, 3)
    result["digest"] = sim.digest()[:16]
    return result


def scenario_messaging(opts: ScenarioOptions) -> dict[str, Any]:
    """Stable ring: every pattern, scored exactly."""
    wall = time.perf_counter()
    opts, sim, work, result = _grouped_ring("messaging", opts)
    span = opts.requests / opts.request_rate
    run_requests(sim, work, opts.requests, opts.request_rate)
    run_floods(sim, work, opts.broadcasts, opts.publishes, span)
    timeline.phase(sim, "traffic", until=sim.now + span + 10.0)
    sim.run_for(span + 10.0)
    largest = max(work.members, key=lambda c: len(work.members[c]))
    result.update(work.request_summary(largest))
    result.update(work.flood_summary(topic=False))
    result.update(work.flood_summary(topic=True))
    result.update(order_figures(sim, work))
    result.update(work.stretch.figures("publish"))
    result.update(work.stretch_breakdown())
    result.update(work.broadcast_stretch.figures("broadcast"))
    result.update(tree_quality(sim))
    result.update(run_tunnel(sim, work, largest, opts.tunnel_messages, opts.tunnel_big_mib))
    result.pop("tunnel_key", None)
    leaf = checkers.check_leaf_sets(sim)
    result["leaf_sets_checked"] = leaf.checked
    result["leaf_sets_wrong"] = leaf.wrong
    judge(result, (
        REQUESTS_ALL_ANSWERED, NO_REQUEST_DUPLICATES, NO_MISDELIVERY,
        Check("broadcast_delivery_ratio", "==", 1.0,
              "broadcasts' deliveries to the live members that were grafted when sent"),
        Check("broadcast_duplicates", "==", 0, "broadcasts delivered twice to one member"),
        Check("publish_delivery_ratio", "==", 1.0,
              "events' deliveries to the live subscribers that were grafted when published"),
        Check("publish_duplicates", "==", 0, "events delivered twice to one subscriber"),
        NO_ORDER_VIOLATIONS, TUNNEL_IN_ORDER,
        Check("balance_dispersion", "<=", 1.6,
              "variance over mean of the requests the largest cluster's members handled (1 when "
              "picked at random by capacity; 1.6 is four standard deviations at 100 members)",
              none_passes=True),
        Check("leaf_sets_checked", ">=", 1, "active nodes whose leaf sets were checked"),
        Check("leaf_sets_wrong", "==", 0, "active nodes whose leaf set differs from the truth"),
    ))
    return _finish(result, sim, wall)


def _grouped_ring(name: str, options: ScenarioOptions
                  ) -> tuple[MessagingOptions, Simulation, MessagingWorkload, dict[str, Any]]:
    """Every messaging scenario's start: a ring built, its clusters and topics set up."""
    opts = _messaging_options(options)
    sim, work = make_messaging_sim(opts)
    result = base_result(name, opts)
    build_ring(sim, opts)
    result.update(setup_groups(sim, work, opts))
    return opts, sim, work, result


def _messaging_options(opts: ScenarioOptions) -> MessagingOptions:
    if isinstance(opts, MessagingOptions):
        return opts
    return MessagingOptions(**vars(opts))


def trees_consistent(sim: Simulation, work: MessagingWorkload) -> bool:
    """Every group has one tree: a single root, the live node closest to the group id, and
    every live grafted member reaches it through live parents."""
    live = sim.nodes
    for names, topic in ((work.members, False), (work.subscribers, True)):
        for name, audience in names.items():
            group = topic_group(name) if topic else cluster_group(name)
            root = checkers.true_root(sim, group)
            root_tree = work.core(root).trees.get(group)
            if root_tree is None or not root_tree.is_root():
                return False
            for member in audience:
                if member not in live:
                    continue
                current, steps = member, 0
                while current != root:
                    tree = work.core(current).trees.get(group) if current in live else None
                    if tree is None or tree.parent is None or steps > 64:
                        return False
                    current, steps = tree.parent, steps + 1
    return True


def verify_delivery(sim: Simulation, work: MessagingWorkload) -> dict[str, Any]:
    """One broadcast to every cluster, one publish to every topic, one request per cluster
    from random nodes; all must arrive."""
    start = sim.now
    before = len(work.requests)
    for cluster in sorted(work.members):
        work.flood(sim.random_active(), cluster, False)
        work.request(sim.random_active(), cluster)
    for topic in sorted(work.subscribers):
        work.flood(sim.random_active(), topic, True)
    sim.run_for(6.0)
    recent = list(work.requests.values())[before:]
    b = work.flood_summary(topic=False, since=start)
    p = work.flood_summary(topic=True, since=start)
    return {
        "verify_request_success_ratio": sum(r.status == OK for r in recent) / len(recent),
        "verify_broadcast_delivery_ratio": b["broadcast_delivery_ratio"],
        "verify_publish_delivery_ratio": p["publish_delivery_ratio"],
    }


def scenario_messaging_partition(opts: ScenarioOptions) -> dict[str, Any]:
    """Split into halves; requests while split and events published from the split until
    well after the heal; time until trees are whole again, and whether any event arrived
    late or out of order (what stalled connections did to real processes)."""
    wall = time.perf_counter()
    opts, sim, work, result = _grouped_ring("messaging-partition", opts)
    ids = list(sim.active)
    sim.rng.shuffle(ids)
    halves = [ids[0::2], ids[1::2]]
    side = {n: i for i, half in enumerate(halves) for n in half}
    sim.partition(halves)
    timeline.phase(sim, "partitioned", until=sim.now + opts.partition_s)
    # Events flow from the moment of the cut until AFTER_HEAL_S past the heal: the ones
    # caught in the cut may be lost, never delivered late or out of order.
    run_floods(sim, work, 0, opts.publishes, opts.partition_s + AFTER_HEAL_S)
    # The split is noticed within the failure-detection time; then each side repairs its
    # ring and its trees. Requests are scored from then on, until the heal.
    sim.run_for(opts.partition_s / 2)
    first = len(work.requests)
    run_requests(sim, work, opts.requests // 2, opts.request_rate)
    sim.run_for(opts.partition_s / 2)
    sim.heal()
    healed_at = sim.now
    timeline.phase(sim, "healing", until=healed_at + AFTER_HEAL_S + 6.0)
    split_records = list(work.requests.values())[first:]
    merged = sim.run_until(lambda: trees_consistent(sim, work), timeout=120.0, check_every=0.5)
    result["recovery_s"] = merged
    sim.run_until_time(healed_at + AFTER_HEAL_S + 6.0)  # the last requests and events land
    # A request to a cluster wholly on the other side must fail if its deadline passed before
    # the heal; one sent shortly before the heal may be answered after it, and either is right.
    reachable: list[RequestRecord] = []
    unreachable: list[RequestRecord] = []
    for r in split_records:
        if any(side.get(m) == side.get(r.requester) for m in work.members[r.cluster]):
            reachable.append(r)
        elif r.sent_at + r.timeout <= healed_at:
            unreachable.append(r)
    result["split_requests"] = len(split_records)
    result["split_reachable_success_ratio"] = (
        sum(r.status == OK for r in reachable) / len(reachable) if reachable else 1.0)
    result["split_unreachable"] = len(unreachable)
    result["split_unreachable_failed"] = sum(r.status is not None and r.status != OK
                                             for r in unreachable)
    settled = work.flood_summary(topic=True, since=healed_at + SETTLED_S)
    result["publish_delivery_ratio_after_heal"] = settled["publish_delivery_ratio"]
    verify_start = sim.now
    timeline.phase(sim, "verifying", until=sim.now + 6.0)
    result.update(verify_delivery(sim, work))
    largest = max(work.members, key=lambda c: len(work.members[c]))
    result.update(work.request_summary(largest))
    result.update(work.flood_summary(topic=False, since=verify_start))
    result.update(work.flood_summary(topic=True, since=verify_start))
    result.update(order_figures(sim, work))
    result.update(run_tunnel(sim, work, largest, opts.tunnel_messages, 0))
    result.pop("tunnel_key", None)
    judge(result, (
        Check("recovery_s", "<=", 10.0, "time from the heal until every group has one tree"),
        Check("split_reachable_success_ratio", ">=", 0.99,
              "requests during the split to a cluster with a member on the requester's side, "
              "answered OK"),
        Check("split_unreachable_failed", "==", result["split_unreachable"],
              "requests during the split to a cluster wholly on the other side, their "
              "deadline before the heal, that failed (all must)"),
        Check("publish_delivery_ratio_after_heal", "==", 1.0,
              f"events published {SETTLED_S:g} s or more after the heal, delivered"),
        Check("verify_request_success_ratio", "==", 1.0, "one request per cluster at the end"),
        Check("verify_broadcast_delivery_ratio", "==", 1.0,
              "one broadcast per cluster at the end"),
        Check("verify_publish_delivery_ratio", "==", 1.0, "one event per topic at the end"),
        NO_REQUEST_DUPLICATES, NO_MISDELIVERY, NO_ORDER_VIOLATIONS,
        Check("floods_late", "==", 0,
              "broadcasts and events delivered more than 10 s after they were sent"),
        TUNNEL_IN_ORDER,
    ))
    return _finish(result, sim, wall)


def order_figures(sim: Simulation, work: MessagingWorkload) -> dict[str, Any]:
    """Events and broadcasts delivered late or out of order, and those the cores dropped
    because they came after newer ones from the same origin."""
    dropped = sum(core_of(node).counters.get("floods_out_of_order", 0)
                  for node in sim.nodes.values())
    return {"publish_order_violations": work.order_violations,
            "floods_late": work.late_floods,
            "floods_dropped_out_of_order": dropped}


def scenario_messaging_pause(opts: ScenarioOptions) -> dict[str, Any]:
    """Two of the three members of a cluster freeze (SIGSTOP) for `pause_s` under a
    steady load of requests to it, then thaw: no request may run after its caller's deadline
    or twice, and the one live member answers meanwhile."""
    wall = time.perf_counter()
    opts, sim, work, result = _grouped_ring("messaging-pause", opts)
    cluster = next(c for c in sorted(work.members) if len(work.members[c]) == 3)
    frozen = sorted(work.members[cluster])[:2]
    span = opts.pause_s + 20.0  # load from before the freeze until well after the thaw
    count = min(opts.requests, int(span * 50))
    start = sim.now
    run_requests(sim, work, count, count / span, clusters=[cluster])
    timeline.phase(sim, "traffic", until=start + 5.0)
    sim.run_until_time(start + 5.0)
    for node in frozen:
        sim.pause(node)
    timeline.phase(sim, "paused", until=sim.now + opts.pause_s)
    sim.run_for(opts.pause_s)
    for node in frozen:
        sim.resume(node)
    timeline.phase(sim, "resumed", until=start + span + 10.0)
    sim.run_until_time(start + span + 10.0)
    result["cluster_members"] = 3
    result["paused"] = len(frozen)
    result["pause_s"] = opts.pause_s
    result.update(work.request_summary(cluster))
    result["request_late_executions"] = work.late_executions
    judge(result, (
        REQUESTS_MOSTLY_ANSWERED, NO_REQUEST_DUPLICATES,
        Check("request_late_executions", "==", 0,
              "requests a member started after its caller's deadline"),
        NO_MISDELIVERY,
    ))
    return _finish(result, sim, wall)


def scenario_messaging_churn(opts: ScenarioOptions) -> dict[str, Any]:
    """Replace a fraction of the nodes (crash, and a new node takes over its memberships)
    while every pattern runs."""
    wall = time.perf_counter()
    opts, sim, work, result = _grouped_ring("messaging-churn", opts)
    span = opts.churn_s  # the replacements and the workload spread over this
    result["churn_s"] = span
    victims = int(opts.nodes * opts.churn_fraction)
    replaced = 0

    largest = max(work.members, key=lambda c: len(work.members[c]))
    tunnel = TunnelRun(sim, work, largest, opts.tunnel_messages, 0)
    spared = {tunnel.opener, tunnel.member}

    def replace() -> None:
        nonlocal replaced
        victim = sim.random_active()
        while victim in spared:
            victim = sim.random_active()
        clusters = [c for c, ms in work.members.items() if victim in ms]
        topics = [t for t, ss in work.subscribers.items() if victim in ss]
        sim.crash(victim)
        for c in clusters:
            work.members[c].discard(victim)
        for t in topics:
            work.subscribers[t].discard(victim)
        newcomer = sim.add_node()

        def take_over() -> None:
            if newcomer in sim.active:
                for c in clusters:
                    work.register(newcomer, c)
                for t in topics:
                    work.subscribe(newcomer, t)
            elif newcomer in sim.nodes:
                sim.at(sim.now + 0.5, take_over)

        sim.at(sim.now + 0.5, take_over)
        replaced += 1

    for i in range(victims):
        sim.at(sim.now + span * (i + 0.5) / victims, replace)
    run_requests(sim, work, opts.requests, opts.requests / span)
    run_floods(sim, work, opts.broadcasts, opts.publishes, span)
    timeline.phase(sim, "churning", until=sim.now + span + 10.0)
    sim.run_for(span + 10.0)
    result["replaced"] = replaced
    result.update(work.request_summary(largest))
    result.update(work.flood_summary(topic=False))
    result.update(work.flood_summary(topic=True))
    result.update(order_figures(sim, work))
    result.update(tunnel.finish())
    result.pop("tunnel_key", None)
    judge(result, (
        REQUESTS_MOSTLY_ANSWERED, NO_REQUEST_DUPLICATES, TUNNEL_IN_ORDER,
        Check("tunnel_messages", "==", opts.tunnel_messages,
              "numbered tunnel messages that arrived"),
        NO_MISDELIVERY,
        Check("broadcast_duplicates", "==", 0, "broadcasts delivered twice to one member"),
        Check("publish_duplicates", "==", 0, "events delivered twice to one subscriber"),
    ))
    return _finish(result, sim, wall)


MESSAGING_SCENARIOS = {
    "messaging": scenario_messaging,
    "messaging-pause": scenario_messaging_pause,
    "messaging-churn": scenario_messaging_churn,
    "messaging-partition": scenario_messaging_partition,
}
