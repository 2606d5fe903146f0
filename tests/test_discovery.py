"""A joiner finds a node near it before joining (`overlay.discovery`)."""

from __future__ import annotations

import statistics

import pytest

from overlay.config import OverlayConfig
from overlay.discovery import ROW0_ROUNDS, Discovery, ring_size_of
from overlay.ids import RING
from overlay.messages import JoinRequest
from overlay.node import OverlayNode
from simulations import checkers
from simulations.scenarios import ScenarioOptions, make_sim


def test_candidates_that_cannot_be_nearer_are_not_probed() -> None:
    disc = Discovery(seed=1)
    disc.measured(1, 0.010)  # the answering node, 10 ms from us
    nodes = (11, 12, 13, 14, 1)
    rtts = (5_000, 30_000, 12_000, 0, 7_000)  # its round trips to them, microseconds
    # 12: at least 30 - 10 = 20 ms from us, farther than the 10 ms found; 1: probed already.
    assert disc.candidates(nodes, rtts, limit=8) == [14, 13, 11]
    assert disc.candidates(nodes, rtts, limit=8) == []  # each is probed once
    fresh = Discovery(seed=1)
    assert fresh.candidates((11, 12, 13), (), limit=2) == [11, 12]  # no round trips: any


@pytest.mark.parametrize("size", [300, 4096, 100_000])
def test_the_rings_size_is_read_from_a_seeds_leaf_set(size: int) -> None:
    ids = [i * (RING // size) + 12345 for i in range(size)]
    seed = ids[size // 2]
    leaf = tuple(ids[size // 2 - 8:size // 2] + ids[size // 2 + 1:size // 2 + 9])
    assert ring_size_of(seed, leaf, 16) == pytest.approx(size, rel=0.01)
    assert ring_size_of(seed, leaf[:5], 16) == 6  # a leaf set not full holds the whole ring


def test_the_rows_go_from_coarse_to_fine_and_row_0_only_while_it_brings_nearer_nodes() -> None:
    size = 100_000
    ids = [i * (RING // size) for i in range(20)]
    disc = Discovery(seed=ids[10])
    disc.measured(ids[10], 0.050)
    probed = disc.plan(ids[10], tuple(ids[2:10] + ids[11:19]), 16)
    assert len(probed) == 8  # LEAF_PROBES of the seed's 16
    assert disc.rows == [2, 1] + [0] * ROW0_ROUNDS  # 3 rows have a choice at 100,000
    disc.measured(probed[0], 0.020)
    assert [disc.next_row() for _ in range(2)] == [2, 1]
    assert disc.asked == probed[0]
    assert disc.next_row() == 0
    assert disc.next_row() is None  # the row-0 answer brought no nearer node: done
    again = Discovery(seed=1)
    again.rows = [0, 0]
    assert again.next_row() == 0
    again.measured(2, 0.001)
    assert again.next_row() == 0  # a nearer node: its row 0 is asked for too


def _join_targets(monkeypatch: pytest.MonkeyPatch) -> dict[int, int]:
    """Each joiner's first `JoinRequest`'s receiver, recorded as it is sent."""
    targets: dict[int, int] = {}
    send = OverlayNode._send

    def recording(self: OverlayNode, peer: int, msg: object, category: int) -> None:
        if isinstance(msg, JoinRequest) and msg.joiner == self.id:
            targets.setdefault(self.id, peer)
        send(self, peer, msg, category)  # type: ignore[arg-type]

    monkeypatch.setattr(OverlayNode, "_send", recording)
    return targets


def test_a_joiner_with_a_seed_anywhere_joins_through_a_node_near_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sim = make_sim(ScenarioOptions(nodes=0, seed=3))
    sim.form_ring(2000)
    targets = _join_targets(monkeypatch)
    positions = sim.net.positions
    seeds: dict[int, int] = {}
    present: dict[int, list[int]] = {}  # the nodes there when each joiner came
    for _ in range(40):
        seed = sim.random_active()
        nodes = list(sim.nodes)
        joiner = sim.add_node(seeds=(seed,))
        seeds[joiner], present[joiner] = seed, nodes
        sim.run_for(0.2)
    assert sim.run_until(lambda: len(sim.active) == 2040 and checkers.all_ok(sim),
                         timeout=120.0) is not None

    def rank(joiner: int, node: int) -> int:
        here = positions[joiner]
        return sorted(present[joiner], key=lambda n: abs(positions[n] - here)).index(node)

    found = [rank(j, targets[j]) for j in seeds]
    given = [rank(j, s) for j, s in seeds.items()]
    assert statistics.median(given) > 500  # seeds anywhere: the middle of 2,000
    assert statistics.median(found) <= 30, sorted(found)  # among the nearest 1.5%
    assert sum(r < 100 for r in found) >= 30, sorted(found)
    assert sum(r < 100 for r in given) <= 5, sorted(given)


def test_a_seed_that_does_not_answer_is_joined_through_when_discovery_gives_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed unreachable for a while: once the probe of it times out, the join goes to it
    all the same, and is retried as any join."""
    sim = make_sim(ScenarioOptions(nodes=0, seed=5))
    sim.form_ring(100)
    targets = _join_targets(monkeypatch)
    seed = sim.random_active()
    sim.partition([[], [seed]])  # the seed alone on its side: nothing reaches it
    joiner = sim.add_node(seeds=(seed, sim.random_active()))
    sim.run_for(OverlayConfig().discovery_s + 0.5)
    assert targets[joiner] == seed
    sim.heal()
    assert sim.run_until(lambda: joiner in sim.active and checkers.all_ok(sim),
                         timeout=120.0) is not None
