"""Shared fixtures: small converged rings, built once per module where tests only read them."""

from __future__ import annotations

import pytest

from simulations.scenarios import ScenarioOptions, build_ring, make_sim


def converged_ring(nodes: int, seed: int = 1, **options):
    opts = ScenarioOptions(nodes=nodes, seed=seed, **options)
    sim = make_sim(opts)
    info = build_ring(sim, opts)
    assert info["converged"], "the ring did not converge"
    return sim


@pytest.fixture
def ring300():
    return converged_ring(300, seed=7)
