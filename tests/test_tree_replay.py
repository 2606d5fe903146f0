"""Floods sent again over a mended tree path (`iris.core.replay`): a node cut off from its tree
by a dead parent, and the node that adopts it, send each other what the tree carried
meanwhile (the late parent's own test is `test_tree_reshape.py`'s); and a walk routed on by
such a node leaves it.

The unit tests drive one sans-IO core by hand, as `test_tree_reshape.py` does; the last runs a
simulated ring and crashes a tree node under a stream of broadcasts."""

import random

from iris.core import MessagingConfig, MessagingCore, cluster_group
from iris.core import events as ev
from iris.core.messages import Flood, Replayed, Reply, Request, Subscribe, TreeAck
from iris.core.replay import ENTRY_BYTES, FloodHistory
from iris.core.tree import GroupTree
from overlay.messages import Route, RouteAck
from overlay.node import OverlayNode
from simulations.engine import Simulation
from simulations.messaging_workload import MessagingWorkload, SimMessaging
from simulations.network import NetworkConfig
from simulations.scenarios import ScenarioOptions, build_ring
from tests.test_tree_reshape import GRANDPARENT, GROUP, ME, PARENT, ROOT
from tests.test_tree_reshape import member_with_parent as member_of_node

CHILD, ORIGIN, NEW_PARENT = 15, 16, 17


class Unrooted(OverlayNode):
    """A node alone in its ring that keeps what it routes (`routed`) rather than being the
    root of everything: its grafts stay in flight."""

    def __init__(self, node_id, rng):
        super().__init__(node_id, rng)
        self.routed = []

    def route(self, key, payload, now=None):
        self.routed.append(payload)


def member_with_parent():
    return member_of_node(Unrooted)


def graft(core, child, cut_ms, now):
    """`child`'s graft, routed to us (the first tree node on its way)."""
    core.node.receive(child, Route(GROUP, 1, child, 1, Subscribe(GROUP, child, 1, 0, cut_ms)), now)


def floods_to(core, dest):
    return [msg for d, msg in core.node.out if d == dest and isinstance(msg, Flood)]


def again(flood, age_ms=0):
    return Replayed(flood.group, flood.origin, flood.seq, flood.payloads, age_ms)


def batches(floods):
    """What floods carry, without how old they are: (origin, seq, payloads) each."""
    return [(f.origin, f.seq, f.payloads) for f in floods]


def test_the_adopter_of_a_cut_off_node_sends_it_what_passed_meanwhile_and_no_more():
    core, _ = member_with_parent()
    window = core.config.replay_s
    old = Flood(GROUP, ORIGIN, 1, (b"before the window",))
    core.node.receive(PARENT, old, 1.0)
    recent = [Flood(GROUP, ORIGIN, 1 + i, (b"event %d" % i,)) for i in range(1, 4)]
    for i, msg in enumerate(recent):
        core.node.receive(PARENT, msg, 1.0 + window + i)
    core.node.receive(CHILD, Flood(GROUP, CHILD, 9, (b"from the grafting node",)), 2.0 + window)
    core.node.out.clear()
    now = 4.0 + window
    # A first graft: adopted, nothing sent again.
    graft(core, CHILD, 0, now)
    assert [type(m) for d, m in core.node.out if d == CHILD and type(m) is not RouteAck] == [
        TreeAck]
    core.node.out.clear()
    # A graft after a cut as long as the whole window: the floods passed within it, oldest
    # first, after the TreeAck; none older, none the grafting node sent us.
    graft(core, CHILD + 10, 60_000, now)
    to_child = [m for d, m in core.node.out if d == CHILD + 10 and type(m) is not RouteAck]
    assert isinstance(to_child[0], TreeAck)
    # Oldest first, each saying how long ago it passed here.
    assert to_child[1:] == [
        again(recent[0], 3000), again(recent[1], 2000),
        again(Flood(GROUP, CHILD, 9, (b"from the grafting node",)), 2000),
        again(recent[2], 1000)]
    assert core.counters["floods_replayed"] == 4
    core.node.out.clear()
    # A short cut: only what passed in it (and a second of slack).
    graft(core, CHILD + 20, 500, now)
    assert floods_to(core, CHILD + 20) == [again(recent[-1], 1000)]


def test_floods_go_again_to_a_peer_once_in_a_while_and_within_a_budget():
    """A graft is a small message any node can send, naming any subscriber: what it makes a
    node send again is bounded per peer and in all."""
    history = FloodHistory(8.0, 100, 10 * (ENTRY_BYTES + 100))
    floods = [Flood(GROUP, ORIGIN, i, (b"x" * 100,)) for i in range(20)]
    for i, msg in enumerate(floods):
        history.record(msg, None, i * 0.1)
    # kept: the last 10 (bytes)
    assert batches(history.replay(GROUP, CHILD, 60_000, 2.0)) == batches(floods[10:])
    assert history.replay(GROUP, CHILD, 60_000, 3.0) == []  # that peer again, too soon
    assert history.replay(GROUP, CHILD + 1, 60_000, 3.0) == []  # the window's budget is spent
    later = Flood(GROUP, ORIGIN, 99, (b"later",))
    history.record(later, None, 11.0)
    # a window later, its cut's
    assert history.replay(GROUP, CHILD, 2_000, 12.0) == [again(later, 1000)]
    assert history.replay(GROUP + 1, CHILD + 1, 60_000, 12.0) == []  # another tree: none of it


def test_a_peer_asking_again_for_a_longer_cut_gets_only_what_it_did_not_get():
    history = FloodHistory(8.0, 100, 100_000)
    floods = [Flood(GROUP, ORIGIN, i, (b"x",)) for i in range(30)]
    for i, msg in enumerate(floods):
        history.record(msg, None, i * 0.1)
    # each cut gets a second of slack: passed at 1.5 s and later, then from 1.2 s to 1.5 s
    assert batches(history.replay(GROUP, CHILD, 500, 3.0)) == batches(floods[15:])
    assert batches(history.replay(GROUP, CHILD, 800, 3.0)) == batches(floods[12:15])
    assert history.replay(GROUP, CHILD, 600, 3.5) == []


def test_a_flood_kept_late_takes_its_place_by_age():
    """A flood sent again arrives after newer ones, and is kept as of when it passed its
    sender: among the others by that time, and gone once older than the window."""
    history = FloodHistory(8.0, 100, 100_000)
    a, b, c = (Flood(GROUP, ORIGIN, i, (b"x",)) for i in (1, 2, 3))
    history.record(a, None, 1.0)
    history.record(c, None, 5.0)
    history.record(b, PARENT, 3.0)  # a `Replayed` that passed its sender at 3.0
    assert [when for when, *_ in history.entries] == [1.0, 3.0, 5.0]
    assert history.replay(GROUP, CHILD, 60_000, 6.0) == [again(a, 5000), again(b, 3000),
                                                        again(c, 1000)]
    history.record(Flood(GROUP, ORIGIN, 4, (b"x",)), None, 10.0)
    assert [when for when, *_ in history.entries] == [3.0, 5.0, 10.0]  # 1.0 is over 8 s old


def test_a_node_adopted_after_a_cut_sends_its_new_parent_what_its_subtree_sent_meanwhile():
    core, tree = member_with_parent()
    tree.children[CHILD] = [1, 0.0]
    core.node.receive(PARENT, Flood(GROUP, ORIGIN, 1, (b"from above",)), 1.0)
    core.trees_protocol.neighbour_failed(PARENT)  # the overlay's verdict: graft again
    assert tree.grafting and tree.cut_ms(2.0) > 0
    mine = Flood(GROUP, CHILD, 5, (b"from below, while cut off",))
    core.node.receive(CHILD, mine, 3.0)
    regraft = core.node.routed[-1]
    assert isinstance(regraft, Subscribe) and regraft.cut_ms == 1000  # parent heard at 0
    core.node.out.clear()
    core.node.receive(NEW_PARENT, TreeAck(GROUP, 3, (ROOT,)), 4.0)
    assert tree.parent == NEW_PARENT and tree.cut_ms(4.0) == 0
    # Both floods passed within the cut's window; the one from above is dropped by whoever
    # has seen it, the one from below reaches the rest of the tree only so.
    assert batches(floods_to(core, NEW_PARENT)) == batches(
        [Flood(GROUP, ORIGIN, 1, (b"from above",)), mine])
    core.node.out.clear()
    # Adopted again later without a cut (a move up the tree): nothing sent again.
    core.node.receive(GRANDPARENT, TreeAck(GROUP, 3, (ROOT,)), 5.0)
    assert floods_to(core, GRANDPARENT) == []


def test_what_comes_again_is_passed_on_delivered_and_kept_as_old_as_it_is():
    """A replayed flood spreads and is delivered as any, and is kept as of when it passed the
    node that sent it again: an orphan grafting here later gets it too (the orphans of a tree
    node with many children graft one by one, often to a node that joined the tree only to
    adopt an earlier one, and missed it when nobody kept it), but only within its age, never
    as if new."""
    core, tree = member_with_parent()
    tree.children[CHILD] = [1, 0.0]
    window = core.config.replay_s
    missed = Flood(GROUP, ORIGIN, 1, (b"missed",))
    replayed = again(missed, 3000)  # it passed the sender 3 s ago
    core.node.receive(PARENT, replayed, 10.0)
    assert floods_to(core, CHILD) == [replayed]
    assert [e.payload for e in core.events if isinstance(e, ev.EventReceived)] == [b"missed"]
    core.node.out.clear()
    # An orphan cut off since before it passed: sent on, 4 s old now.
    graft(core, CHILD + 10, 5_000, 11.0)
    assert floods_to(core, CHILD + 10) == [again(missed, 4000)]
    core.node.out.clear()
    # One cut off only after it passed (and the slack): not for it.
    graft(core, CHILD + 20, 1_000, 11.0)
    assert floods_to(core, CHILD + 20) == []
    # Older than the window: sent to nobody, whatever the cut.
    graft(core, CHILD + 30, 60_000, 7.0 + window + 0.5)
    assert floods_to(core, CHILD + 30) == []


def test_members_below_a_crashed_tree_node_miss_no_broadcast_of_the_cut():
    """Every node of a ring is a member of one cluster; a tree node with members below it
    crashes while a broadcast goes out every half second. Its subtree is cut off until it
    notices and grafts again, and gets what the cut kept from it then: every live member
    gets every broadcast, in order, none later than the workload's 10 s."""
    sim = Simulation(3, network=NetworkConfig(fifo=True), app_factory=SimMessaging)
    work = MessagingWorkload(sim)
    assert build_ring(sim, ScenarioOptions(nodes=60, seed=3))["converged"]
    for node in list(sim.nodes):
        work.register(node, "c")
    assert sim.run_until(work.all_grafted, timeout=30.0, check_every=0.1) is not None
    sim.run_for(2 * work.core(next(iter(sim.nodes))).config.tree_beat_s)
    group = cluster_group("c")

    def below(node):
        tree = work.core(node).trees.get(group)
        found = set()
        for child in tree.children if tree else ():
            found |= {child} | below(child)
        return found

    trees = {n: work.core(n).trees[group] for n in sim.nodes}
    victim = max((n for n, t in trees.items() if t.parent is not None), key=lambda n: len(below(n)))
    cut_off = below(victim)
    assert len(cut_off) >= 2
    origin = next(n for n in sim.nodes if n != victim and n not in cut_off)
    start = sim.now
    sim.at(start + 0.2, lambda: sim.crash(victim))
    for i in range(30):
        sim.at(start + 0.5 * i, lambda: work.flood(origin, "c", False))
    delivered = sim.run_until(
        lambda: len(work.floods) == 30
        and work.flood_summary(topic=False)["broadcast_delivery_ratio"] == 1.0,
        timeout=30.0, check_every=0.5)
    assert delivered is not None, work.flood_summary(topic=False)
    assert work.late_floods == 0 and work.order_violations == 0
    replayed = sum(work.core(n).counters.get("floods_replayed", 0) for n in sim.nodes)
    assert replayed > 0


def test_a_walk_at_a_node_grafting_again_with_nothing_below_goes_on_toward_the_root():
    """Its parent just lost, a tree node with no member below has no way on for a request
    but the route toward the group. The overlay offers that route's message to the node it
    leaves too; taken there again, the walk was routed again at once, until its hops ran out
    ("walked too far") while the group had members elsewhere."""
    group = cluster_group("c")
    closer = group  # the node closest to the group: the next hop of every route to it
    core = MessagingCore(OverlayNode(ME, random.Random(1)))
    core.node.start(0.0)
    core.node.leaf.add(closer)
    tree = core.trees[group] = GroupTree(group, None, False, 0.0)
    tree.grafting = True  # lost its parent; its members' capacity remembered as lost
    tree.lost = [[60.0, 3.0]]
    core.node.out.clear()
    core.node.receive(ORIGIN, Route(group, 1, ORIGIN, 1, Request(group, 7, ORIGIN, 0, b"q", 5000)),
                      1.0)
    onward = [m.payload for d, m in core.node.out if d == closer and isinstance(m, Route)]
    assert len(onward) == 1 and isinstance(onward[0], Request) and onward[0].hops == 1
    assert not [m for _, m in core.node.out if isinstance(m, Reply)]


def replies_until(core, end):
    """Run the core's timers up to simulated time `end`; the `Reply`s it sent, each with the
    time it was sent, and every other message it sent."""
    replies, others = [], []
    while core.node.next_deadline <= end:
        now = core.node.next_deadline
        core.node.handle_timer(now)
        for dest, msg in core.node.out:
            if isinstance(msg, Reply):
                replies.append((now, msg))
            else:
                others.append((dest, msg))
        core.node.out.clear()
    return replies, others


def requests_walked_after_graft(core, group, member, graft_at, end):
    """`member` grafts to the root `core` at `graft_at`; the timers run up to `end`, and no
    request is answered meanwhile. The requests walked on, as (destination, req_id)."""
    core.node.receive(member, Route(group, 2, member, 2, Subscribe(group, member, 1, 0, 0)),
                      graft_at)
    core.node.out.clear()
    replies, others = replies_until(core, end)
    assert not replies
    walked = [(dest, m.payload) for dest, m in others if hasattr(m, "payload")]
    return [(dest, p.req_id) for dest, p in walked if isinstance(p, Request)]


def test_a_walk_at_a_node_grafting_again_that_is_the_groups_root_is_not_routed_in_circles():
    """The same node when the group's key is its own (its graft is on its way back to it):
    routing the walk on would only deliver it here again, until its hops ran out. Its lost
    members may graft back, so the request waits for them, parked, as long as its time left
    allows, and is then answered "no members" in time for its caller to hear it."""
    group = cluster_group("c")
    core = MessagingCore(OverlayNode(ME, random.Random(1)))  # alone: the root of every key
    core.node.start(0.0)
    tree = core.trees[group] = GroupTree(group, None, False, 0.0)
    tree.grafting = True
    tree.lost = [[60.0, 3.0]]
    core.node.out.clear()
    core.node.receive(ORIGIN, Route(group, 1, ORIGIN, 1, Request(group, 7, ORIGIN, 0, b"q", 5000)),
                      1.0)
    assert not [m for _, m in core.node.out if isinstance(m, Reply | Route)]
    core.node.out.clear()
    replies, others = replies_until(core, 10.0)
    assert not [m for _, m in others if isinstance(m, Route)]
    assert [(r.req_id, r.error) for _, r in replies] == [(7, "no members in cluster")]
    sent_at = replies[0][0]
    assert 1.0 + 4.0 <= sent_at < 1.0 + 5.0


def test_a_root_that_lost_a_child_with_members_walks_a_request_to_them_when_they_graft_back():
    """A forwarder with the cluster's only member below it died: a request's step to it goes
    unacknowledged, the root drops it and its tree is empty, but the orphan grafts again once
    it notices. The request waits for it rather than failing at once with "no members" while
    the cluster has a live member (`messaging-churn`, 1,000 nodes, seed 7 did so 3 times)."""
    group = cluster_group("c")
    member = 18
    core = MessagingCore(OverlayNode(ME, random.Random(1)))  # alone: the root of every key
    core.node.start(0.0)
    tree = core.trees[group] = GroupTree(group, None, False, 0.0)
    tree.children[GRANDPARENT] = [1, 0.0]  # a forwarder, the member below it
    core.node.out.clear()
    core.node.receive(ORIGIN, Route(group, 1, ORIGIN, 1, Request(group, 7, ORIGIN, 0, b"q", 5000)),
                      1.0)
    steps = [m.payload for d, m in core.node.out if d == GRANDPARENT and hasattr(m, "payload")]
    assert [type(p) for p in steps] == [Request]
    core.node.out.clear()
    replies, _ = replies_until(core, 3.0)  # the step's acknowledgement never comes
    assert group in core.trees and not tree.children and tree.lost_weight(3.0) == 1
    assert not replies  # waiting for the orphan
    assert requests_walked_after_graft(core, group, member, 3.5, 4.0) == [(member, 7)]


def test_a_root_that_lost_no_member_says_no_members_at_once():
    """An empty tree with nothing lost (its members left): nobody is on the way back, and
    the caller hears "no members" at once."""
    group = cluster_group("c")
    core = MessagingCore(OverlayNode(ME, random.Random(1)))
    core.node.start(0.0)
    core.trees[group] = GroupTree(group, None, False, 0.0)
    core.node.out.clear()
    core.node.receive(ORIGIN, Route(group, 1, ORIGIN, 1, Request(group, 7, ORIGIN, 0, b"q", 5000)),
                      100.0)
    replies = [m for _, m in core.node.out if isinstance(m, Reply)]
    assert [(r.req_id, r.error) for r in replies] == [(7, "no members in cluster")]


def test_a_node_new_to_the_tree_asks_its_parent_for_what_an_orphan_missed_before_it_came():
    """Orphans of one death often graft to a node that joined the tree only lately (to
    adopt another graft). An orphan cut off from before then needs floods that node never
    passed: it asks its parent for them, which sends them as to a node cut off, and they
    spread down to the orphan."""
    core, tree = member_with_parent()
    tree.kept_since = 10.0  # in the tree since 10 s
    graft(core, CHILD, 1_000, 12.0)  # cut off after that: ours to send, nothing to ask
    assert not [m for d, m in core.node.out if d == PARENT and isinstance(m, Subscribe)]
    graft(core, CHILD + 10, 5_000, 12.0)  # cut off since 7 s
    asks = [m for d, m in core.node.out if d == PARENT and isinstance(m, Subscribe)]
    assert [(a.subscriber, a.cut_ms) for a in asks] == [(ME, 5_000)]
    assert core.counters["replays_asked"] == 1
    graft(core, CHILD + 20, 4_000, 12.5)  # within what we asked for already
    assert len([m for d, m in core.node.out if d == PARENT and isinstance(m, Subscribe)]) == 1
    core.node.out.clear()
    missed = Flood(GROUP, ORIGIN, 1, (b"passed above at 8 s",))
    core.node.receive(PARENT, again(missed, 4500), 12.6)
    for orphan in (CHILD + 10, CHILD + 20):
        assert batches(floods_to(core, orphan)) == batches([missed])


def test_a_parent_asked_by_its_child_sends_what_it_passed_and_asks_further_up_if_need_be():
    core, tree = member_with_parent()
    tree.children[CHILD] = [1, 0.0]
    passed = Flood(GROUP, ORIGIN, 1, (b"passed here at 9 s",))
    core.node.receive(PARENT, passed, 9.0)
    core.node.out.clear()
    core.node.receive(CHILD, Subscribe(GROUP, CHILD, 1, 0, 3_000), 11.0)
    assert floods_to(core, CHILD) == [again(passed, 2000)]
    assert not [m for _, m in core.node.out if isinstance(m, Subscribe | TreeAck)]
    # The same ask reaching back before we joined the tree: passed on up.
    tree.kept_since = 8.5
    core.node.out.clear()
    core.node.receive(CHILD, Subscribe(GROUP, CHILD, 1, 0, 6_000), 11.0)
    asks = [m for d, m in core.node.out if d == PARENT and isinstance(m, Subscribe)]
    assert [a.cut_ms for a in asks] == [6_000]
    # From a node that is not our child, a cut means nothing: it is a move being weighed.
    core.node.out.clear()
    core.node.receive(CHILD + 1, Subscribe(GROUP, CHILD + 1, 1, 0, 6_000), 11.0)
    assert not floods_to(core, CHILD + 1)


def test_a_node_still_grafting_grafts_again_saying_the_cut_of_an_orphan_it_adopts():
    """The node joined the tree a moment ago to adopt a new member (a graft without a cut,
    still on its way up): an orphan it adopts then makes it graft again with the orphan's
    cut, so that its adopter sends what the orphan missed."""
    core, tree = member_with_parent()
    core.node.leaf.add(GROUP)  # the group's root, not us: grafts pass us on their way there
    tree.parent = None
    tree.grafting = True
    tree.kept_since = 12.0
    core.node.routed.clear()
    graft(core, CHILD, 3_000, 12.2)
    assert [(m.subscriber, m.cut_ms) for m in core.node.routed] == [(ME, 3_000)]
    core.node.receive(NEW_PARENT, TreeAck(GROUP, 3, (ROOT,)), 12.4)
    assert tree.parent == NEW_PARENT and tree.cut_ms(12.4) == 0


def test_a_flood_routed_through_a_node_still_grafting_goes_on_toward_the_root():
    """A node that joined the tree a moment ago to adopt a new member takes a flood routed
    toward the group to its subtree; its own graft is still on its way, so the rest of the
    tree would never get it (`messaging-churn`, 1,000 nodes, seed 9: 7 members missed a
    broadcast so). It goes on along its route as well."""
    core, tree = member_with_parent()
    core.node.leaf.add(GROUP)  # the group's root, not us
    tree.children[CHILD] = [1, 0.0]
    flood = Flood(GROUP, ORIGIN, 1, (b"routed",))
    core.node.receive(ORIGIN, Route(GROUP, 1, ORIGIN, 1, flood), 1.0)
    assert floods_to(core, CHILD) == [flood]
    assert not [m for d, m in core.node.out if d == GROUP and isinstance(m, Route)]
    core.node.out.clear()
    tree.parent, tree.grafting = None, True
    second = Flood(GROUP, ORIGIN, 2, (b"routed while grafting",))
    core.node.receive(ORIGIN, Route(GROUP, 2, ORIGIN, 1, second), 2.0)
    assert floods_to(core, CHILD) == [second]
    onward = [m.payload for d, m in core.node.out if d == GROUP and isinstance(m, Route)]
    assert onward == [second]


def test_a_root_that_took_over_a_moment_ago_keeps_a_flood_for_the_orphans_about_to_graft():
    """The group's root crashed as a broadcast was on its way: the broadcast reaches the node
    that took over, which has no tree yet. Settling, it keeps the flood, and the dead root's
    orphans grafting to it with their cut get it (`messaging-churn`, 1,000 nodes, seed 10:
    9 members missed a broadcast so). A settled root without a tree keeps nothing: nobody
    is on the way."""
    core = MessagingCore(OverlayNode(ME, random.Random(1)))  # alone: the root of every key
    core.node.start(0.0)
    core.state.settle_until = 101.0  # a neighbour failed a moment ago
    flood = Flood(GROUP, ORIGIN, 1, (b"sent as the root crashed",))
    core.node.receive(ORIGIN, Route(GROUP, 1, ORIGIN, 1, flood), 100.0)
    assert core.counters["floods_kept_for_orphans"] == 1
    core.node.out.clear()
    graft(core, CHILD, 2_000, 100.5)
    assert floods_to(core, CHILD) == [again(flood, 500)]
    other = Flood(GROUP + 1, ORIGIN, 2, (b"to a group with no member",))
    core.node.receive(ORIGIN, Route(GROUP + 1, 2, ORIGIN, 1, other), 105.0)
    assert core.counters["flood_no_tree"] == 1
    core.node.receive(CHILD + 1, Route(GROUP + 1, 3, CHILD + 1, 1,
                                       Subscribe(GROUP + 1, CHILD + 1, 1, 0, 9_000)), 105.5)
    assert [m for d, m in core.node.out if d == CHILD + 1 and isinstance(m, TreeAck)]
    assert not floods_to(core, CHILD + 1)


def test_a_node_reading_a_frozen_backlog_waits_for_members_as_a_new_root_does():
    """Thawed after a freeze, the node is the root of a group whose members grafted to a node
    standing in for it meanwhile; they come back once that node hears of it again. A request
    meanwhile waits for them, parked, rather than "no members" at once."""
    group = cluster_group("c")
    core = MessagingCore(OverlayNode(ME, random.Random(1)))  # alone: the root of every key
    core.node.start(0.0)
    core.state.arrival_age = 15.0  # read after a 15 s freeze
    core.node.receive(ORIGIN, Flood(GROUP, ORIGIN, 1, (b"from the backlog",)), 100.0)
    core.state.arrival_age = 0.0
    core.node.out.clear()
    core.node.receive(ORIGIN, Route(group, 1, ORIGIN, 1, Request(group, 7, ORIGIN, 0, b"q", 5000)),
                      100.1)
    assert not [m for _, m in core.node.out if isinstance(m, Reply)]
    assert requests_walked_after_graft(core, group, CHILD, 101.5, 102.0) == [(CHILD, 7)]


def test_a_request_parked_where_roots_answer_at_once_is_retried_in_time_not_in_place():
    """`root_settle_s` 0 (roots answer at once) still parks a request through a failure's
    settle. Its retries must move on in time: at the same instant, the timer loop would run
    in place and simulated time would never pass the settle."""
    group = cluster_group("c")
    core = MessagingCore(OverlayNode(ME, random.Random(1)), MessagingConfig(root_settle_s=0.0))
    core.node.start(0.0)
    core.state.settle(core.config.root_settle_after_failure_s)
    core.node.out.clear()
    core.node.receive(ORIGIN, Route(group, 1, ORIGIN, 1, Request(group, 7, ORIGIN, 0, b"q", 9000)),
                      0.5)
    assert not [m for _, m in core.node.out if isinstance(m, Reply)]  # parked
    runs, replies = 0, []
    while not replies and runs < 10_000:
        now = core.node.next_deadline
        core.node.handle_timer(now)
        runs += 1
        replies = [(now, m) for _, m in core.node.out if isinstance(m, Reply)]
        core.node.out.clear()
    assert [(r.req_id, r.error) for _, r in replies] == [(7, "no members in cluster")]
    assert replies[0][0] >= core.config.root_settle_after_failure_s
    assert runs <= 1_000
