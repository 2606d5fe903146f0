"""Proximity neighbour selection: which rows have a choice, how a table probe carries a row
and its round trips, and that tables get nearer over time in a simulated ring."""

import random

from overlay.ids import RING, shared_prefix_len
from overlay.messages import MAX_RTT_US, Ping, Pong, RowReply
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
    assert me.out[-1][1] == Pong(10, True, None)  # not asked: no row


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
