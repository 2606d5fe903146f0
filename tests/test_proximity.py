"""Proximity neighbour selection: which rows have a choice, how a table probe carries a row
and its round trips, and that tables get nearer over time in a simulated ring."""

import random

from overlay.config import OverlayConfig
from overlay.ids import RING, shared_prefix_len
from overlay.messages import MAX_RTT_US, Hello, JoinReply, Ping, Pong, RowReply
from overlay.node import OverlayNode
from overlay.proximity import estimated_size, rows_with_choice
from overlay.routing_table import RoutingTable
from tests.conftest import converged_ring


def test_ring_size_is_estimated_from_the_leaf_set_span():
    assert estimated_size(5, 0, complete=False) == 6.0  # the leaf set holds the whole ring
    assert estimated_size(16, RING // 100, complete=True) == 1600.0


def test_only_rows_with_several_candidates_per_cell_are_searched():
    assert rows_with_choice(20, 32) == 0
    assert rows_with_choice(1000, 32) == 2  # 62 candidates per cell in row 0, 3.9 in row 1
    assert rows_with_choice(100_000, 32) == 3
    assert rows_with_choice(1000, 1) == 1  # never beyond the rows the table has


def started_node(seed: int) -> OverlayNode:
    """A node with id aaaa..., started alone at time 0."""
    me = OverlayNode(int("a" * 32, 16), random.Random(seed))
    me.start(0.0)
    return me


def test_a_table_probe_answer_carries_the_row_and_its_round_trips():
    me = started_node(seed=3)
    entry = int("b" + "1" * 31, 16)
    me.table.consider(entry, rtt=0.0123)
    me.receive(entry, Ping(9, False, True, want_row=1), 1.0)
    dest, pong = me.out[-1]
    assert dest == entry and isinstance(pong, Pong)
    # microseconds, rounded up, of the round trip as the table keeps it (single precision:
    # 0.0123 is kept as 0.012299999...)
    assert pong.row == (entry,) and pong.rtts == (12300,)
    me.out.clear()
    me.receive(entry, Ping(10, False, True), 1.0)
    # not asked: no row; its cell holds itself at 12.3 ms, which its greeting must beat
    assert me.out[-1][1] == Pong(10, True, None, cell_us=12300)


def test_an_answer_says_what_a_greeting_would_have_to_beat():
    me = started_node(seed=5)
    near = int("b" + "1" * 31, 16)
    me.table.consider(near, rtt=0.004)
    rival = int("b" + "2" * 31, 16)  # same cell as `near`
    me.receive(rival, Ping(1, False, True), 1.0)
    assert me.out[-1][1].cell_us == 4001  # our entry for its cell is 4 ms away
    stranger = int("c" + "3" * 31, 16)  # a cell we have not filled: we took it, unmeasured
    me.receive(stranger, Ping(2, False, True), 1.0)
    assert me.out[-1][1].cell_us == 0
    neighbour = int("a" * 31 + "b", 16)  # belongs in our leaf set: always worth a greeting
    me.receive(neighbour, Ping(3, False, True), 1.0)
    assert me.out[-1][1].cell_us == 0


def test_a_node_greets_a_new_entry_only_when_it_would_win_the_entrys_cell():
    me = started_node(seed=6)
    far, near = int("b" + "1" * 31, 16), int("c" + "1" * 31, 16)
    for peer, cell_us in ((far, 2001), (near, 9001)):
        me.set_time(1.0)
        me._ping(peer, purpose=0)
        seq = me.out[-1][1].seq
        me.out.clear()
        # 5 ms round trip: `far` holds a node 2 ms away for our cell, `near` one 9 ms away
        me.receive(peer, Pong(seq, True, None, cell_us=cell_us), 1.005)
        assert me.table.rtt_of(peer) < 0.0051  # taken either way
        hellos = [dest for dest, msg in me.out if isinstance(msg, Hello)]
        assert hellos == ([] if peer == far else [near])


def test_a_reply_whose_lists_differ_in_length_is_taken_without_round_trips():
    me = started_node(seed=4)
    peer = int("b" + "1" * 31, 16)
    me.table.consider(peer, rtt=0.010)
    candidate = int("b" + "2" * 31, 16)  # competes with `peer` for its cell
    empty = int("c" + "3" * 31, 16)  # a cell we have not filled
    me._prox_asked = {peer: ((0, 1, 0, 16), 1.0)}
    me.receive(peer, RowReply(0, (candidate, empty), (MAX_RTT_US,)), 1.0)
    probed = {dest for dest, msg in me.out if isinstance(msg, Ping)}
    assert probed == {empty}  # no round trips to go by: only the empty cell is worth a probe


def _row0_excess(sim) -> float:
    """Total delay of every node's row-0 entries over the nearest possible ones."""
    net, ids = sim.net, list(sim.active)
    total = best = 0.0
    for n in ids:
        table = sim.nodes[n].table
        optimal = RoutingTable(n)
        for other in ids:
            if other != n and shared_prefix_len(n, other) == 0:
                optimal.consider(other, net.base_delay(n, other))
        for row, col, entry in table.filled():
            if row == 0 and optimal.get(0, col) is not None:
                total += net.base_delay(n, entry)
                best += net.base_delay(n, optimal.get(0, col))  # type: ignore[arg-type]
    return total / best


def test_periodic_maintenance_brings_nearer_nodes_into_the_tables():
    sim = converged_ring(300, seed=5)
    before = _row0_excess(sim)
    sim.run_for(300.0)
    after = _row0_excess(sim)
    assert after < before


def test_a_joiner_greets_its_leaf_set_and_only_the_entries_that_would_take_it():
    cfg = OverlayConfig(leaf_size=2, discovery_s=0.0)  # (the join goes to its seed at once)
    me = OverlayNode(int("a" * 32, 16), random.Random(7), cfg)
    right, left = int("a" * 31 + "b", 16), int("a" * 31 + "9", 16)
    entry = int("b" + "1" * 31, 16)  # a row-0 candidate, outside our one-a-side leaf set
    me.start(0.0, seeds=[right])
    me.out.clear()
    me.receive(right, JoinReply((entry, right), (left,)), 0.01)
    pings = [(dest, msg) for dest, msg in me.out if isinstance(msg, Ping)]
    assert {dest for dest, _ in pings} == {right, left, entry}
    me.out.clear()
    pings.sort(key=lambda p: p[0] != entry)  # the candidate answers before the leaf set
    for dest, ping in pings:
        # Every answer says its cell for us holds a node 0 us away: no greeting would win it.
        leaf = (left,) if dest == right else (right,) if dest == left else None
        me.receive(dest, Pong(ping.seq, True, leaf if ping.want_leaf else None, cell_us=1),
                   0.02)
    assert me.active and entry in me.table
    greeted = {dest for dest, msg in me.out if isinstance(msg, Hello)}
    assert greeted == {right, left}  # the leaf set must take us whatever the round trip
