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


def test_a_hop_that_was_not_acknowledged_costs_the_request_its_wait():
    """A routed step re-sent another way after its acknowledgement timed out goes on with
    less time left by the wait; one whose time ran out meanwhile goes no further."""
    from simulations.messaging import MessagingOptions, make_messaging_sim, setup_groups
    from simulations.messaging_workload import core_of
    from simulations.scenarios import build_ring

    opts = MessagingOptions(nodes=30, seed=7)
    sim, work = make_messaging_sim(opts)
    assert build_ring(sim, opts)["converged"]
    setup_groups(sim, work, opts)
    core = core_of(sim.nodes[sim.random_active()])
    request = Request(cluster_group("c0"), 1, core.node.id, 2, b"q", 1500)
    aged = core.aged(request, 0.6)
    assert aged.time_left_ms == 900 and aged.hops == 2 and aged.payload == b"q"
    assert core.aged(request, 1.5) is None
    assert core.counters["requests_expired"] == 1


def test_a_request_that_arrived_late_is_forwarded_with_less_time_left():
    """A node on the route that is not in the cluster's tree passes the request on less the
    age it arrived with (a frozen process's backlog, a late record of a link); one whose time
    ran out goes no further."""
    from simulations.messaging import MessagingOptions, make_messaging_sim, setup_groups
    from simulations.messaging_workload import core_of
    from simulations.scenarios import build_ring

    opts = MessagingOptions(nodes=30, seed=7)
    sim, work = make_messaging_sim(opts)
    assert build_ring(sim, opts)["converged"]
    setup_groups(sim, work, opts)
    group = cluster_group("c0")
    core = next(core for core in map(core_of, sim.nodes.values())
                if group not in core.state.trees)
    request = Request(group, 1, core.node.id, 2, b"q", 1500)
    assert core.forward(group, request, 1) is request  # on time: passed on as it is
    core.state.arrival_age = 0.6
    forwarded = core.forward(group, request, 1)
    assert forwarded.time_left_ms == 900 and forwarded.hops == 2
    core.state.arrival_age = 1.5
    assert core.forward(group, request, 1) is None
    assert core.counters["requests_expired"] == 1


def test_the_overlay_tells_the_app_how_long_an_unacknowledged_hop_waited():
    from overlay.app import OverlayApp
    from overlay.messages import Lookup
    from simulations.engine import Simulation

    class Noting(OverlayApp):
        def __init__(self, sim, node):
            self.sim, self.node_id, self.waits = sim, node.id, []

        def activated(self):
            self.sim.mark_active(self.node_id)

        def aged(self, payload, seconds):
            self.waits.append(seconds)
            return payload

    sim = Simulation(3, app_factory=Noting)
    a = sim.add_node()
    b = sim.add_node(seeds=(a,))
    assert sim.run_until(lambda: len(sim.active) == 2, timeout=30) is not None
    sim.crash(b)
    sim.call(a, lambda node: node.send_acked(b, Lookup(a, 1), sim.now))
    sim.run_for(3.0)
    (waited,) = sim.nodes[a].app.waits
    assert waited >= sim.config.route_ack_timeout_s


async def test_a_thaw_is_reported_once_to_the_timers():
    """The driver lets its readers take what piled up before the overdue timers run, once per
    freeze: a gap in the ticks is a freeze, later calls and a short gap are not."""
    from iris.runtime.freezes import FreezeWatch

    watch = FreezeWatch()
    start = trio.current_time()
    assert not watch.thawing(start + 0.2)  # a tick's gap: no freeze
    assert watch.thawing(start + 5.0)  # nearly 5 s without a tick: frozen, now thawed
    assert not watch.thawing(start + 5.05)  # the same thaw, said once
    assert not watch.thawing(start + 5.3)
