"""Tree reshaping (`iris.core.reshape`): a tree node moves up to an ancestor at least as near
as its parent, only while no event passes either, and the tree still delivers every event
once and in order.

The unit tests drive one sans-IO core by hand: `node.out` shows what it sent, `node.receive`
feeds it what its neighbours answer, at the times given."""

import random

from iris.core import MessagingCore, topic_group
from iris.core.messages import (
    Flood,
    Moved,
    Prune,
    Subscribe,
    SurveyAnswers,
    SurveyAsk,
    TreeAck,
    TreeDown,
    TreeUp,
)
from overlay.messages import Direct, RouteAck
from overlay.node import OverlayNode
from simulations.messaging import MessagingOptions, make_messaging_sim, scenario_messaging
from simulations.messaging_workload import core_of
from simulations.scenarios import build_ring

ME, PARENT, GRANDPARENT, ROOT, ASKER = 1, 2, 3, 4, 5
GROUP = topic_group("news")


def member_with_parent(node_class=OverlayNode):
    """A subscriber of "news" whose parent is PARENT, then GRANDPARENT, then ROOT."""
    core = MessagingCore(node_class(ME, random.Random(1)))
    core.node.start(0.0)
    core.subscribe("news")
    tree = core.trees[GROUP]
    tree.grafting = False
    tree.set_parent(PARENT, (GRANDPARENT, ROOT), 0.0)
    core.node.out.clear()
    return core, tree


def sent(core, kind):
    return [(dest, msg) for dest, msg in core.node.out if isinstance(msg, kind)]


def weigh_a_move(core, parent_rtt, grandparent_rtt, at=10.0):
    """Start weighing a move at `at` and answer it: the parent after `parent_rtt`, the
    grandparent (adopting us) after `grandparent_rtt`."""
    core.node.set_time(at)
    core.trees_protocol.reshaping.start(core.trees[GROUP])
    asks = sent(core, Subscribe)
    assert sorted(dest for dest, _ in asks) == [PARENT, GRANDPARENT]
    core.node.out.clear()
    for rtt, src, ancestors in sorted([(parent_rtt, PARENT, (GRANDPARENT, ROOT)),
                                       (grandparent_rtt, GRANDPARENT, (ROOT,))]):
        core.node.receive(src, TreeAck(GROUP, 7, ancestors), at + rtt)


def test_a_member_moves_to_a_nearer_grandparent_and_leaves_its_parent():
    core, tree = member_with_parent()
    weigh_a_move(core, parent_rtt=0.050, grandparent_rtt=0.020)
    assert tree.parent == GRANDPARENT
    assert tree.ancestors == (GRANDPARENT, ROOT)
    assert (PARENT, Moved(GROUP)) in core.node.out and not sent(core, Prune)
    assert (GRANDPARENT, TreeUp(((GROUP, 1),))) in core.node.out
    assert core.counters["tree_moves"] == 1


def test_a_parent_counts_a_child_that_moved_up_outside_its_subtree():
    """The mover's members are still in the tree: were the parent's own parent to die before
    its next beat, a survey reaching the parent would count them with the rest beyond it (as
    not answering), not leave them out of its count."""
    core, tree = member_with_parent()
    core.node.receive(PARENT, TreeDown(((GROUP, 10, (GRANDPARENT, ROOT)),)), 1.0)
    core.node.receive(ASKER, Subscribe(GROUP, ASKER, 3, 0), 1.0)
    core.node.receive(ASKER, TreeUp(((GROUP, 3),)), 1.1)
    assert tree.weight == 4 and tree.up_weight == 10
    core.node.out.clear()
    core.node.receive(ASKER, Moved(GROUP), 2.0)
    assert ASKER not in tree.children
    assert tree.weight == 1 and tree.up_weight == 13  # the tree still holds 14
    assert (PARENT, TreeUp(((GROUP, 1),))) in core.node.out
    # A child that leaves the tree (`Prune`) takes its members out of every count.
    core.node.receive(ASKER + 1, Subscribe(GROUP, ASKER + 1, 2, 0), 3.0)
    core.node.receive(ASKER + 1, TreeUp(((GROUP, 2),)), 3.1)
    core.node.receive(ASKER + 1, Prune(GROUP), 4.0)
    assert tree.weight == 1 and tree.up_weight == 13


def test_a_member_stays_when_its_grandparent_is_farther():
    core, tree = member_with_parent()
    weigh_a_move(core, parent_rtt=0.020, grandparent_rtt=0.050)
    assert tree.parent == PARENT
    assert (GRANDPARENT, Prune(GROUP)) in core.node.out  # undo the adoption
    assert not sent(core, TreeUp) and "tree_moves" not in core.counters


def test_a_member_an_event_passed_while_it_weighed_the_move_stays():
    core, tree = member_with_parent()
    core.node.set_time(10.0)
    core.trees_protocol.reshaping.start(tree)
    core.node.receive(GRANDPARENT, TreeAck(GROUP, 7, (ROOT,)), 10.02)
    core.node.receive(GRANDPARENT, Flood(GROUP, 99, 1, (b"event",)), 10.03)
    core.node.receive(PARENT, TreeAck(GROUP, 7, (GRANDPARENT, ROOT)), 10.05)
    assert tree.parent == PARENT
    assert (GRANDPARENT, Prune(GROUP)) in core.node.out


def test_a_member_a_survey_passed_while_it_weighed_the_move_stays():
    """A question spread over a tree that changes under it would cross an edge both ways."""
    core, tree = member_with_parent()
    core.node.set_time(10.0)
    core.trees_protocol.reshaping.start(tree)
    core.node.receive(GRANDPARENT, TreeAck(GROUP, 7, (ROOT,)), 10.02)
    core.node.receive(PARENT, SurveyAsk(GROUP, 99, 1, 1000, 1024, b"question"), 10.03)
    core.node.receive(PARENT, TreeAck(GROUP, 7, (GRANDPARENT, ROOT)), 10.05)
    assert tree.parent == PARENT
    assert (GRANDPARENT, Prune(GROUP)) in core.node.out


def test_a_forwarder_whose_last_child_died_stays_while_its_members_may_graft_back():
    """Leaving at once would take the count of the dead child's members with it: a survey
    would then not count them as not answering."""
    core, tree = member_with_parent()
    core.node.receive(ASKER, Subscribe(GROUP, ASKER, 5, 0), 1.0)
    core.node.receive(ASKER, TreeUp(((GROUP, 5),)), 1.1)
    core.unsubscribe("news")  # a pure forwarder now, for its one child of capacity 5
    assert tree.weight == 5 and ASKER in tree.children
    core.node.out.clear()
    core.node.set_time(2.0)
    core.peer_failed(ASKER)
    assert core.trees.get(GROUP) is tree and not sent(core, Prune)
    core.node.out.clear()
    core.node.receive(PARENT, SurveyAsk(GROUP, 99, 1, 1000, 1024, b"question"), 3.0)
    assert [msg.known for _, msg in sent(core, SurveyAnswers)] == [5]
    # Once the dead child's members have had their time to graft back, it leaves.
    t = 3.0
    while GROUP in core.trees and t < 120.0:
        t = core.node.next_deadline
        core.node.handle_timer(t)
    assert GROUP not in core.trees and (PARENT, Prune(GROUP)) in core.node.out


def test_no_move_is_weighed_for_a_while_after_a_peer_failed():
    """A partition leaves events on stalled connections: no way is shortened under them."""
    core, tree = member_with_parent()
    calm = core.config.reshape_calm_s
    core.node.set_time(10.0)
    core.peer_failed(99)
    core.node.set_time(10.0 + calm / 2)
    core.trees_protocol.reshaping.start(tree)
    assert not sent(core, Subscribe) and tree.attempt is None
    core.node.set_time(10.0 + calm)
    core.trees_protocol.reshaping.start(tree)
    assert sorted(dest for dest, _ in sent(core, Subscribe)) == [PARENT, GRANDPARENT]


def test_an_ancestor_adopts_a_mover_at_no_capacity_only_while_quiet():
    core, tree = member_with_parent()
    quiet = core.config.reshape_quiet_s
    core.node.receive(ASKER, Subscribe(GROUP, ASKER, 5, 0), 10.0)
    assert tree.children[ASKER][0] == 0  # counted once it moved and reported its capacity
    assert [dest for dest, _ in sent(core, TreeAck)] == [ASKER]
    core.node.out.clear()
    core.node.receive(PARENT, Flood(GROUP, 99, 1, (b"event",)), 20.0)
    core.node.receive(ASKER + 1, Subscribe(GROUP, ASKER + 1, 5, 0), 20.0 + quiet / 2)
    assert (ASKER + 1, Prune(GROUP)) in core.node.out and ASKER + 1 not in tree.children
    core.node.out.clear()
    core.node.receive(ASKER + 1, Subscribe(GROUP, ASKER + 1, 5, 0), 20.0 + quiet)
    assert ASKER + 1 in tree.children


def test_an_ancestor_refuses_to_adopt_its_own_ancestor():
    core, tree = member_with_parent()
    core.node.receive(GRANDPARENT, Subscribe(GROUP, GRANDPARENT, 5, 0), 10.0)
    assert (GRANDPARENT, Prune(GROUP)) in core.node.out
    assert GRANDPARENT not in tree.children


def test_trees_reshaped_between_bursts_deliver_every_event_once_and_in_order():
    """A ring of 300 nodes, one topic with 80 subscribers. From the moment they are grafted,
    4 publishers send bursts of 8 events every 2.5 s, so trees move in the quiet between
    bursts, right after one and before the next. Every event reaches every subscriber once, in
    order, and trees did move (both are conditions on the run, not timings)."""
    opts = MessagingOptions(nodes=300, seed=5)
    sim, work = make_messaging_sim(opts)
    assert build_ring(sim, opts)["converged"]
    ids = list(sim.active)
    for node in sim.rng.sample(ids, 80):
        work.subscribe(node, "news")
    assert sim.run_until(work.all_grafted, timeout=60.0, check_every=0.5) is not None
    publishers = sim.rng.sample(ids, 4)
    start = sim.now
    for burst in range(24):
        for i in range(8):
            sim.at(start + burst * 2.5 + i * 0.004,
                   lambda p=publishers[i % 4]: work.flood(p, "news", True))
    sim.run_for(24 * 2.5 + 10.0)
    moves = sum(core_of(n).counters.get("tree_moves", 0) for n in sim.nodes.values())
    assert moves > 0
    summary = work.flood_summary(topic=True)
    assert summary["publishes"] == 24 * 8
    assert summary["publish_delivery_ratio"] == 1.0
    assert summary["publish_duplicates"] == 0
    assert work.order_violations == 0


def test_the_publish_stretch_splits_into_the_way_to_the_tree_through_it_and_direct():
    """The simulator's breakdown adds up to the headline figure, and every part is there:
    publishers outside a tree reach it over the overlay first, and a publisher's first events
    to a topic come through the tree only (`iris.core.direct`)."""
    opts = MessagingOptions(nodes=120, seed=4, requests=200, request_rate=200.0, broadcasts=20,
                            publishes=200, tunnel_messages=10, tunnel_big_mib=0)
    r = scenario_messaging(opts)  # (too few requests here for its balance check)
    assert r["publish_delivery_ratio"] == 1.0 and r["broadcast_delivery_ratio"] == 1.0
    parts = ("publish_delay_stretch_to_tree", "publish_delay_stretch_in_tree",
             "publish_delay_stretch_direct")
    assert all(r[part] > 0 for part in parts)
    assert abs(sum(r[part] for part in parts) - r["publish_delay_stretch"]) <= 0.003  # rounded


def test_a_dead_parent_is_replaced_after_one_late_beat_not_after_the_silence():
    """The parent (in none of the member's overlay state) stops beating: half a beat after
    it is late at most, the member's beat to it goes acknowledged, and at the missing
    acknowledgement the member grafts again, without waiting for the overlay's probes of the
    parent (four timeouts more), well before three silent beats."""
    core, tree = member_with_parent()
    cfg = core.config
    t, acked_beat = 0.0, None
    while tree.parent == PARENT and t < 60.0:
        t = core.node.next_deadline
        core.node.handle_timer(t)
        for dest, msg in core.node.out:
            if isinstance(msg, Direct) and isinstance(msg.payload, TreeUp) and acked_beat is None:
                assert dest == PARENT
                acked_beat = t
        core.node.out.clear()
    late = cfg.tree_beat_s * cfg.tree_late_beats
    assert acked_beat is not None and late <= acked_beat <= late + cfg.tree_beat_s / 2
    assert tree.parent != PARENT
    assert t - acked_beat < core.node.config.probe_timeout_s  # the hop's timeout, no probe


def acked_beats(core):
    """(dest, seq) of the acknowledged tree beats the core sent."""
    return [(dest, msg.seq) for dest, msg in core.node.out
            if isinstance(msg, Direct) and isinstance(msg.payload, TreeUp)]


def test_a_parent_whose_connection_ended_gets_its_beat_at_once_and_is_left_if_dead():
    """A killed process's kernel closes its connections at once: told so (`link_lost`), the
    member beats its parent now, acknowledged, and grafts again at the missing
    acknowledgement, a hop's timeout later, not a late beat (5.5-8 s) later."""
    core, tree = member_with_parent()
    lost_at = 1.0
    core.node.link_lost(PARENT, lost_at)
    assert [dest for dest, _ in acked_beats(core)] == [PARENT]
    core.node.out.clear()
    t = lost_at
    while tree.parent == PARENT and t < 60.0:
        t = core.node.next_deadline
        core.node.handle_timer(t)
        core.node.out.clear()
    assert tree.parent != PARENT  # grafted again (alone in its ring, it is the root now)
    assert t - lost_at <= core.node.config.probe_timeout_s


def test_a_parent_whose_connection_ended_but_answers_is_kept():
    core, tree = member_with_parent()
    core.node.link_lost(PARENT, 1.0)
    [(_, seq)] = acked_beats(core)
    core.node.out.clear()
    core.node.receive(PARENT, RouteAck((seq,)), 1.1)
    core.node.handle_timer(1.0 + 4 * core.node.config.probe_timeout_s)
    assert tree.parent == PARENT and not tree.grafting
    # Nor does a lost connection with a peer that is no tree neighbour send anything.
    core.node.out.clear()
    core.node.link_lost(ASKER, 2.0)
    assert not acked_beats(core)


def test_a_child_whose_connection_ended_gets_its_beat_at_once_and_is_dropped_if_dead():
    """Walks and surveys would each lose a hop's timeout on a dead child until its silence
    (15 s) dropped it: told its connection ended, the parent beats it now, acknowledged."""
    core, tree = member_with_parent()
    tree.children[ASKER] = [2, 0.0]
    core.node.link_lost(ASKER, 1.0)
    beats = [(dest, msg) for dest, msg in core.node.out
             if isinstance(msg, Direct) and isinstance(msg.payload, TreeDown)]
    assert [dest for dest, _ in beats] == [ASKER]
    assert core.counters["children_verified"] == 1
    core.node.out.clear()
    t = 1.0
    while ASKER in tree.children and t < 60.0:
        t = core.node.next_deadline
        core.node.handle_timer(t)
        core.node.out.clear()
    assert ASKER not in tree.children
    assert t - 1.0 <= core.node.config.probe_timeout_s
    assert tree.lost_weight(t) == 2  # its members, orphans until they graft again


def test_a_child_silent_past_its_silence_is_left_to_the_beat_when_its_connection_ends():
    """After a freeze, every connection the node's peers closed meanwhile ends at once; a
    child silent that long has most likely another parent now, and would disown us if
    beaten, taking its members out of our count at once. The beat drops it as lost instead,
    its members still counted until they graft back."""
    core, tree = member_with_parent()
    tree.children[ASKER] = [2, 0.0]
    silence = core.config.tree_beat_s * core.config.tree_silence_beats
    core.node.link_lost(ASKER, silence + 1.0)
    assert not [m for _, m in core.node.out
                if isinstance(m, Direct) and isinstance(m.payload, TreeDown)]
