"""The overlay core driven by hand: no clock, no network, no simulator."""

import itertools
import random

import pytest

from overlay.config import OverlayConfig
from overlay.messages import Departed, Heartbeat, JoinRequest, Lookup, Ping, Pong
from overlay.node import ACTIVE, SWEEPS_AFTER_SPARSE_FAILURES, OverlayApp, OverlayNode
from overlay.probes import P_TABLE
from tests.conftest import shuttle


class Recorder(OverlayApp):
    def __init__(self):
        self.delivered = []

    def deliver(self, key, payload, origin, hops):
        self.delivered.append((key, payload, origin, hops))


def ring_by_hand(count, rng, cfg=None, app=lambda node_id: None):
    """`count` nodes of random ids (ascending; each with `app(id)` on top), joined one after
    another through the first."""
    ids = sorted(rng.getrandbits(128) for _ in range(count))
    nodes = {i: OverlayNode(i, rng, cfg, app(i)) for i in ids}
    nodes[ids[0]].start(0.0)
    for i in ids[1:]:
        nodes[i].start(0.0, seeds=[ids[0]])
        shuttle(nodes, 0.0)
    return ids, nodes


def timeline(nodes, until, drop=lambda src, dest, msg: False):
    """Fire the nodes' timers in time order up to `until`: at each instant, yield it once the
    timers due have fired (what they sent still queued), then deliver it (`shuttle`)."""
    while (now := min(n.next_deadline for n in nodes.values())) <= until:
        for node in list(nodes.values()):
            if node.next_deadline <= now:
                node.handle_timer(now)
        yield now
        shuttle(nodes, now, drop=drop)


def test_two_nodes_join_by_hand():
    rng = random.Random(1)
    a = OverlayNode(10, rng)
    b = OverlayNode(2**127, rng)
    nodes = {a.id: a, b.id: b}
    a.start(0.0)
    assert a.state == ACTIVE and a.next_deadline < float("inf")
    b.start(0.0, seeds=[a.id])
    # First it looks for a node near it to join through (`overlay.discovery`): the seed is
    # asked for its leaf set, whose members are probed; here it has none.
    assert b.out == [(a.id, Ping(1, True, False))]
    shuttle(nodes, 0.001)
    assert b.state == ACTIVE
    assert a.leaf.members() == (b.id,) and b.leaf.members() == (a.id,)


def test_without_discovery_a_join_goes_to_the_seed_at_once():
    rng = random.Random(1)
    a = OverlayNode(10, rng)
    b = OverlayNode(2**127, rng, OverlayConfig(discovery_s=0.0))
    a.start(0.0)
    b.start(0.0, seeds=[a.id])
    assert b.out == [(a.id, JoinRequest(b.id))]
    shuttle({a.id: a, b.id: b}, 0.001)
    assert b.state == ACTIVE


def test_routing_delivers_at_the_closest_node_by_hand():
    rng = random.Random(2)
    apps = {}
    ids, nodes = ring_by_hand(6, rng, app=lambda i: apps.setdefault(i, Recorder()))
    assert all(n.active for n in nodes.values())
    key = ids[3] + 5
    nodes[ids[0]].route(key, Lookup(ids[0], 7), now=0.0)
    shuttle(nodes, 0.0)
    assert apps[ids[3]].delivered == [(key, Lookup(ids[0], 7), ids[0], 1)]


def joined_pair(seed, app=None):
    """Node a (id 1, with `app`) founds a ring, b joins it; a's output is cleared."""
    rng = random.Random(seed)
    a = OverlayNode(1, rng, app=app)
    b = OverlayNode(2**100, rng)
    nodes = {a.id: a, b.id: b}
    a.start(0.0)
    b.start(0.0, seeds=[a.id])
    shuttle(nodes, 0.0)
    a.out.clear()
    return a, b


def test_timers_fire_only_when_asked():
    a, _ = joined_pair(3)
    a.handle_timer(a.config.heartbeat_s * 1.3)
    assert any(isinstance(msg, Heartbeat) for _, msg in a.out)


def test_silent_neighbour_is_probed_then_dropped():
    rng = random.Random(4)
    a = OverlayNode(1, rng)
    b = OverlayNode(2**100, rng)
    nodes = {a.id: a, b.id: b}
    a.start(0.0)
    b.start(0.0, seeds=[a.id])
    shuttle(nodes, 0.0)
    # b dies; a keeps its clock moving and hears nothing.
    t, probes = 0.0, 0
    while b.id in a.leaf and t < 60:
        t = a.next_deadline
        a.handle_timer(t)
        probes += sum(1 for dest, msg in a.out if dest == b.id and isinstance(msg, Ping))
        a.out.clear()
    assert b.id not in a.leaf
    assert probes == a.config.probe_attempts
    assert t <= a.config.silence_s + a.config.probe_attempts * a.config.probe_timeout_s + 0.01


def test_a_neighbour_whose_connection_ended_is_probed_at_once_and_dropped_if_dead():
    """A killed process's connections end at once (its kernel closes them): told so, a node
    probes the peer now and drops it after the probe's timeout, not after the heartbeats'
    silence (`link_lost`)."""
    a, b = joined_pair(4)
    killed = 1.0
    a.link_lost(b.id, killed)
    assert [msg for dest, msg in a.out if dest == b.id and isinstance(msg, Ping)]
    assert b.id in a._suspects  # routes avoid it meanwhile
    a.out.clear()
    t = killed
    while b.id in a.leaf and t < 60:
        t = a.next_deadline
        a.handle_timer(t)
        a.out.clear()
    assert b.id not in a.leaf
    # Verified as a death we were told of: one probe, where nothing is lost.
    assert t <= killed + a.config.probe_timeout_s + 0.01


def test_a_peer_whose_connection_ended_but_answers_is_kept():
    """It closed the connection for a reason of its own (or one of its own closes crossed
    ours): it answers the probe and nothing changes."""
    a, b = joined_pair(5)
    nodes = {a.id: a, b.id: b}
    a.link_lost(b.id, 1.0)
    assert [msg for dest, msg in a.out if dest == b.id and isinstance(msg, Ping)]
    shuttle(nodes, 1.0)
    assert b.id in a.leaf and not a._suspects
    a.handle_timer(1.0 + 4 * a.config.probe_timeout_s)  # every probe would have timed out
    assert b.id in a.leaf


def test_a_peer_is_avoided_only_while_a_probe_will_say_whether_it_lives():
    """With every probe slot taken, no probe goes to a peer whose connection ended: avoided
    anyway, it would stay avoided until it spoke to us, however alive."""
    a, b = joined_pair(8)
    a._probes.limit = len(a._probes.by_seq)
    a.link_lost(b.id, 1.0)
    assert not [msg for dest, msg in a.out if dest == b.id and isinstance(msg, Ping)]
    assert b.id not in a._suspects
    a._probes.limit += 1
    a.link_lost(b.id, 1.5)
    assert b.id in a._suspects


def test_a_lost_connection_to_a_peer_not_held_or_before_the_node_is_active_changes_nothing():
    """Every node that ever talked to a dead peer would probe it, each verdict owing sweeps of
    its table: a peer we do not hold is left to the hops and beats that would find it."""
    node = OverlayNode(1, random.Random(6))
    node.link_lost(2**100, 0.5)
    assert not node.out and not node._suspects
    a, b = joined_pair(7)
    stranger = 2**99 + 12345
    assert stranger not in a.leaf and stranger not in a.table
    a.link_lost(stranger, 1.0)
    assert not a.out and not a._suspects


class Undeliverable(OverlayApp):
    """Keeps what the node gave up delivering (`OverlayApp.undeliverable`)."""

    def __init__(self):
        self.given_up = []

    def undeliverable(self, peer, payload):
        self.given_up.append(payload)


def test_one_acknowledgement_may_carry_many_hops():
    """A driver may merge the acknowledgements of a batch; the sender settles every hop it
    names (and none of another peer's)."""
    from overlay.messages import Direct, RouteAck

    a, b = joined_pair(5, app=Undeliverable())
    for k in range(3):
        a.send_acked(b.id, Lookup(a.id, k), now=1.0)
    seqs = tuple(msg.seq for _, msg in a.out if isinstance(msg, Direct))
    assert len(seqs) == 3
    a.out.clear()
    a.receive(3, RouteAck(seqs), 1.01)  # from a stranger: settles nothing
    a.receive(b.id, RouteAck(seqs[:2]), 1.01)
    # Past the acknowledgement timeout only the unacknowledged message is given up on: b is
    # probed for it (and the two acknowledged ones are never mentioned again).
    a.handle_timer(1.0 + 10 * a.config.route_ack_timeout_s)
    assert a.app.given_up == [Lookup(a.id, 2)]


def test_a_hop_written_into_a_late_dial_waits_for_its_acknowledgement_from_the_connect():
    """The driver reports a dial that connected only now: the hops queued for it had none of
    their time yet, so they are given up one timeout after the connect, not after the write
    (a hop delivered just before its timeout was sent another way too); a hop written on the
    open link later keeps its own timeout."""
    a, b = joined_pair(5, app=Undeliverable())
    a.given_up = []
    timeout = a.config.route_ack_timeout_s
    a.send_acked(b.id, Lookup(a.id, 1), now=1.0)
    a.link_up(b.id, 1.0 + 0.9 * timeout)
    a.send_acked(b.id, Lookup(a.id, 2), now=1.0 + 0.95 * timeout)
    a.handle_timer(1.0 + timeout)
    assert a.app.given_up == [] and a.given_up == []
    a.handle_timer(1.0 + 1.92 * timeout)  # past the first's timeout from the connect
    assert a.app.given_up == [Lookup(a.id, 1)] and a.given_up == [b.id]
    a.handle_timer(1.0 + 1.96 * timeout)  # the second's own timeout
    assert a.app.given_up == [Lookup(a.id, 1), Lookup(a.id, 2)]


def test_a_probe_written_into_a_late_dial_measures_its_round_trip_from_the_connect():
    """A table probe whose dial connected late (a link closed for idleness, a slow handshake)
    measures the peer's round trip, not the dial's."""
    from overlay.messages import Ping, Pong
    from overlay.probes import P_TABLE

    a, b = joined_pair(5)
    a.now = 10.0
    a._ping(b.id, P_TABLE)
    (seq,) = [msg.seq for dest, msg in a.out if dest == b.id and isinstance(msg, Ping)]
    a.link_up(b.id, 10.004)  # 4 ms of dial and handshake
    a.receive(b.id, Pong(seq, True, None), 10.0042)
    assert a.table.rtt_of(b.id) == pytest.approx(0.0002)


def test_a_probe_written_into_a_late_dial_times_out_from_the_connect():
    """A probe queued while its dial took most of the probe timeout (behind a link closing
    for idleness, or a SYN retransmitted across a cut) is not retried, nor its peer declared
    failed, until the peer has had the full timeout to answer; then it is, as any probe."""
    from overlay.messages import Ping, Pong
    from overlay.probes import P_TABLE

    a, b = joined_pair(5)
    timeout = a._ping_timeout
    a.now = 10.0
    a.out.clear()
    a._ping(b.id, P_TABLE)
    (seq,) = [msg.seq for dest, msg in a.out if dest == b.id and isinstance(msg, Ping)]
    a.out.clear()
    a.link_up(b.id, 10.0 + 0.9 * timeout)
    a.handle_timer(10.0 + timeout)  # its timeout from the write: nothing happens
    assert a._probes.by_peer[b.id].seq == seq
    assert not [msg for _, msg in a.out if isinstance(msg, Ping)]
    a.handle_timer(10.0 + 1.95 * timeout)  # from the connect: probed again
    (retry,) = [msg for dest, msg in a.out if dest == b.id and isinstance(msg, Ping)]
    assert retry.seq != seq and a._probes.by_peer[b.id].attempt == 2
    a.receive(b.id, Pong(retry.seq, True, None), 10.0 + 1.95 * timeout + 0.001)
    assert b.id in a.table and not a._probes.by_peer


def test_a_link_up_for_a_peer_with_no_hop_waiting_is_not_remembered():
    a, b = joined_pair(5)
    a.link_up(b.id, 1.0)
    assert a._opened is None


def test_a_calm_table_is_probed_less_and_less_often():
    """No failure, nothing to find: the table probe period grows with the calm, up to its
    cap (a failure seen has the whole table swept instead: `_sweep_due_at`)."""
    cfg = OverlayConfig(leaf_size=4)
    rng = random.Random(4)
    ids, nodes = ring_by_hand(12, rng, cfg)
    assert all(n.active for n in nodes.values())
    watched = nodes[ids[5]]
    probes_at: list[float] = []

    def run_until(end):
        for now in timeline(nodes, end):
            probes_at.extend(now for _, msg in watched.out
                             if isinstance(msg, Ping) and msg.want_row)

    run_until(1500.0)
    gaps = [b - a for a, b in itertools.pairwise(probes_at)]
    assert gaps[0] < 2 * cfg.table_probe_s  # at first, about the base period
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(gaps))  # then ever longer
    assert gaps[-1] == pytest.approx(cfg.table_probe_max_s)  # up to the cap
    assert cfg.table_probe_max_s > 4 * cfg.table_probe_s


def test_a_dead_member_whose_notice_was_lost_is_found_by_a_neighbours_heartbeat():
    """Only the immediate neighbours watch a member by heartbeats: a dead member beyond them,
    whose death notice never came, is found by its absence from the neighbour's list."""
    cfg = OverlayConfig(leaf_size=4)
    rng = random.Random(7)
    ids, nodes = ring_by_hand(10, rng, cfg)
    a = nodes[ids[4]]
    near, far = a.leaf.right
    assert (near, far) == (ids[5], ids[6])
    del nodes[far]  # it crashes; a never hears so (every notice to a is lost)

    def lose_notices(src, dest, msg):
        return dest == a.id and isinstance(msg, Departed)

    for _ in timeline(nodes, 120.0, drop=lose_notices):
        pass  # two minutes: long after a heartbeat of near's has left far out
    assert far not in a.leaf and far not in nodes[near].leaf
    assert a.leaf.right == [near, ids[7]]


def test_heartbeats_go_left_every_period_and_right_every_fourth():
    """MSPastry's leaf-set heartbeats: each node watches its right neighbour closely; the
    beat to the right, which lets the left neighbour be watched at all, is rarer."""
    cfg = OverlayConfig(leaf_size=4)
    ids, nodes = ring_by_hand(6, random.Random(11), cfg)
    a = nodes[ids[2]]
    left, right = a.leaf.left[0], a.leaf.right[0]
    beats = {left: 0, right: 0}
    for _ in timeline(nodes, 200.0):
        for dest, msg in a.out:
            if isinstance(msg, Heartbeat):
                beats[dest] += 1
    periods = 200.0 / cfg.heartbeat_s
    assert abs(beats[left] - periods) <= 1
    assert abs(beats[right] - periods / cfg.right_beat_periods) <= 1


def test_a_crash_is_dropped_by_every_holder_within_15_s():
    """The dead node's left neighbour finds it and tells its leaf set, which lacks the holder
    farthest right; the right neighbour, confirming the notice, tells that one (else it
    waited for a heartbeat's hint: up to 17.6 s over these rings)."""
    cfg = OverlayConfig(leaf_size=4)
    slowest = 0.0
    for seed in range(20):
        ids, nodes = ring_by_hand(10, random.Random(seed), cfg)
        for _ in timeline(nodes, 30.0):
            pass
        dead = ids[5]
        holders = [n for n in nodes.values() if dead in n.leaf.members()]
        assert len(holders) == 4
        del nodes[dead]
        for now in timeline(nodes, 60.0):
            if not any(dead in n.leaf.members() for n in holders):
                slowest = max(slowest, now - 30.0)
                break
        else:
            pytest.fail(f"ring {seed}: a holder kept the dead node for 30 s")
    assert slowest <= 15.0


def test_a_late_answer_of_a_peer_given_up_takes_it_back():
    """Across a cut, a probe and its answer wait in connections; the answer, delivered at the
    heal after its probe expired, still shows the peer is back: it is taken back at once (and
    told our leaf set, and asked where we belong), not at the next retry, seconds later."""
    a, b = joined_pair(5)
    t = 0.0
    while b.id in a.leaf and t < 60:  # b is cut off: a gives it up
        t = a.next_deadline
        a.handle_timer(t)
        a.out.clear()
    assert b.id not in a.leaf
    a.receive(b.id, Pong(seq=10**6, active=True, leaf=None), t + 1.0)  # answers no probe
    assert b.id in a.leaf
    sent = {type(msg) for dest, msg in a.out if dest == b.id}
    assert Heartbeat in sent and JoinRequest in sent


def test_the_shared_empty_record_of_hops_is_never_written():
    """Nodes awaiting no acknowledgement share one empty dict (memory, at simulator scale): a
    node's first hop gets a dict of its own, and an emptied one goes back to the shared."""
    from overlay import node as node_module
    from overlay.messages import Direct, RouteAck

    a, b = joined_pair(7)
    assert a._routes is node_module._NO_ROUTES
    a.send_acked(b.id, Lookup(a.id, 1), now=1.0)
    assert a._routes is not node_module._NO_ROUTES and len(a._routes) == 1
    (seq,) = [msg.seq for _, msg in a.out if isinstance(msg, Direct)]
    a.receive(b.id, RouteAck((seq,)), 1.01)
    assert a._routes is node_module._NO_ROUTES and node_module._NO_ROUTES == {}


def _sweeping_node(seed):
    """A node whose one-a-side leaf set is full (neighbours ...9 and ...b) and whose table
    holds two more peers, row 0 entries taken at time 0: (node, its two entries). Its
    periodic table probe is set far out: it would keep the entries fresh."""
    cfg = OverlayConfig(leaf_size=2, table_probe_s=10_000.0, table_probe_max_s=10_000.0)
    me = OverlayNode(int("a" * 32, 16), random.Random(seed), cfg)
    me.start(0.0)
    for neighbour in (int("a" * 31 + "9", 16), int("a" * 31 + "b", 16)):
        me.leaf.add(neighbour)
    me._leaf_changed()
    entries = (int("b" + "1" * 31, 16), int("c" + "1" * 31, 16))
    for entry in entries:
        me.table.consider(entry, 0.01, 0.0)
    assert not any(entry in me.leaf for entry in entries)
    return me, entries


def _swept(me, entries, until, events=()):
    """Drive node `me` up to `until`, every peer answering every probe at once; `events`
    holds (time, fn) pairs, each fn called with the node at its time. Returns (time, entry)
    of each sweep probe of `entries` (a table probe that asks for no row: the periodic one
    asks for one)."""
    swept, events = [], sorted(events, key=lambda e: e[0])
    while (now := min(me.next_deadline, events[0][0] if events else until)) < until:
        if events and events[0][0] == now:
            me.set_time(now)
            events.pop(0)[1](me)
        else:
            me.handle_timer(now)
        out, me.out = me.out, []
        for dest, msg in out:
            if isinstance(msg, Ping):
                if dest in entries and not msg.want_row:
                    swept.append((now, dest))
                me.receive(dest, Pong(msg.seq, True, None), now)
    return swept


def _failure(me):
    me._failure_noticed(me.now)


def _speaks(peer):
    """An event of `_swept`: `peer` pings the node unasked."""
    return lambda me: me.receive(peer, Ping(0, False, True), me.now)


def test_sweeps_run_at_once_after_a_calm_then_wait_for_a_quiet_spell_or_their_longest_wait():
    """The first failure after a calm has the table swept at once. Failures that go on make no
    sweep each: one runs every `sweep_max_wait_s`. Once they stop, one runs after
    `sweep_quiet_s` of quiet, and one more `sweep_min_interval_s` after that (it finds the
    entries that died after the other looked); then none."""
    me, entries = _sweeping_node(seed=5)
    cfg = me.config
    wait, quiet, interval = cfg.sweep_max_wait_s, cfg.sweep_quiet_s, cfg.sweep_min_interval_s
    # Failures every 5 s until 19 s after the fourth sweep (1 s, then every `wait`).
    end = 1 + 3 * wait + 19
    failures = [(1.0, _failure)] + [(float(t), _failure) for t in range(10, int(end) + 1, 5)]
    swept = _swept(me, entries, end + 400.0, failures)
    starts = sorted({round(t) for t, _ in swept})  # each sweep takes under a second here
    assert starts == [1, 1 + wait, 1 + 2 * wait, 1 + 3 * wait, end + quiet,
                      end + quiet + interval]
    assert all(sorted(p for t, p in swept if round(t) == start) == sorted(entries)
               for start in starts)


def _failure_of(node):
    """An event of `_swept`: the node sees `node` fail."""
    return lambda me: me._failure_noticed(me.now, node=node)


def test_sparse_failures_owe_sweeps_at_a_doubling_quiet_and_lone_ones_none():
    """A failure heard `sweep_quiet_s` to `sweep_max_wait_s` after the one before (failures go
    on, but sparsely: 1-hour sessions) owes sweeps each a quiet as long again as the one
    before, so that an entry that died after the last of the usual two is still found. A
    failure after a long calm (`lone_calm_s`: a lone crash now and then) owes none, while no
    other follows."""
    me, entries = _sweeping_node(seed=7)
    cfg = me.config
    quiet, interval = cfg.sweep_quiet_s, cfg.sweep_min_interval_s
    sparse = 1.0 + (quiet + cfg.sweep_max_wait_s) / 2
    swept = _swept(me, entries, 1_000.0, [(1.0, _failure), (sparse, _failure)])
    first = sparse + quiet
    second = first + interval
    expected = [1, 1 + interval, first, second]  # (the first failure's two, then the others)
    while len(expected) < 2 + SWEEPS_AFTER_SPARSE_FAILURES:
        expected.append(expected[-1] + (expected[-1] - sparse))
    assert sorted({round(t) for t, _ in swept}) == [round(t) for t in expected]

    me, entries = _sweeping_node(seed=7)
    apart = 1.0 + cfg.lone_calm_s + 60  # (the sweeps' answers moved the table's calm on)
    swept = _swept(me, entries, 1_000.0, [(1.0, _failure), (apart, _failure)])
    assert sorted({round(t) for t, _ in swept}) == [1, 1 + interval]


def test_a_lone_failure_owes_no_sweep_until_another_node_fails():
    """The failure that ends a calm of `lone_calm_s` owes no sweep, heard of again (by name,
    or unnamed in a neighbour's heartbeat) or not; one of another node before the next calm has
    the table swept at once, and again `sweep_min_interval_s` later. A node that joined lately
    has not seen the ring calm: its first failure is swept for."""
    me, entries = _sweeping_node(seed=7)
    cfg = me.config
    lone, other = int("d" + "1" * 31, 16), int("e" + "1" * 31, 16)
    t0 = 1.0 + cfg.lone_calm_s + 60.0
    gossip = Heartbeat(me.leaf.members(), 2)
    events = [(1.0, _failure), (t0, _failure_of(lone)), (t0 + 5, _failure_of(lone)),
              (t0 + 8, lambda n: n.receive(n.leaf.left[0], gossip, n.now)),
              (t0 + 10, _failure_of(other))]
    swept = _swept(me, entries, t0 + 300.0, events)
    interval = cfg.sweep_min_interval_s
    assert sorted({round(t) for t, _ in swept}) == [1, 1 + interval, t0 + 10, t0 + 10 + interval]

    me, entries = _sweeping_node(seed=7)
    swept = _swept(me, entries, 200.0, [(cfg.lone_calm_s / 2, _failure_of(lone))])
    assert sorted({round(t) for t, _ in swept})[:1] == [cfg.lone_calm_s / 2]


def _dies(me, dead, until):
    """Drive `me` up to `until`, every peer but `dead` answering at once: what it sent."""
    sent = []
    while (now := me.next_deadline) < until:
        me.handle_timer(now)
        out, me.out = me.out, []
        sent += out
        for dest, msg in out:
            if isinstance(msg, Ping) and dest != dead:
                me.receive(dest, Pong(msg.seq, True, None), now)
    return sent


def _told_its_state(me, sent, dead, kept):
    """`me` sent a holder's notice of `dead` once to each of its table entries (`kept` among
    them) and leaf-set members, and to nobody else."""
    told = [d for d, m in sent if isinstance(m, Departed)]
    assert kept in told
    assert sorted(told) == sorted(set(me.table.entries()) | set(me.leaf.members()))
    assert all(m == Departed(dead, True) for _, m in sent if isinstance(m, Departed))


def test_a_holder_told_of_a_death_by_another_verifies_it_and_tells_its_own_table():
    """A holder's notice (`Departed.held`): a receiver that holds the dead node probes it and,
    once it is verified dead, tells its own table entries; one that does not hold it neither
    probes nor counts a failure."""
    me, (dead, kept) = _sweeping_node(seed=8)
    t0 = 400.0
    holder = int("f" + "1" * 31, 16)
    me.receive(holder, Departed(dead, True), t0)
    assert [(d, type(m)) for d, m in me.out] == [(dead, Ping)]
    me.out.clear()
    sent = _dies(me, dead, t0 + 30.0)
    assert dead not in me.table
    _told_its_state(me, sent, dead, kept)
    assert not me._sweeps_owed

    other, _ = _sweeping_node(seed=8)
    stranger = int("9" + "1" * 31, 16)
    seen = other._failure_seen
    other.receive(holder, Departed(stranger, True), t0)
    assert other.out == [] and other._failure_seen == seen and not other._sweeps_owed


def test_a_lone_failure_found_by_a_table_probe_is_told_to_the_table():
    """A node that finds an entry dead after a calm starts the holders' notices; while failures
    go on it does not (the sweeps they owe look at every table)."""
    me, (dead, kept) = _sweeping_node(seed=9)
    t0 = 400.0
    me.set_time(t0)
    me._ping(dead, P_TABLE)
    sent = _dies(me, dead, t0 + 30.0)
    _told_its_state(me, sent, dead, kept)

    me, (dead, kept) = _sweeping_node(seed=9)
    me.set_time(t0 - 10.0)
    me._failure_noticed(me.now, node=int("d" + "1" * 31, 16))
    me.set_time(t0)
    me._ping(dead, P_TABLE)
    sent = _dies(me, dead, t0 + 30.0)
    assert not [m for _, m in sent if isinstance(m, Departed)]


def test_a_sweep_passes_over_an_entry_that_spoke_lately_and_after_the_failures_looks_again():
    """A sweep after a calm probes every entry, even one that just spoke (in a crash of many
    nodes at once it may have died since). One under failures that go on passes over an entry
    that spoke within `sweep_fresh_s`, and leaves it to the next sweep. One in the quiet after
    the failures passes over it too, but probes it `sweep_fresh_s` later unless it spoke
    again."""
    me, (talker, silent) = _sweeping_node(seed=6)
    cfg = me.config
    second = 1.0 + cfg.sweep_max_wait_s  # the sweep after the one at 1 s, failures going on
    last = second + 5.0  # the last failure
    quiet = max(last + cfg.sweep_quiet_s, second + cfg.sweep_min_interval_s)  # the next
    events = [(0.5, _speaks(talker)), (1.0, _failure), (second - 10.0, _speaks(talker)),
              (quiet - 5.0, _speaks(talker))]
    events += [(5.0 + 5 * i, _failure) for i in range(int(last / 5))]
    swept = _swept(me, (talker, silent), quiet + cfg.sweep_fresh_s + 5.0, events)
    assert sorted(p for t, p in swept if t < 5.0) == sorted((talker, silent))
    assert [p for t, p in swept if second <= t < quiet] == [silent]
    assert [p for t, p in swept if quiet <= t < quiet + 5.0] == [silent]
    assert [p for t, p in swept if t >= quiet + 5.0] == [talker]


def test_a_neighbour_that_saw_a_failure_lately_says_so_and_we_sweep_too():
    """A heartbeat carries how long ago its sender saw a failure: a node that heard of none
    (one that joined during a churn, its table copied from others) sweeps its table too; news
    older than `sweep_quiet_s` starts nothing."""
    me, entries = _sweeping_node(seed=7)
    cfg = me.config
    neighbour = me.leaf.left[0]
    old = Heartbeat(me.leaf.members(), int(cfg.sweep_quiet_s))
    assert _swept(me, entries, 100.0, [(1.0, lambda n: n.receive(neighbour, old, n.now))]) == []
    fresh = Heartbeat(me.leaf.members(), 3)
    swept = _swept(me, entries, 200.0, [(101.0, lambda n: n.receive(neighbour, fresh, n.now))])
    assert sorted(p for t, p in swept if t < 102.0) == sorted(entries)
