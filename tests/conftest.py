"""Shared fixtures and helpers.

Small converged rings are built here. Tests that involve time wait for the condition they need
with a deadline (`wait_until`, `retry`), never for a fixed time: a loaded machine only makes
them slower, not wrong.
"""

from __future__ import annotations

import pytest

from iris.testing import retry, wait_until
from simulations.scenarios import ScenarioOptions, build_ring, make_sim

__all__ = ["converged_ring", "retry", "wait_until"]  # retry, wait_until: iris.testing's


def converged_ring(nodes: int, seed: int = 1, **options):
    opts = ScenarioOptions(nodes=nodes, seed=seed, **options)
    sim = make_sim(opts)
    info = build_ring(sim, opts)
    assert info["converged"], "the ring did not converge"
    return sim


@pytest.fixture
def ring300():
    return converged_ring(300, seed=7)
