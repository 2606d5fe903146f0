"""Joiners seeded with the nearest active node (`Simulation.near_seeds`, `--near-seeds`), and
the grid that finds it (`simulations.nearest`)."""

from __future__ import annotations

import random

from simulations import checkers
from simulations.nearest import Grid
from simulations.scenarios import ScenarioOptions, make_sim, scenario_churn


def test_the_grid_follows_points_added_and_removed() -> None:
    rng = random.Random(7)
    grid = Grid(1000.0, 16)
    assert grid.nearest(500j) == (float("inf"), -1)
    points: dict[int, complex] = {}
    for step in range(3000):
        if points and rng.random() < 0.4:
            node = rng.choice(sorted(points))
            grid.remove(points.pop(node), node)
        else:
            node = step
            points[node] = complex(rng.random() * 1000, rng.random() * 1000)
            grid.add(points[node], node)
        where = complex(rng.random() * 1000, rng.random() * 1000)
        want = min(((abs(p - where), n) for n, p in points.items()), default=(float("inf"), -1))
        assert grid.nearest(where) == want


def test_each_joiner_is_given_the_nearest_active_node() -> None:
    sim = make_sim(ScenarioOptions(nodes=0, seed=4, near_seeds=True))
    positions = sim.net.positions
    checked = 0
    for i in range(150):
        if i % 10 == 9:
            sim.crash(sim.random_active())  # the grid forgets the dead
        active = list(sim.active)
        node = sim.nodes[sim.add_node()]
        if active:
            here = positions[node.id]
            nearest = min(active, key=lambda a: (abs(positions[a] - here), a))
            assert node._seeds == (nearest,)
            checked += 1
        sim.run_for(0.5)
    assert checked > 100
    assert sim.run_until(lambda: checkers.all_ok(sim), timeout=60.0) is not None


def test_a_ring_joined_through_near_seeds_passes_every_check_under_churn() -> None:
    result = scenario_churn(ScenarioOptions(nodes=150, seed=2, near_seeds=True, churn_s=60.0,
                                            session_s=300.0, lookups=600))
    assert result["near_seeds"] is True
    assert result["replaced"] > 10
    assert result["checks_passed"], result["failed_checks"]
