"""The capacity-weighted walk that chooses one member for a request or a tunnel, and what
meets a root about to move to a joiner (a request, a survey, a publish).

Small deterministic simulations through `MessagingCore`'s methods; the assertions are on what
the application and the wire see: who served each request, where each tunnel opened, and
which node sent each "no members" answer.
"""

import math
import random
from collections import Counter

import pytest

from iris.core import NO_MEMBERS, OK, cluster_group, topic_group, tunnel_of
from iris.core import events as ev
from iris.core.messages import Reply, Request, TunnelClose, other_end
from simulations.checkers import true_root
from simulations.engine import Simulation
from simulations.messaging_workload import MessagingWorkload, SimMessaging
from simulations.network import NetworkConfig
from simulations.scenarios import ScenarioOptions, build_ring
from simulations.survey_workload import SurveyWorkload


class Observed(SimMessaging):
    """The simulator's core, noting who sent each answer this node got directly: replies to
    its requests and closes of its tunnels."""

    def __init__(self, sim, node):
        super().__init__(sim, node)
        self.answers = []  # (sender, message)

    def receive_direct(self, src, payload):
        if isinstance(payload, Reply | TunnelClose):
            self.answers.append((src, payload))
        super().receive_direct(src, payload)


def world(nodes=40, seed=1):
    sim = Simulation(seed, network=NetworkConfig(fifo=True), app_factory=Observed)
    work = MessagingWorkload(sim)
    assert build_ring(sim, ScenarioOptions(nodes=nodes, seed=seed))["converged"]
    return sim, work


def register(sim, work, cluster, capacities):
    """Register `capacity` members of `cluster` on each node, and wait until every one is
    grafted and the capacities have travelled the whole tree (two tree beats)."""
    for node, capacity in capacities.items():
        for _ in range(capacity):
            work.register(node, cluster)
    grafted = sim.run_until(lambda: all(work.grafted(n, cluster, False) for n in capacities),
                            timeout=30.0, check_every=0.1)
    assert grafted is not None
    sim.run_for(2 * work.core(next(iter(capacities))).config.tree_beat_s)


def ask(sim, work, cluster, requesters, count, rate=200.0):
    """`count` requests from `requesters` in turn, `rate` a second; their records once every
    one has its outcome."""
    before = len(work.requests)
    start = sim.now
    for i in range(count):
        requester = requesters[i % len(requesters)]
        sim.at(start + i / rate, lambda r=requester: work.request(r, cluster, timeout=10.0))
    sim.run_for(count / rate)
    records = list(work.requests.values())[before:]
    done = sim.run_until(lambda: all(r.status is not None for r in records), timeout=15.0,
                         check_every=0.1)
    assert done is not None and len(records) == count
    return records


def open_tunnels(sim, work, cluster, opener, count):
    """Open `count` tunnels from `opener`; for each, the node where it opened (None: it was
    closed instead), once every one has its outcome."""
    keys = [work.act(opener, lambda core: core.open_tunnel(cluster, timeout=10.0))
            for _ in range(count)]

    def outcome(key):
        for me, event in work.tunnel_events:
            if tunnel_of(event.key) == key and isinstance(event, ev.TunnelIncoming):
                return me
            if event.key == key and isinstance(event, ev.TunnelClosed):
                return None
        return ...  # not yet

    done = sim.run_until(lambda: all(outcome(k) is not ... for k in keys), timeout=15.0,
                         check_every=0.1)
    assert done is not None
    return [outcome(k) for k in keys]


def test_requests_are_spread_over_members_in_proportion_to_their_capacity():
    """Capacities 1, 2, 3 and 6 (registrations on a node): each member serves its share of
    requests sent from every node, within five standard deviations of the binomial count.
    A walk blind to capacity would give each member a quarter."""
    sim, work = world(seed=2)
    nodes = sorted(sim.active)
    members = random.Random(2).sample(nodes, 4)
    capacities = dict(zip(members, (1, 2, 3, 6), strict=True))
    register(sim, work, "weighted", capacities)
    records = ask(sim, work, "weighted", nodes, 3000)
    assert all(r.status == OK for r in records)
    served = Counter(r.responder for r in records)
    assert set(served) == set(members)
    total = sum(capacities.values())
    for member, capacity in capacities.items():
        share = capacity / total
        expected = len(records) * share
        sigma = math.sqrt(len(records) * share * (1 - share))
        assert abs(served[member] - expected) <= 5 * sigma, (capacity, served[member], expected)


def test_only_the_root_answers_no_members():
    """Requests from every node to a cluster that has no members: every "no members" answer
    comes from the root of the cluster's tree, the one node that sees all of it."""
    sim, work = world(seed=3)
    nodes = sorted(sim.active)
    records = ask(sim, work, "empty", nodes, len(nodes))
    assert all(r.status == NO_MEMBERS for r in records)
    root = true_root(sim, cluster_group("empty"))
    answers = [(src, msg) for n in nodes for src, msg in work.core(n).answers]
    assert len(answers) == len(nodes) and {src for src, _ in answers} == {root}


def test_tunnels_follow_capacity_from_any_node_the_openers_own_included():
    """The opener's node holds five of the six registrations: its tunnels open there most of
    the time, as its requests are served there (both ends of such a tunnel live on one node,
    each under its own key), and from a third node tunnels follow capacity too."""
    sim, work = world(seed=4)
    nodes = sorted(sim.active)
    opener, other, third = random.Random(4).sample(nodes, 3)
    register(sim, work, "pair", {opener: 5, other: 1})

    served = Counter(r.responder for r in ask(sim, work, "pair", [opener], 120))
    assert served[opener] > 80  # about 100 of 120

    own = Counter(open_tunnels(sim, work, "pair", opener, 60))
    assert set(own) == {opener, other} and own[opener] > 35  # about 50 of 60

    elsewhere = Counter(open_tunnels(sim, work, "pair", third, 60))
    assert set(elsewhere) == {opener, other} and elsewhere[opener] > 35


def test_a_tunnel_between_two_ends_on_one_node_carries_data_both_ways_in_order():
    """The only member of a cluster opens a tunnel to it: both ends live on its node, each
    under its own key, and messages go both ways in order until an orderly close."""
    sim, work = world(seed=5)
    nodes = sorted(sim.active)
    (member,) = random.Random(5).sample(nodes, 1)
    register(sim, work, "self", {member: 1})
    key = work.act(member, lambda core: core.open_tunnel("self", timeout=10.0))
    assert sim.run_until(
        lambda: any(isinstance(e, ev.TunnelOpened) and e.key == key
                    for _, e in work.tunnel_events), timeout=5.0, check_every=0.01) is not None
    member_end = (key[0], other_end(key[1]))
    assert any(me == member and isinstance(e, ev.TunnelIncoming) and e.key == member_end
               for me, e in work.tunnel_events)
    for i in range(20):
        work.tunnel_send(member, key, b"out %d" % i)
        work.tunnel_send(member, member_end, b"back %d" % i)
    sim.run_for(1.0)
    messages = work.tunnel_log[key]  # both directions: the log is by tunnel
    assert [m for m in messages if m.startswith(b"out")] == [b"out %d" % i for i in range(20)]
    assert [m for m in messages if m.startswith(b"back")] == [b"back %d" % i for i in range(20)]
    work.act(member, lambda core: core.tunnel_close(key, "done"))
    sim.run_for(1.0)
    closes = {e.key: e.code for _, e in work.tunnel_events if isinstance(e, ev.TunnelClosed)}
    assert closes == {key: OK, member_end: OK}


def test_a_member_runs_a_request_once_whatever_way_its_copies_came():
    """A walk re-routed after a step whose acknowledgement was lost enters the tree again
    with more hops (so that it is not taken for a copy there); if the first copy did arrive,
    both may reach the same member, which must run it only once."""
    sim, work = world()
    member = sorted(sim.active)[7]
    register(sim, work, "svc", {member: 1})
    group = cluster_group("svc")
    origin = sorted(sim.active)[3]
    payload = (origin.to_bytes(16, "big") + (10**6).to_bytes(8, "big"))

    def arrive(hops):
        def call(core):
            core.requests.arrive(Request(group, 99, origin, hops, payload, 5000),
                                 core.state.services[group], 0.0)
        work.act(member, call)

    arrive(2)
    arrive(5)  # the same request, by a longer way
    sim.run_for(1.0)
    assert work.handled[10**6] == 1
    assert work.core(member).state.counters["request_duplicate_dropped"] == 1



class JoinWatched(Observed):
    """The simulator's core, calling `on_active(node id)` (when set) as a node goes active."""

    on_active = None

    def activated(self):
        super().activated()
        if JoinWatched.on_active is not None:
            JoinWatched.on_active(self.node.id)


@pytest.mark.parametrize("kind", ["request", "survey"])
def test_a_question_meeting_a_root_about_to_move_goes_on_to_the_joiner_that_takes_over(kind):
    """A node joins nearer a cluster's key than its root and registers the moment it is
    active; a request (or survey) sent at once from the old root, before the joiner's greeting
    reaches it, finds no tree there. That root knows the joiner is coming (it probed it), so it
    parks the question instead of answering "no members", and once the greeting comes it
    routes it on to the joiner, which answers."""
    sim = Simulation(5, network=NetworkConfig(fifo=True), app_factory=JoinWatched)
    work = MessagingWorkload(sim)
    surveys = SurveyWorkload(sim, work)
    assert build_ring(sim, ScenarioOptions(nodes=20, seed=5))["converged"]
    group = cluster_group("late")
    old_root = true_root(sim, group)
    sim.run_for(5.0)  # no root in the ring has just settled
    records = work.requests if kind == "request" else surveys.records

    def ask_at_once(node_id):
        if node_id == group:
            work.register(node_id, "late")
            if kind == "request":
                work.request(old_root, "late", timeout=10.0)
            else:
                surveys.survey(old_root, "late", timeout=10.0)

    JoinWatched.on_active = ask_at_once
    try:
        sim.add_node(group, seeds=(old_root,))  # the id nearest the key: the key itself
        done = sim.run_until(lambda: any(r.status is not None for r in records.values()),
                             timeout=15.0, check_every=0.05)
    finally:
        JoinWatched.on_active = None
    assert done is not None and true_root(sim, group) == group
    [record] = records.values()
    if kind == "request":
        assert (record.status, record.responder) == (OK, group)
    else:
        assert (record.status, [m for m, _ in record.answers]) == (OK, [group])


def test_events_published_at_a_root_about_to_move_reach_the_joiner_that_takes_over():
    """As above for a topic: the joiner subscribes the moment it is active (it is the topic's
    root by its own state, so it has joined at once), and the old root publishes at once,
    before the joiner's greeting reaches it. The events wait for the greeting and go to the
    joiner; delivered at the old root, which has no tree, they were dropped (seen on two real
    nodes: the first 1,024 events of a burst lost)."""
    sim = Simulation(5, network=NetworkConfig(fifo=True), app_factory=JoinWatched)
    work = MessagingWorkload(sim)
    assert build_ring(sim, ScenarioOptions(nodes=20, seed=5))["converged"]
    group = topic_group("late")
    old_root = true_root(sim, group)
    sim.run_for(5.0)

    def publish_at_once(node_id):
        if node_id == group:
            work.subscribe(node_id, "late")
            for _ in range(3):
                work.flood(old_root, "late", True)

    JoinWatched.on_active = publish_at_once
    try:
        sim.add_node(group, seeds=(old_root,))
        done = sim.run_until(lambda: len(work.floods) == 3 and all(
            work.received.get(tag, {}).get(group) for tag in work.floods),
            timeout=15.0, check_every=0.05)
    finally:
        JoinWatched.on_active = None
    assert done is not None and true_root(sim, group) == group
    assert work.core(old_root).state.counters.get("flood_no_tree", 0) == 0
    assert work.order_violations == 0
