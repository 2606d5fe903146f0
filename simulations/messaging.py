"""Messaging workloads in the simulator: clusters, requests, broadcasts, topics, a tunnel.

Every node runs a `MessagingCore` over its `OverlayNode`. A scripted application on each node
answers requests with its own id, and records every broadcast, event and tunnel message, so
the scenario can score delivery against what should have happened:

- a request is answered when exactly one member of the right cluster handled it and its reply
  reached the requester; `misdelivered` counts answers from outside the cluster and replies
  matched to the wrong request;
- a broadcast or publish is delivered when every member (subscriber) that was grafted when it
  was sent, and is still alive, got it exactly once; publishes from one publisher must arrive
  in order.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

from iris.core import events as ev
from iris.core.messaging import TIMEOUT, MessagingCore, cluster_group, topic_group
from iris.core.messages import OK
from overlay.messages import Lookup
from overlay.node import OverlayNode
from overlay.wire import Message
from simulations import checkers
from simulations.engine import Simulation
from simulations.network import NetworkConfig
from simulations.scenarios import ScenarioOptions, build_ring

CLUSTER_SIZES = (1, 3, 5, 10, 20, 35, 50, 65, 80, 100)
TOPIC_COUNT = 20
MAX_SUBSCRIBERS = 200


class SimMessaging(MessagingCore):
    """The core plus what the simulator needs to see: activation and lookups."""

    def __init__(self, sim: Simulation, node: OverlayNode) -> None:
        super().__init__(node)
        self.sim = sim

    def activated(self) -> None:
        super().activated()
        self.sim.mark_active(self.node.id)

    def deliver(self, key: int, payload: Message, origin: int, hops: int) -> None:
        if type(payload) is Lookup:
            self.sim.lookups.delivered(self.node.id, key, payload.tag, hops)
        else:
            super().deliver(key, payload, origin, hops)


@dataclass
class RequestRecord:
    requester: int
    cluster: str
    sent_at: float
    status: int | None = None
    responder: int | None = None


class MessagingWorkload:
    """Scripted applications on every node and the scorekeeping of one scenario."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.members: dict[str, set[int]] = {}
        self.subscribers: dict[str, set[int]] = {}
        self.joined: set[tuple[int, str, bool]] = set()
        self.requests: dict[tuple[int, int], RequestRecord] = {}
        self.handled: dict[tuple[int, int], int] = defaultdict(int)  # (requester, payload id)
        self.served: dict[tuple[int, str], int] = defaultdict(int)  # (member, cluster) -> handled
        self.misdelivered = 0
        self.floods: dict[int, tuple[str, bool, set[int], float, int]] = {}
        self.received: dict[int, dict[int, int]] = defaultdict(dict)  # tag -> node -> count
        self.latency: list[float] = []
        self.stretch: list[float] = []
        self.order_violations = 0
        self.last_seq: dict[tuple[int, int, str], int] = {}
        self.tunnel_log: dict[tuple[int, int], list[bytes]] = defaultdict(list)
        self.tunnel_events: list[Any] = []
        self.tunnel_max_buffered = 0
        self.slow_consumer = False  # tunnel receivers consume on a clock instead of at once
        # clusters whose requests wait, topics whose events are never read
        self.held: dict[str, list[tuple[int, int]]] = {}
        self.unconsumed: dict[tuple[int, tuple[int, int]], int] = defaultdict(int)
        self._tag = 0
        self._pub_seq: dict[tuple[int, str], int] = defaultdict(int)
        sim.after_call = self._drain

    # -- plumbing ------------------------------------------------------------------------------
    def core(self, node_id: int) -> SimMessaging:
        return self.sim.nodes[node_id].app

    def act(self, node_id: int, fn: Callable[[SimMessaging], Any]) -> Any:
        """Run an application call on a node and send what it produced."""
        result = None

        def call(node: OverlayNode) -> None:
            nonlocal result
            node.set_time(self.sim.now)
            result = fn(node.app)

        self.sim.call(node_id, call)
        return result

    def _drain(self, node: OverlayNode) -> None:
        app = node.app
        if not isinstance(app, MessagingCore) or not app.events:
            return
        events, app.events = app.events, []
        for event in events:
            self._on_event(node.id, app, event)

    def _on_event(self, me: int, core: MessagingCore, event: Any) -> None:
        kind = type(event)
        if kind is ev.RequestReceived:
            if event.cluster in self.held:
                self.held[event.cluster].append((me, event.token))
                return
            requester, req_id = _decode_request(event.payload)
            self.handled[(requester, req_id)] += 1
            record = self.requests.get((requester, req_id))
            if record is None or record.cluster != event.cluster or me not in self.members[event.cluster]:
                self.misdelivered += 1  # handled by a node outside the cluster
            self.served[(me, event.cluster)] += 1
            core.reply(event.token, me.to_bytes(16, "big") + event.payload)
        elif kind is ev.RequestDone:
            record = self.requests.get((me, event.req_id))
            if record is None:
                self.misdelivered += 1
                return
            record.status = event.status
            if event.status == OK:
                responder = int.from_bytes(event.payload[:16], "big")
                requester, req_id = _decode_request(event.payload[16:])
                record.responder = responder
                if (requester, req_id) != (me, event.req_id):
                    self.misdelivered += 1  # a reply matched to the wrong request
        elif kind is ev.EventReceived and event.topic in self.held:
            self.held[event.topic].append((me, event.seq))  # an application that never reads
        elif kind is ev.BroadcastReceived or kind is ev.EventReceived:
            tag = int.from_bytes(event.payload[:8], "big")
            got = self.received[tag]
            got[me] = got.get(me, 0) + 1
            info = self.floods.get(tag)
            if info is not None and got[me] == 1:
                sent_at, origin = info[3], info[4]
                latency = self.sim.now - sent_at
                self.latency.append(latency)
                if origin != me and origin in self.sim.net.positions:
                    self.stretch.append(latency / self.sim.net.base_delay(origin, me))
            if kind is ev.BroadcastReceived:
                core.broadcast_done(event.cluster)
            else:
                core.event_done(event.topic, len(event.payload))
                pub_seq = int.from_bytes(event.payload[8:16], "big")
                key = (me, event.origin, event.topic)
                if pub_seq <= self.last_seq.get(key, -1):
                    self.order_violations += 1
                self.last_seq[key] = pub_seq
        elif kind is ev.Joined:
            self.joined.add((me, event.name, event.topic))
        elif kind is ev.TunnelMessage:
            self.tunnel_log[event.key].append(event.data)
            tunnel = core.tunnels.get(event.key)
            if tunnel is not None:
                self.tunnel_max_buffered = max(self.tunnel_max_buffered, tunnel.buffered)
            if self.slow_consumer:
                self.unconsumed[(me, event.key)] += len(event.data)
            else:
                core.tunnel_consumed(event.key, len(event.data))
        elif kind in (ev.TunnelIncoming, ev.TunnelOpened, ev.TunnelClosed):
            self.tunnel_events.append((me, event))

    # -- the application's actions ------------------------------------------------------------
    def register(self, node_id: int, cluster: str) -> None:
        self.members.setdefault(cluster, set()).add(node_id)
        self.act(node_id, lambda core: core.register(cluster))

    def subscribe(self, node_id: int, topic: str) -> None:
        self.subscribers.setdefault(topic, set()).add(node_id)
        self.act(node_id, lambda core: core.subscribe(topic))

    def grafted(self, node_id: int, name: str, topic: bool) -> bool:
        return (node_id, name, topic) in self.joined

    def all_grafted(self) -> bool:
        live = self.sim.nodes
        return all(self.grafted(n, c, False) for c, ms in self.members.items() for n in ms if n in live) and \
            all(self.grafted(n, t, True) for t, ss in self.subscribers.items() for n in ss if n in live)

    def request(self, requester: int, cluster: str, timeout: float = 5.0) -> None:
        def send(core: SimMessaging) -> None:
            req_id = core._next_id + 1  # the id `request` is about to assign
            payload = _encode_request(requester, req_id)
            assigned = core.request(cluster, payload, timeout)
            assert assigned == req_id
            self.requests[(requester, assigned)] = RequestRecord(requester, cluster, self.sim.now)

        self.act(requester, send)

    def flood(self, origin: int, name: str, topic: bool) -> None:
        self._tag += 1
        tag = self._tag
        audience = self.subscribers[name] if topic else self.members[name]
        expected = {n for n in audience if self.grafted(n, name, topic) and n in self.sim.nodes}
        self.floods[tag] = (name, topic, expected, self.sim.now, origin)
        seq = self._pub_seq[(origin, name)]
        self._pub_seq[(origin, name)] = seq + 1
        payload = tag.to_bytes(8, "big") + seq.to_bytes(8, "big") + b"x" * 48
        if topic:
            self.act(origin, lambda core: core.publish(name, payload))
        else:
            self.act(origin, lambda core: core.broadcast(name, payload))

    # -- scoring --------------------------------------------------------------------------------
    def request_summary(self, cluster_for_balance: str | None = None) -> dict[str, Any]:
        """Requests whose requester is still alive (a dead requester hears nothing)."""
        records = [r for r in self.requests.values() if r.requester in self.sim.nodes]
        answered = sum(1 for r in records if r.status == OK)
        failed = sum(1 for r in records if r.status is not None and r.status not in (OK, TIMEOUT))
        timed_out = sum(1 for r in records if r.status == TIMEOUT)
        duplicates = sum(count - 1 for count in self.handled.values() if count > 1)
        result = {
            "requests": len(records),
            "request_success_ratio": answered / len(records) if records else 1.0,
            "request_errors": failed,
            "request_timeouts": timed_out,
            "request_unresolved": sum(1 for r in records if r.status is None),
            "request_duplicates": duplicates,
            "request_misdelivered": self.misdelivered,
        }
        if cluster_for_balance is not None:
            counts = [self.served.get((m, cluster_for_balance), 0)
                      for m in self.members[cluster_for_balance]]
            mean = statistics.fmean(counts) if counts else 0.0
            result["balance_max_over_mean"] = round(max(counts) / mean, 3) if mean else None
        return result

    def flood_summary(self, topic: bool, since: float = -1.0) -> dict[str, Any]:
        expected = delivered = duplicates = count = 0
        live = self.sim.nodes
        for tag, (name, is_topic, audience, sent_at, _) in self.floods.items():
            if is_topic != topic or sent_at < since:
                continue
            count += 1
            got = self.received.get(tag, {})
            for node in audience:
                if node in live:
                    expected += 1
                    if got.get(node, 0) >= 1:
                        delivered += 1
            duplicates += sum(c - 1 for c in got.values() if c > 1)
        prefix = "publish" if topic else "broadcast"
        return {
            f"{prefix}es" if topic else "broadcasts": count,
            f"{prefix}_delivery_ratio": delivered / expected if expected else 1.0,
            f"{prefix}_duplicates": duplicates,
        }


def _encode_request(requester: int, req_id: int) -> bytes:
    return requester.to_bytes(16, "big") + req_id.to_bytes(8, "big")


def _decode_request(payload: bytes) -> tuple[int, int]:
    return int.from_bytes(payload[:16], "big"), int.from_bytes(payload[16:24], "big")


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


def make_messaging_sim(opts: ScenarioOptions) -> tuple[Simulation, MessagingWorkload]:
    net = NetworkConfig(loss=opts.loss, duplicate=opts.duplicate, fifo=True)
    sim = Simulation(opts.seed, network=net, app_factory=SimMessaging, wire=opts.wire)
    return sim, MessagingWorkload(sim)


def setup_groups(sim: Simulation, work: MessagingWorkload, opts: ScenarioOptions) -> dict[str, Any]:
    rng = sim.rng
    ids = list(sim.active)
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
    some_core = sim.nodes[ids[0]].app
    sim.run_for(2 * some_core.config.tree_beat_s)
    return {"clusters": len(sizes), "topics": TOPIC_COUNT, "graft_s": settle}


def run_requests(sim: Simulation, work: MessagingWorkload, count: int, rate: float,
                 requesters: Callable[[], int] | None = None) -> None:
    rng = sim.rng
    clusters = sorted(work.members)
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
        self.sent = 0
        self.opener = opener = sim.random_active()
        if consume_bps is not None:
            self._consume_on_a_clock(consume_bps)
        self.key = work.act(opener, lambda core: core.open_tunnel(cluster, timeout=10.0))
        sim.run_until(lambda: self.member is not None and self.opened, timeout=15.0, check_every=0.1)
        self.filler = b"m" * max(0, size - 8)
        self.wall = time.perf_counter()
        if self.opened:
            sim.at(sim.now, self._send_some)

    def _event(self, kind: type) -> tuple[int, Any] | None:
        return next(((me, e) for me, e in self.work.tunnel_events
                     if isinstance(e, kind) and e.key == self.key), None)

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
                    work.act(node_id, lambda c, k=key, n=take: c.tunnel_consumed(k, n))
            sim.at(sim.now + period, consume)

        sim.at(sim.now + period, consume)

    def _send_some(self) -> None:
        sim, work, key = self.sim, self.work, self.key
        core = work.core(self.opener) if self.opener in sim.nodes else None
        tunnel = core.tunnels.get(key) if core else None
        if tunnel is None:
            return
        # Keep about one window queued: the application waits for credit like a real one.
        while self.sent < self.messages and tunnel.queued_bytes < core.config.tunnel_window:
            data = self.sent.to_bytes(8, "big") + self.filler
            work.act(self.opener, lambda c: c.tunnel_send(key, data))
            self.sent += 1
        if self.sent < self.messages:
            sim.at(sim.now + 0.01, self._send_some)

    def finish(self) -> dict[str, Any]:
        sim, work, key, messages = self.sim, self.work, self.key, self.messages
        if not self.opened:
            return {"tunnel_messages": 0, "tunnel_in_order": False, "tunnel_opened": False}
        log = work.tunnel_log[key]
        sim.run_until(lambda: self.sent >= messages and len(log) >= messages,
                      timeout=600.0, check_every=0.5)
        stream_max_buffered = work.tunnel_max_buffered
        big = bytes(range(256)) * (self.big_mib * 4096)
        if self.big_mib:
            work.act(self.opener, lambda c: c.tunnel_send(key, big))
            sim.run_until(lambda: len(log) > messages, timeout=120.0, check_every=0.2)
        numbered = log[:messages]
        in_order = len(numbered) == messages and all(
            int.from_bytes(m[:8], "big") == i for i, m in enumerate(numbered))
        return {
            "tunnel_messages": len(numbered),
            "tunnel_in_order": in_order,
            "tunnel_big_intact": (len(log) > messages and log[messages] == big) if self.big_mib else None,
            "tunnel_max_buffered": stream_max_buffered,
            "tunnel_window": work.core(self.opener).config.tunnel_window,
            "tunnel_wall_s": round(time.perf_counter() - self.wall, 2),
            "tunnel_key": key,
        }


def run_tunnel(sim: Simulation, work: MessagingWorkload, cluster: str, messages: int,
               big_mib: int, size: int = 1024, consume_bps: float | None = None) -> dict[str, Any]:
    return TunnelRun(sim, work, cluster, messages, big_mib, size, consume_bps).finish()


def _finish(result: dict[str, Any], sim: Simulation, wall: float) -> dict[str, Any]:
    result["events"] = sim.events
    result["wall_s"] = round(time.perf_counter() - wall, 3)
    result["sim_s"] = round(sim.now, 3)
    result["digest"] = sim.digest()[:16]
    return result


def scenario_messaging(opts: ScenarioOptions) -> dict[str, Any]:
    """Stable ring: every pattern, scored exactly."""
    opts = _messaging_options(opts)
    wall = time.perf_counter()
    sim, work = make_messaging_sim(opts)
    result: dict[str, Any] = {"scenario": "messaging", "nodes": opts.nodes, "seed": opts.seed}
    build_ring(sim, opts)
    result.update(setup_groups(sim, work, opts))
    span = opts.requests / opts.request_rate
    run_requests(sim, work, opts.requests, opts.request_rate)
    run_floods(sim, work, opts.broadcasts, opts.publishes, span)
    sim.run_for(span + 10.0)
    largest = max(work.members, key=lambda c: len(work.members[c]))
    result.update(work.request_summary(largest))
    result.update(work.flood_summary(topic=False))
    result.update(work.flood_summary(topic=True))
    result["publish_order_violations"] = work.order_violations
    result["publish_delay_stretch"] = round(statistics.fmean(work.stretch), 3) if work.stretch else None
    result.update(tree_quality(sim))
    result.update(run_tunnel(sim, work, largest, opts.tunnel_messages, opts.tunnel_big_mib))
    result.pop("tunnel_key", None)
    result["checks_passed"] = (
        result["request_success_ratio"] == 1.0 and result["request_duplicates"] == 0
        and result["request_misdelivered"] == 0 and result["broadcast_delivery_ratio"] == 1.0
        and result["broadcast_duplicates"] == 0 and result["publish_delivery_ratio"] == 1.0
        and result["publish_duplicates"] == 0 and result["publish_order_violations"] == 0
        and result["tunnel_in_order"] and (result["balance_max_over_mean"] or 0) <= 1.5
        and checkers.check_leaf_sets(sim).ok
    )
    return _finish(result, sim, wall)


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
            root_tree = live[root].app.trees.get(group)
            if root_tree is None or not root_tree.is_root():
                return False
            for member in audience:
                if member not in live:
                    continue
                current, steps = member, 0
                while current != root:
                    tree = live[current].app.trees.get(group) if current in live else None
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
    """Split into halves; requests while split; heal; time until trees are whole again."""
    opts = _messaging_options(opts)
    wall = time.perf_counter()
    sim, work = make_messaging_sim(opts)
    result: dict[str, Any] = {"scenario": "messaging-partition", "nodes": opts.nodes,
                              "seed": opts.seed}
    build_ring(sim, opts)
    result.update(setup_groups(sim, work, opts))
    ids = list(sim.active)
    sim.rng.shuffle(ids)
    halves = [ids[0::2], ids[1::2]]
    side = {n: i for i, half in enumerate(halves) for n in half}
    sim.net.partition(halves)
    # The split is noticed within the failure-detection time; then each side repairs its
    # ring and its trees. Requests are scored from then on, until the heal.
    sim.run_for(opts.partition_s / 2)
    first = len(work.requests)
    run_requests(sim, work, opts.requests // 2, opts.request_rate)
    sim.run_for(opts.partition_s / 2)
    sim.net.heal()
    split_records = list(work.requests.values())[first:]
    merged = sim.run_until(lambda: trees_consistent(sim, work), timeout=120.0, check_every=0.5)
    result["recovery_s"] = merged
    sim.run_for(6.0)  # the last split-time requests finish or time out
    reachable, unreachable = [], []
    for r in split_records:
        same_side = any(side.get(m) == side.get(r.requester) for m in work.members[r.cluster])
        (reachable if same_side else unreachable).append(r)
    result["split_requests"] = len(split_records)
    result["split_reachable_success_ratio"] = (
        sum(r.status == OK for r in reachable) / len(reachable) if reachable else 1.0)
    result["split_unreachable"] = len(unreachable)
    result["split_unreachable_failed"] = sum(r.status is not None and r.status != OK
                                             for r in unreachable)
    verify_start = sim.now
    result.update(verify_delivery(sim, work))
    largest = max(work.members, key=lambda c: len(work.members[c]))
    result.update(work.request_summary(largest))
    result.update(work.flood_summary(topic=False, since=verify_start))
    result.update(work.flood_summary(topic=True, since=verify_start))
    result["publish_order_violations"] = work.order_violations
    result.update(run_tunnel(sim, work, largest, opts.tunnel_messages, 0))
    result.pop("tunnel_key", None)
    result["checks_passed"] = (
        result["recovery_s"] is not None and result["recovery_s"] <= 30.0
        and result["split_reachable_success_ratio"] >= 0.99
        and result["split_unreachable_failed"] == result["split_unreachable"]
        and result["verify_request_success_ratio"] == 1.0
        and result["verify_broadcast_delivery_ratio"] == 1.0
        and result["verify_publish_delivery_ratio"] == 1.0
        and result["request_duplicates"] == 0 and result["request_misdelivered"] == 0
        and result["tunnel_in_order"]
    )
    return _finish(result, sim, wall)


def scenario_messaging_churn(opts: ScenarioOptions) -> dict[str, Any]:
    """Replace a fraction of the nodes (crash, and a new node takes over its memberships)
    while every pattern runs."""
    opts = _messaging_options(opts)
    wall = time.perf_counter()
    sim, work = make_messaging_sim(opts)
    result: dict[str, Any] = {"scenario": "messaging-churn", "nodes": opts.nodes,
                              "seed": opts.seed}
    build_ring(sim, opts)
    result.update(setup_groups(sim, work, opts))
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
    sim.run_for(span + 10.0)
    result["replaced"] = replaced
    result.update(work.request_summary(largest))
    result.update(work.flood_summary(topic=False))
    result.update(work.flood_summary(topic=True))
    result["publish_order_violations"] = work.order_violations
    result.update(tunnel.finish())
    result.pop("tunnel_key", None)
    result["checks_passed"] = (
        result["request_success_ratio"] >= 0.99 and result["request_duplicates"] == 0
        and result["tunnel_in_order"] and result["tunnel_messages"] == opts.tunnel_messages
        and result["request_misdelivered"] == 0 and result["broadcast_duplicates"] == 0
        and result["publish_duplicates"] == 0
    )
    return _finish(result, sim, wall)


MESSAGING_SCENARIOS = {
    "messaging": scenario_messaging,
    "messaging-churn": scenario_messaging_churn,
    "messaging-partition": scenario_messaging_partition,
}
