"""Request deadlines end to end: the caller's deadline travels with the request, a member never
starts a request its caller has given up on, and a handler can read the time it has left."""

import trio
from conftest import wait_until

import iris
import iris.testing
from iris.core import cluster_group
from iris.core.messages import Request
from iris.core.requests import milliseconds
from overlay.wire import decode, encode


def test_the_time_left_travels_in_the_request():
    request = Request(1 << 100, 7, 1 << 90, 0, b"q", milliseconds(2.5))
    assert decode(encode(request)) == request and request.time_left_ms == 2500
    assert milliseconds(-1) == 0 and milliseconds(1e12) == 2**32 - 1


async def test_a_request_that_waited_past_its_deadline_is_never_started():
    """One handler slot, held by a first request; a second one with a short timeout waits in
    the member's queue until its caller gives up. When the slot frees, the second is dropped
    unstarted, and a third, still in time, runs."""
    started, release = [], trio.Event()

    class Slow:
        async def handle_request(self, data):
            started.append((data, iris.time_left()))
            if data == b"first":
                await release.wait()
            return data

    async with iris.testing.local_nodes(2) as (member, caller):
        limits = iris.ServiceLimits(max_concurrency=1)
        await member.register("slow", Slow(), limits=limits)
        outcomes = {}

        async def ask(name, patience):
            try:
                outcomes[name] = await caller.request("slow", name, timeout=patience)
            except iris.TimeoutError:
                outcomes[name] = "timed out"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, b"first", 30)
            await wait_until(lambda: started)
            nursery.start_soon(ask, b"late", 0.3)
            await wait_until(lambda: b"late" in outcomes)  # its caller gave up
            nursery.start_soon(ask, b"third", 30)
            queue = member._runtime.core.state.services[cluster_group("slow")].requests.queue
            await wait_until(lambda: len(queue) == 2)  # "late" (expired) and "third" wait
            release.set()
        assert outcomes == {b"first": b"first", b"late": "timed out", b"third": b"third"}
        assert [data for data, _ in started] == [b"first", b"third"]
        assert member._runtime.core.state.counters["requests_expired"] == 1
        assert 0 < started[0][1] <= 30 and 0 < started[1][1] <= 30  # what the handlers read


async def test_time_left_outside_a_request_handler_is_infinite():
    assert iris.time_left() == float("inf")


async def test_a_request_that_piled_up_while_the_process_was_frozen_is_not_started():
    """A frozen process (SIGSTOP, a paused VM) finds the frames that arrived meanwhile when it
    thaws; they must not look fresh. Here the whole test process freezes for 2 s right after a
    request with 0.5 s to live is queued: when the member reads it after the thaw, its caller
    has long given up, and the handler never runs it."""
    import time

    ran = []

    class Echo:
        async def handle_request(self, data):
            ran.append(data)
            return data

    async with iris.testing.local_nodes(2) as (member, caller):
        await member.register("svc", Echo())
        assert await caller.request("svc", b"warm", timeout=10) == b"warm"
        outcome = []
        caller.start_request("svc", b"stale", 0.5, lambda reply, error: outcome.append(error))
        time.sleep(2.0)  # noqa: ASYNC251 - the freeze under test: nothing runs meanwhile
        await wait_until(lambda: outcome)
        assert isinstance(outcome[0], iris.TimeoutError)
        await wait_until(lambda: member._runtime.core.state.counters.get("requests_expired"))
        assert ran == [b"warm"] and member._runtime.counters["freezes"] >= 1
