"""Shared fixtures and helpers.

Small converged rings are built here. Tests that involve time wait for the condition they need
with a deadline (`wait_until`, `retry`), never for a fixed time: a loaded machine only makes
them slower, not wrong.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from iris.testing import WAIT_LIMIT_S, default_limit, wait_until
from simulations.scenarios import ScenarioOptions, build_ring, make_sim

__all__ = ["converged_ring", "retry", "wait_until"]  # wait_until: iris.testing's


async def retry(attempt: Callable[[], Awaitable[Any]], *,
                accept: Callable[[Any], bool] = lambda result: True,
                errors: tuple[type[BaseException], ...] = (), pause: float = 0.05) -> Any:
    """Await `attempt()` until it returns a result `accept` takes (an exception in `errors`
    counts as "not yet") and return that result; raise trio.TooSlowError at the deadline.
    For readiness that only another try can reveal: a process that starts listening, a
    member that becomes reachable. `pause` spaces the tries so they do not flood what they
    ask."""
    with trio.fail_after(default_limit(WAIT_LIMIT_S)):
        while True:
            try:
                result = await attempt()
            except errors:
                pass
            else:
                if accept(result):
                    return result
            await trio.sleep(pause)


def converged_ring(nodes: int, seed: int = 1, **options):
    opts = ScenarioOptions(nodes=nodes, seed=seed, **options)
    sim = make_sim(opts)
    info = build_ring(sim, opts)
    assert info["converged"], "the ring did not converge"
    return sim


@pytest.fixture
def ring300():
    return converged_ring(300, seed=7)
