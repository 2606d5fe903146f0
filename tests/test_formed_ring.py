"""A ring formed from the truth (`simulations.formed`): the state a join aims for, at once."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from overlay.ids import digit, shared_prefix_len
from simulations import checkers
from simulations.engine import Simulation
from simulations.nearest import Grid, nearest_of
from simulations.scenarios import ScenarioOptions, build_ring, make_sim, run_lookups


def _formed(nodes: int, seed: int = 1) -> Simulation:
    sim = make_sim(ScenarioOptions(nodes=nodes, seed=seed, formed=True))
    sim.form_ring(nodes)
    return sim


@pytest.mark.parametrize("count", [1, 2, 3, 50, 400, 3000])
def test_the_grid_finds_the_nearest_point(count: int) -> None:
    rng = random.Random(count)
    points = [(complex(rng.random() * 1000, rng.random() * 1000), i) for i in range(count)]
    grid = Grid.of(points, 1000.0)
    for _ in range(300):
        where = complex(rng.random() * 1000, rng.random() * 1000)
        assert grid.nearest(where) == nearest_of(points, where)


@pytest.mark.parametrize("nodes", [1, 2, 9, 17, 600])
def test_a_formed_ring_passes_every_checker_before_any_event(nodes: int) -> None:
    sim = _formed(nodes)
    assert sim.events == 0
    assert len(sim.active) == nodes and all(n.active for n in sim.nodes.values())
    assert checkers.check_leaf_sets(sim).ok
    assert checkers.check_routing_tables(sim).ok
    assert checkers.check_routing(sim, 300).ok


def test_each_table_cell_holds_its_nearest_candidate() -> None:
    sim = _formed(800)
    positions = sim.net.positions
    rng = random.Random(3)
    for owner in rng.sample(sorted(sim.nodes), 40):
        node = sim.nodes[owner]
        cells: dict[tuple[int, int], list[int]] = {}
        for other in sim.nodes:
            if other != owner:
                row = shared_prefix_len(owner, other)
                cells.setdefault((row, digit(other, row)), []).append(other)
        assert len(node.table) == len(cells)  # every cell with a candidate is filled
        for candidates in cells.values():
            best = min(candidates, key=lambda c: (abs(positions[c] - positions[owner]), c))
            assert best in node.table
            # Its round trip is the model's, without jitter.
            assert node.table.rtt_of(best) == pytest.approx(2 * sim.net.base_delay(owner, best))


def test_the_protocol_runs_on_from_a_formed_ring() -> None:
    """Lookups route to their roots; crashes and joins after the forming are repaired as
    after a join; the run is the same for the same seed."""
    digests = []
    for _ in range(2):
        sim = _formed(300, seed=5)
        lookups = run_lookups(sim, 500, rate=500)
        assert lookups["correct_ratio"] == 1.0
        for victim in sim.rng.sample(list(sim.active), 10):
            sim.crash(victim)
        for _ in range(10):
            sim.add_node()
        assert sim.run_until(lambda: len(sim.active) == 300 and checkers.all_ok(sim),  # noqa: B023
                             timeout=120.0, check_every=2.0) is not None
        digests.append(sim.digest())
    assert digests[0] == digests[1]


def test_build_ring_forms_when_asked_and_only_on_an_empty_simulation() -> None:
    opts = ScenarioOptions(nodes=200, seed=2, formed=True)
    sim = make_sim(opts)
    built = build_ring(sim, opts)
    assert built["converged"] and built["join_s"] == 0 and built["join_msgs_per_join"] == 0
    with pytest.raises(ValueError, match="empty simulation"):
        sim.form_ring(10)


def test_joins_into_a_formed_ring_are_measured() -> None:
    """`scripts/bench_join.py`: nodes join a formed ring through the protocol; the ring
    settles and the joins' own messages are counted."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_join.py"
    done = subprocess.run([sys.executable, str(script), "--nodes", "150", "--joins", "15",
                           "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["checks_passed"] is True
    assert result["join_msgs_per_join"] > 10  # a join request, its answers, probes, greetings
