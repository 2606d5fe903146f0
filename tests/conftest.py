"""Shared fixtures and helpers.

Small converged rings are built here. Tests that involve time wait for the condition they need
with a deadline (`wait_until`, `retry`), never for a fixed time: a loaded machine only makes
them slower, not wrong.
"""

from __future__ import annotations

import pytest
import trio

from iris.testing import retry, wait_until
from simulations.scenarios import ScenarioOptions, build_ring, make_sim

# retry, wait_until: iris.testing's, named here for the tests
__all__ = ["LoopPasses", "converged_ring", "retry", "shuttle", "wait_until"]


def converged_ring(nodes: int, seed: int = 1, **options):
    opts = ScenarioOptions(nodes=nodes, seed=seed, **options)
    sim = make_sim(opts)
    info = build_ring(sim, opts)
    assert info["converged"], "the ring did not converge"
    return sim


def shuttle(nodes, now, drop=lambda src, dest, msg: False, rounds=100):
    """Overlay cores driven by hand (no simulator): deliver every queued message instantly,
    unless `drop` says it is lost, until no node has anything to send (or `rounds` passes)."""
    for _ in range(rounds):
        moved = False
        for node in list(nodes.values()):
            out, node.out = node.out, []
            for dest, msg in out:
                moved = True
                if dest in nodes and not drop(node.id, dest, msg):
                    nodes[dest].receive(node.id, msg, now)
        if not moved:
            return


class LoopPasses:
    """Counts the passes of trio's scheduler (`run`, started as a task, takes one each): how
    a test sees whether some code let other tasks run, or took no pass at all."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        while True:
            self.count += 1
            await trio.lowlevel.checkpoint()


@pytest.fixture
def ring300():
    return converged_ring(300, seed=7)
