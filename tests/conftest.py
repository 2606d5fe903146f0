"""Shared fixtures and helpers.

Small converged rings are built here. Tests that involve time wait for the condition they need
with a deadline (`wait_until`, `retry`), never for a fixed time: a loaded machine only makes
them slower, not wrong.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from simulations.scenarios import ScenarioOptions, build_ring, make_sim

POLL_S = 0.005  # how often a condition is looked at again: short next to any deadline here
WAIT_LIMIT_S = 10.0  # how long a wait may take when the caller sets no deadline of its own


def _limit() -> float:
    """The caller's deadline when it set one (`with trio.fail_after(s):` around the wait),
    else WAIT_LIMIT_S: no wait in a test can hang."""
    return WAIT_LIMIT_S if trio.current_effective_deadline() == math.inf else math.inf


async def wait_until(predicate: Callable[[], Any], poll: float = POLL_S) -> None:
    """Return as soon as `predicate()` holds; raise trio.TooSlowError at the deadline. For
    state that changes outside this task (other tasks, sockets, other processes) where no
    event announces the change, so it is looked at again every `poll` seconds."""
    with trio.fail_after(_limit()):
        while not predicate():  # noqa: ASYNC110 - nothing to wait on: see above
            await trio.sleep(poll)


async def retry(attempt: Callable[[], Awaitable[Any]], *,
                accept: Callable[[Any], bool] = lambda result: True,
                errors: tuple[type[BaseException], ...] = (), pause: float = 0.05) -> Any:
    """Await `attempt()` until it returns a result `accept` takes (an exception in `errors`
    counts as "not yet") and return that result; raise trio.TooSlowError at the deadline.
    For readiness that only another try can reveal: a process that starts listening, a
    member that becomes reachable. `pause` spaces the tries so they do not flood what they
    ask."""
    with trio.fail_after(_limit()):
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
