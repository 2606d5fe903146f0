"""Real nodes over loopback TCP in one trio process, through the public API.

Longer than 500 lines: one test per promise of the API (requests, broadcasts, events,
tunnels, limits, errors, shutdown), all on the same local nodes; the promises the cores keep
alone are tested without a network elsewhere."""

import dataclasses
import time

import pytest
import trio
import trio.testing
from conftest import LoopPasses, retry, wait_until

import iris
import iris.testing
from iris.core import MessagingConfig, cluster_group
from overlay.config import OverlayConfig
from overlay.link import frame


class Echo:
    def __init__(self):
        self.broadcasts = []

    async def handle_request(self, data: bytes) -> bytes:
        if data == b"fail":
            raise ValueError("asked to fail")
        return b"echo:" + data

    async def handle_broadcast(self, data: bytes) -> None:
        self.broadcasts.append(data)

    async def handle_tunnel(self, tunnel) -> None:
        try:
            while True:
                await tunnel.send(await tunnel.receive())
        except iris.ClosedError:
            pass


@pytest.fixture(params=["memory", "tcp"])
async def ring(request):
    """Five converged nodes, over in-memory links and over loopback TCP."""
    key = iris.generate_network_key()
    async with iris.testing.local_nodes(5, transport=request.param, network_key=key) as nodes:
        yield key, nodes


@pytest.fixture
async def tcp_ring():
    """Raw sockets talk to these nodes: TCP only."""
    key = iris.generate_network_key()
    async with iris.testing.local_nodes(3, transport="tcp", network_key=key) as nodes:
        yield key, nodes


async def test_a_join_cut_short_leaves_no_membership_and_no_record(ring):
    """`register` and `subscribe` have no timeout of their own: a caller bounds them with a
    cancel scope. Cut short, they leave neither a membership, nor a subscription, nor an
    entry in the node's table of joins in progress; and a join that completes leaves no
    entry either."""
    _, nodes = ring
    node = nodes[1]
    with trio.CancelScope() as scope:
        scope.cancel()
        await node.register("never", Echo())
    with trio.CancelScope() as scope:
        scope.cancel()
        await node.subscribe("never", lambda event: None)
    assert node.status()["clusters"] == [] and node.status()["topics"] == []
    assert not node._joined
    with pytest.raises(iris.NoSuchClusterError):
        await nodes[3].request("never", b"x", timeout=10)
    await node.register("echo", Echo())
    await node.subscribe("news", lambda event: None)
    assert not node._joined


async def test_a_join_made_within_the_call_returns_without_a_loop_pass(monkeypatch):
    """On a one-node ring (and into a tree already in place) a join completes within the
    core's call: `register` and `subscribe` return in the same pass (a relay member's Init is
    answered at once). A cancelled caller, or one whose deadline passed meanwhile, still leaves
    no membership."""
    async with iris.testing.local_nodes(1) as nodes, trio.open_nursery() as nursery:
        node = nodes[0]
        passes = LoopPasses()
        nursery.start_soon(passes.run)
        await trio.lowlevel.checkpoint()
        before = passes.count
        await node.register("solo", Echo())
        await node.register("solo", Echo())  # a second member, into the same tree
        await node.subscribe("solo-news", lambda event: None)
        assert passes.count == before and not node._joined
        with trio.CancelScope() as scope:
            scope.cancel()
            await node.register("never", Echo())
        call = node._runtime.call

        def slow_call(fn):  # the deadline below passes while the core joins
            try:
                return call(fn)
            finally:
                time.sleep(0.01)

        monkeypatch.setattr(node._runtime, "call", slow_call)
        with trio.move_on_after(0.005):
            await node.register("late", Echo())
        monkeypatch.undo()
        assert node.status()["clusters"] == ["solo"] and not node._joined
        assert await node.request("solo", b"x", timeout=10) == b"echo:x"
        nursery.cancel_scope.cancel()


async def test_request_reply_errors_and_unregister(ring):
    _, nodes = ring
    echo = Echo()
    reg = await nodes[1].register("echo", echo)
    assert await nodes[3].request("echo", b"hi", timeout=2) == b"echo:hi"
    with pytest.raises(iris.RemoteError, match="asked to fail"):
        await nodes[2].request("echo", b"fail", timeout=2)
    with pytest.raises(iris.NoSuchClusterError):
        await nodes[2].request("nobody", b"x", timeout=5)
    await reg.unregister()
    await wait_until(lambda: not nodes[1].status()["clusters"])


async def test_requests_are_spread_over_members(ring):
    _, nodes = ring
    served = {}

    class Counter:
        def __init__(self, name):
            self.name = name

        async def handle_request(self, data):
            served[self.name] = served.get(self.name, 0) + 1
            return self.name.encode()

    for i in (1, 2, 3):
        await nodes[i].register("work", Counter(f"n{i}"))  # returns once reachable
    for _ in range(90):
        await nodes[0].request("work", b"", timeout=2)
    assert set(served) == {"n1", "n2", "n3"}


async def test_timeout_when_the_handler_never_answers(ring):
    _, nodes = ring

    class Stuck:
        async def handle_request(self, data):
            await trio.sleep_forever()

    await nodes[4].register("stuck", Stuck())
    with pytest.raises(iris.TimeoutError):
        await nodes[0].request("stuck", b"x", timeout=0.3)


async def test_broadcast_reaches_every_member_once(ring):
    _, nodes = ring
    handlers = [Echo() for _ in range(3)]
    for node, handler in zip(nodes[2:], handlers, strict=True):
        await node.register("bc", handler)
    await nodes[0].broadcast("bc", b"hello all")
    await wait_until(lambda: all(h.broadcasts == [b"hello all"] for h in handlers))


async def test_publish_subscribe_in_order(ring):
    _, nodes = ring
    got = {1: [], 3: []}
    for i in got:
        async def on_event(data, i=i):
            got[i].append(data)
        await nodes[i].subscribe("news", on_event)
    for k in range(50):
        await nodes[4].publish("news", b"%d" % k)
    await wait_until(lambda: all(len(v) == 50 for v in got.values()))
    assert got[1] == got[3] == [b"%d" % k for k in range(50)]
    await nodes[1].unsubscribe("news")


async def test_tunnel_round_trip_and_large_message(ring):
    _, nodes = ring
    await nodes[3].register("tun", Echo())
    async with await nodes[0].tunnel("tun", timeout=2) as tun:
        for k in range(100):
            await tun.send(b"m%d" % k)
        for k in range(100):
            assert await tun.receive() == b"m%d" % k
        big = bytes(range(256)) * 4096 * 3  # 3 MiB: many chunks
        await tun.send(big)
        assert await tun.receive() == big


async def test_a_node_tunnels_to_a_cluster_it_serves_itself(ring):
    """Both ends on one node: the opening is answered by its own member, within the call's
    time, and the data comes back in order."""
    _, nodes = ring
    await nodes[2].register("self", Echo())
    with trio.fail_after(5):
        async with await nodes[2].tunnel("self", timeout=2) as tun:
            for k in range(20):
                await tun.send(b"s%d" % k)
            for k in range(20):
                assert await tun.receive() == b"s%d" % k


async def test_wrong_network_key_cannot_join_and_the_ring_carries_on(ring):
    _, nodes = ring
    await nodes[1].register("echo", Echo())
    with pytest.raises(iris.JoinError):
        async with iris.open_node(network_key=iris.generate_network_key(),
                                  seeds=[nodes[0].address], join_timeout=2,
                                  transport=nodes[0]._runtime.transport):
            pass
    assert await nodes[2].request("echo", b"still", timeout=2) == b"echo:still"


@pytest.mark.parametrize("junk", [
    b"GET / HTTP/1.1\r\n\r\n",               # garbage
    (2**31).to_bytes(4, "big"),               # an oversized frame announced
    frame(b"\x95\x01" + b"\x00" * 40),       # a malformed hello
])
async def test_bad_peers_are_cut_off_and_others_still_served(tcp_ring, junk):
    _, nodes = tcp_ring
    await nodes[1].register("echo", Echo())
    host, port = nodes[0].address
    stream = await trio.open_tcp_stream(host, port)
    await stream.send_all(junk)
    with trio.fail_after(10):  # the node closes the connection
        while await stream.receive_some(65536):
            pass
    await stream.aclose()
    assert await nodes[0].request("echo", b"ok", timeout=2) == b"echo:ok"


async def test_a_stalled_handshake_is_abandoned(tcp_ring):
    _, nodes = tcp_ring
    host, port = nodes[0].address
    stream = await trio.open_tcp_stream(host, port)
    with trio.fail_after(10):  # handshake timeout is 5 s
        while await stream.receive_some(65536):
            pass  # the node's hello arrives, then the close
    await stream.aclose()


def test_parse_address():
    from iris.runtime.node import parse_address

    assert parse_address("10.0.0.1:55") == ("10.0.0.1", 55)
    assert parse_address(("h", 1)) == ("h", 1)
    assert parse_address("[::1]:7") == ("::1", 7)
    with pytest.raises(ValueError):
        parse_address("nocolon")


@pytest.mark.parametrize("field, value, says", [
    ("tree_beat_s", 0.0, "tree_beat_s must be positive"),
    ("graft_retry_s", -1.0, "graft_retry_s must be positive"),
    ("tunnel_window", 0, "tunnel_window must be positive"),
    ("seen_ids", 0, "seen_ids must be positive"),
    ("max_parked", -1, "max_parked must not be negative"),
    ("survey_root_share", 1.5, "survey_root_share must be above 0 and at most 1"),
    ("tunnel_silence_s", 5.0, "tunnel_silence_s must exceed tunnel_keepalive_s"),
])
def test_a_messaging_config_the_core_cannot_run_is_refused_by_name(field, value, says):
    """Handed to `open_node`, such a config would spin a timer in place, pass no tunnel byte or
    deliver duplicates; it is refused where it is made, naming the field."""
    with pytest.raises(ValueError, match=says):
        MessagingConfig(**{field: value})
    # Zero limits and zero waits are choices, not mistakes.
    MessagingConfig(max_tunnels=0, root_settle_s=0.0, replay_s=0.0)


def test_every_field_of_a_messaging_config_is_checked():
    """A field added later is put in one of the checks, or this fails."""
    from iris.core.state import _NOT_NEGATIVE, _POSITIVE

    fields = {f.name for f in dataclasses.fields(MessagingConfig)}
    assert fields == {*_POSITIVE, *_NOT_NEGATIVE, "survey_root_share", "survey_child_share"}


async def test_oversized_messages_are_refused_before_they_leave(ring):
    from iris.core.messages import MAX_PAYLOAD

    _, nodes = ring
    await nodes[1].register("echo", Echo())
    huge = b"h" * (MAX_PAYLOAD + 1)
    with pytest.raises(iris.LimitExceededError, match="tunnel"):
        await nodes[0].request("echo", huge, timeout=2)
    with pytest.raises(iris.LimitExceededError):
        await nodes[0].publish("news", huge)
    assert await nodes[0].request("echo", b"fine", timeout=2) == b"echo:fine"


async def test_a_slow_subscriber_drops_instead_of_growing(ring):
    _, nodes = ring
    release = trio.Event()
    seen = []

    async def slow(data):
        seen.append(data)
        await release.wait()

    await nodes[2].subscribe("firehose", slow, limits=iris.TopicLimits(max_queued_bytes=10_000))
    for _ in range(100):
        await nodes[0].publish("firehose", b"p" * 1000)
    core = nodes[2]._runtime.core
    await wait_until(lambda: core.counters.get("events_dropped", 0) >= 80)
    release.set()
    assert core.counters["events_dropped"] + len(seen) <= 100
    assert core.topics[next(iter(core.topics))].queued_bytes <= 10_000


async def test_a_slow_broadcast_handler_drops_instead_of_growing(ring):
    """Broadcasts beyond the handlers' slots wait in a bounded queue; beyond it they are
    dropped and counted (before, each became a handler job and a flood grew without limit)."""
    _, nodes = ring
    release = trio.Event()
    running = most = 0
    handled = []

    class Slow:
        async def handle_broadcast(self, data):
            nonlocal running, most
            running += 1
            most = max(most, running)
            await release.wait()
            handled.append(data)
            running -= 1

    limits = iris.ServiceLimits(max_broadcast_concurrency=2,
                                max_queued_broadcast_bytes=5 * (100 + 64))
    await nodes[2].register("flood", Slow(), limits=limits)
    for i in range(100):
        await nodes[0].broadcast("flood", b"%03d" % i + b"b" * 97)
    core = nodes[2]._runtime.core
    # The core hands two broadcasts to the worker pool in the same step in which it drops the
    # rest; the handlers start when their worker tasks next run, which can be after the drop
    # counter is complete. So wait for both.
    await wait_until(lambda: core.counters.get("broadcasts_dropped", 0) == 100 - 2 - 5
                     and running == 2)
    with trio.fail_after(10):  # whatever could start a third handler has had its chance
        await trio.testing.wait_all_tasks_blocked()
    assert running == most == 2 and nodes[2]._workers.workers <= 4
    release.set()
    await wait_until(lambda: len(handled) == 7)
    assert most == 2
    assert sorted(d[:3] for d in handled) == [b"%03d" % i for i in range(7)]  # the first 7


@pytest.fixture(params=["memory", "tcp"])
async def patient_ring(request):
    """Five nodes whose hop acknowledgements may take 5 s instead of 0.6 s. All five share
    this process's one thread: a burst of thousands of requests on a loaded machine can hold
    an acknowledgement past 0.6 s, and a walk step that is not acknowledged in time drops
    the member from its parent's tree (the root then answers "no members"). The test below
    is about the member's queue, not failure detection."""
    key = iris.generate_network_key()
    config = OverlayConfig(route_ack_timeout_s=5.0)
    async with iris.testing.local_nodes(5, transport=request.param, network_key=key,
                                        overlay_config=config) as nodes:
        yield key, nodes


async def test_thousands_of_pending_requests_stay_bounded(patient_ring):
    """Thousands of requests to a member whose handler never answers: it holds at most
    `max_concurrency` of them and queues at most `max_queued_bytes`; every other one is
    refused at once instead of waiting for its timeout."""
    _, nodes = patient_ring
    started = []

    class Stuck:
        async def handle_request(self, data):
            started.append(data)
            await trio.sleep_forever()

    limits = iris.ServiceLimits(max_concurrency=4, max_queued_bytes=100)
    await nodes[1].register("stuck", Stuck(), limits=limits)
    outcomes = []

    async def ask():
        try:
            # Far beyond the time a refusal takes even on a loaded machine: every outcome
            # below is the member's answer, none is a timeout.
            await nodes[0].request("stuck", b"x" * 10, timeout=60)
        except iris.IrisError as exc:
            outcomes.append(type(exc).__name__)

    async with trio.open_nursery() as nursery:
        # The whole way (requester, tree, member, handler) works before the burst.
        nursery.start_soon(ask)
        await wait_until(lambda: started)
        for _ in range(1999):
            nursery.start_soon(ask)
        # 4 handed to the handler (the first one included), one queued (10 bytes + the
        # 64-byte ENTRY_COST fit in 100, two do not), the other 1995 refused.
        with trio.fail_after(30):
            await wait_until(lambda: len(outcomes) == 1995)
        assert outcomes == ["LimitExceededError"] * 1995
        with trio.fail_after(10):  # nothing else is handed over or answered
            await trio.testing.wait_all_tasks_blocked()
        assert len(started) == 4 and len(outcomes) == 1995  # the other 5 are still waiting
        nursery.cancel_scope.cancel()


async def test_tunnel_closed_by_the_member_delivers_its_data_first(ring):
    _, nodes = ring

    class Farewell:
        async def handle_tunnel(self, tunnel):
            for k in range(5):
                await tunnel.send(b"last %d" % k)
            await tunnel.close()

    await nodes[2].register("bye", Farewell())
    tun = await nodes[0].tunnel("bye", timeout=2)
    got = [await tun.receive() for _ in range(5)]
    assert got == [b"last %d" % k for k in range(5)]
    with pytest.raises(iris.ClosedError):
        await tun.receive()


async def test_a_tunnel_that_does_not_open_raises_what_its_close_code_says():
    """The core's close code decides the error, not its text: no members ->
    NoSuchClusterError (on every node, the cluster's root too, which learns it within its own
    call), the tunnel limit -> LimitExceededError (also within the call), nobody accepting in
    time -> TimeoutError. No tunnel is left behind."""
    settled = MessagingConfig(root_settle_s=0.0)  # roots answer at once
    async with iris.testing.local_nodes(3, messaging_config=settled) as nodes:
        group = cluster_group("nobody")
        assert any(node._runtime.node.is_root(group) for node in nodes)
        with trio.fail_after(10):
            for node in nodes:
                with pytest.raises(iris.NoSuchClusterError, match="no members"):
                    await node.tunnel("nobody", timeout=5)
        assert not any(node._tunnels or node._opening for node in nodes)
    full = MessagingConfig(max_tunnels=0)
    async with iris.testing.local_nodes(2, messaging_config=full) as nodes:
        with trio.fail_after(10), pytest.raises(iris.LimitExceededError, match="too many"):
            await nodes[0].tunnel("any", timeout=5)
    # Roots keep parking openings to unknown clusters for a minute: nobody answers in time.
    parking = MessagingConfig(root_settle_s=60.0, root_settle_after_failure_s=60.0)
    async with iris.testing.local_nodes(2, messaging_config=parking) as nodes:
        with trio.fail_after(10), pytest.raises(iris.TimeoutError, match="timed out"):
            await nodes[0].tunnel("nobody", timeout=0.3)
        assert not nodes[0]._tunnels and not nodes[0].status()["tunnels"]


async def test_leaving_fails_pending_requests_with_a_clear_error():
    key = iris.generate_network_key()
    async with iris.testing.local_nodes(2, network_key=key) as nodes:

        class Stuck:
            async def handle_request(self, data):
                await trio.sleep_forever()

        await nodes[1].register("stuck", Stuck())
        errors = []
        async with trio.open_nursery() as nursery:
            async def ask():
                try:
                    await nodes[0].request("stuck", b"x", timeout=60)
                except iris.IrisError as exc:
                    errors.append(exc)

            nursery.start_soon(ask)
            await wait_until(lambda: nodes[0]._waiting)
            await nodes[0]._shutdown()
        assert len(errors) == 1 and isinstance(errors[0], iris.ClosedError)
        with pytest.raises(iris.ClosedError):
            await nodes[0].request("stuck", b"y", timeout=1)


async def test_leaving_closes_the_nodes_tunnels_and_openings():
    """A task waiting in a tunnel's `receive`, or in `tunnel` for one to open, outside the
    node's own tasks, hears ClosedError when the node closes (it hung before)."""
    async with iris.testing.local_nodes(2) as nodes:

        class Silent:
            async def handle_tunnel(self, tunnel):
                await trio.sleep_forever()

        await nodes[1].register("silent", Silent())
        tunnel = await nodes[0].tunnel("silent", timeout=5)
        errors = []

        async def receive():
            with pytest.raises(iris.ClosedError, match="node closed"):
                await tunnel.receive()
            errors.append("receive")

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                await trio.testing.wait_all_tasks_blocked()
                await nodes[0]._shutdown()
        assert errors == ["receive"]


async def test_subscribing_again_replaces_the_handler(ring):
    """A second `subscribe` to a topic returns (it hung, waiting for a join the core had no
    reason to start) and events go to the new handler only."""
    _, nodes = ring
    first, second = [], []

    async def to_first(data):
        first.append(data)

    async def to_second(data):
        second.append(data)

    with trio.fail_after(20):
        await nodes[1].subscribe("again", to_first)
        await nodes[1].subscribe("again", to_second)
        await nodes[4].publish("again", b"e")
        await wait_until(lambda: second == [b"e"])
    assert first == []
    await nodes[1].unsubscribe("again")


async def test_handlers_that_raise_do_not_take_the_node_down(ring):
    """A broadcast, event or tunnel handler that raises is logged and counted; the node goes
    on serving (before, the exception escaped into the node's nursery and stopped it)."""
    _, nodes = ring

    class Faulty:
        async def handle_request(self, data):
            return b"still here"

        async def handle_broadcast(self, data):
            raise RuntimeError("bad broadcast")

        async def handle_tunnel(self, tunnel):
            await tunnel.receive()
            raise RuntimeError("bad tunnel")

    async def bad_event(data):
        raise RuntimeError("bad event")

    await nodes[2].register("faulty", Faulty())
    await nodes[2].subscribe("faulty-news", bad_event)
    await nodes[0].broadcast("faulty", b"x")
    await nodes[0].publish("faulty-news", b"x")
    async with await nodes[0].tunnel("faulty", timeout=2) as tun:
        await tun.send(b"x")
        with pytest.raises(iris.ClosedError):
            await tun.receive()
    names = ("broadcast_handler_errors", "event_handler_errors", "tunnel_handler_errors")
    await wait_until(lambda: all(nodes[2].status()["counters"].get(n) == 1 for n in names))
    assert await nodes[0].request("faulty", b"?", timeout=2) == b"still here"


async def test_plain_function_handlers_and_callback_requests(ring):
    """The forms for integrations that pass messages on: `accept_request` (answered at once,
    later, or by raising), `accept_broadcast`, `accept_event`, and `start_request`."""
    _, nodes = ring
    held = []

    class PassOn:
        def __init__(self):
            self.broadcasts = []

        def accept_request(self, data, responder):
            if data == b"now":
                responder.reply(b"answered at once")
            elif data == b"raise":
                raise ValueError("refused in accept_request")
            else:
                held.append(responder)

        def accept_broadcast(self, data):
            self.broadcasts.append(data)

    class Events:
        def __init__(self):
            self.events = []

        def accept_event(self, data):
            self.events.append(data)

    handler, events = PassOn(), Events()
    await nodes[1].register("pass", handler)
    await nodes[2].subscribe("news", events)
    assert await nodes[0].request("pass", b"now", timeout=5) == b"answered at once"
    # Asked on the member's own node, the answer comes before `request` has returned its id.
    assert await nodes[1].request("pass", b"now", timeout=5) == b"answered at once"
    with pytest.raises(iris.RemoteError, match="refused in accept_request"):
        await nodes[0].request("pass", b"raise", timeout=5)
    outcomes = []
    def record(reply, error):
        outcomes.append((reply, error))

    nodes[0].start_request("pass", b"later", 5, record)
    await wait_until(lambda: held)
    held[0].reply(b"answered later")
    held[0].reply(b"a second answer is ignored")
    await wait_until(lambda: outcomes)
    assert outcomes == [(b"answered later", None)]
    nodes[0].start_request("nobody-here", b"?", 0.5, record)
    await wait_until(lambda: len(outcomes) == 2)
    assert outcomes[1][0] is None and isinstance(outcomes[1][1], iris.IrisError)
    await nodes[3].broadcast("pass", b"to all")
    await wait_until(lambda: handler.broadcasts == [b"to all"])
    for i in range(5):
        await nodes[4].publish("news", b"%d" % i)
    await wait_until(lambda: events.events == [b"0", b"1", b"2", b"3", b"4"])


async def test_a_fault_handling_one_peers_input_closes_that_link_not_the_node(ring):
    _, nodes = ring
    await nodes[1].register("echo", Echo())
    runtime = nodes[1]._runtime
    deliver = runtime._deliver
    faults = []

    def faulty(link, sealed, clock_now):
        if not faults:
            faults.append(link.peer)
            raise RuntimeError("a fault in the protocol code")
        deliver(link, sealed, clock_now)

    runtime._deliver = faulty
    # The link that carried the fault closes; requests go on over a new one.
    with trio.fail_after(30):
        await retry(lambda: nodes[0].request("echo", b"still", timeout=2),
                    accept=lambda reply: reply == b"echo:still", errors=(iris.IrisError,))
    assert faults and runtime.counters.get("links_closed_for_internal_error") == 1


async def test_a_handler_may_forward_a_request_from_within_its_call(ring):
    """A plain `accept_request` that passes the request on with `start_request` (a proxy):
    asked on its own node, every step happens inside the first `start_request` call."""
    _, nodes = ring
    node = nodes[1]

    class Back:
        def accept_request(self, data, responder):
            responder.reply(b"back:" + data)

    class Front:
        def accept_request(self, data, responder):
            def answered(reply, error):
                if error is None:
                    responder.reply(b"front:" + reply)
                else:
                    responder.fail(str(error))

            node.start_request("back", data, 5, answered)

    await node.register("back", Back())
    await node.register("front", Front())
    with trio.fail_after(10):
        assert await node.request("front", b"x", timeout=5) == b"front:back:x"
        assert await nodes[0].request("front", b"y", timeout=5) == b"front:back:y"
