"""The faults of `iris.testing`'s in-process nodes and in-memory network: what an application's
own chaos tests use. A partition is silent (bytes stall, dials go unanswered); after the heal
the ring is whole again and requests across the former cut are served. A paused node runs
nothing, as a stopped process; resumed, it drops what its callers gave up on. Delay and loss
slow links down, in order, without breaking them."""

from functools import partial

import pytest
import trio
from conftest import retry

import iris
import iris.testing
from iris.core import cluster_group
from iris.runtime.transport import RTO_MIN_S, MemoryNetwork, _connection
from iris.testing import converged, local_nodes, wait_until
from overlay.ids import ring_distance


class Echo:
    async def handle_request(self, data):
        return data


async def served(caller, cluster):
    try:
        return await caller.request(cluster, b"?", timeout=1) == b"?"
    except iris.IrisError:
        return False


@pytest.mark.slow
async def test_a_partition_cuts_requests_across_it_and_the_heal_brings_them_back():
    async with local_nodes(6) as nodes:
        await nodes[4].register("svc", Echo())
        assert await served(nodes[0], "svc")
        nodes.partition(nodes[:3], nodes[3:])
        with trio.fail_after(60):  # each side declares the other failed
            await retry(lambda: served(nodes[0], "svc"), accept=lambda ok: not ok, pause=0.1)
            await wait_until(lambda: all(
                len(n._runtime.node.leaf.members()) == 2 for n in nodes), poll=0.1)
        assert await served(nodes[3], "svc")  # the member's side carries on
        nodes.heal()
        healed_at = trio.current_time()
        with trio.fail_after(60):
            await retry(lambda: served(nodes[0], "svc"), accept=bool, pause=0.1)
            back = trio.current_time() - healed_at
            await wait_until(lambda: converged(nodes), poll=0.1)
        assert back < 30, f"requests served again only {back:.1f} s after the heal"


async def test_faults_need_the_memory_network():
    async with local_nodes(2, transport="tcp") as nodes:
        for fault in (lambda: nodes.partition(nodes[:1], nodes[1:]),
                      lambda: nodes.degrade(delay=1), lambda: nodes.pause(nodes[0])):
            with pytest.raises(RuntimeError, match="memory"):
                fault()


@pytest.mark.slow
async def test_a_crashed_member_is_found_out_and_its_cluster_served_by_the_others():
    async with local_nodes(6) as nodes:
        for member in (nodes[1], nodes[4]):
            await member.register("svc", Echo())
        dead = nodes[4]
        nodes.crash(dead)
        crashed_at = trio.current_time()
        with pytest.raises(iris.ClosedError):
            await dead.request("svc", b"?", timeout=1)
        survivors = [n for n in nodes if n is not dead]
        with trio.fail_after(60):  # no Leave was sent: failure detection finds it
            await wait_until(lambda: all(
                dead.id not in n._runtime.node.leaf.members() for n in survivors), poll=0.1)
            found_out = trio.current_time() - crashed_at
            await wait_until(lambda: converged(survivors), poll=0.1)
            for _ in range(10):
                await retry(lambda: served(nodes[0], "svc"), accept=bool, pause=0.1)
        # Found out by probes, not told: a Leave would have taken it out of every leaf set at
        # once; a probe waits 1 s for its answer, twice.
        assert found_out > 1.0, f"gone from the leaf sets after {found_out:.1f} s"


# ------------------------------------------------------------------ pause and resume
class Recorder:
    """A member that notes each request it starts, with its own name."""

    def __init__(self, name, started):
        self.name, self.started = name, started

    async def handle_request(self, data):
        self.started.append((self.name, data))
        return data


class Halfway:
    """A handler that is halfway through its work (sleeping) when its node is paused."""

    STEP_S = 1.0

    def __init__(self):
        self.entered = trio.Event()
        self.done_at = None

    async def handle_request(self, data):
        self.entered.set()
        await trio.sleep(self.STEP_S)
        self.done_at = trio.current_time()
        return data


def written_out(node):
    """`node` has written everything it queued."""
    return all(not link.queue and link.writing_since is None
               for link in node._runtime.links.values())


def leaf_sets_without(node, nodes):
    return all(node.id not in n._runtime.node.leaf.members() for n in nodes if n is not node)


@pytest.mark.slow
async def test_a_paused_member_runs_nothing_and_after_the_resume_runs_no_request_given_up_on():
    async with local_nodes(4) as nodes:
        # The member that stays is the cluster's root, so that requests reach the cluster
        # while the other is paused (they are walked on from the root, not routed around it).
        group = cluster_group("svc")
        stays, paused = sorted(nodes, key=lambda n: ring_distance(n.id, group))[:2]
        caller = next(n for n in nodes if n not in (stays, paused))
        started = []
        await stays.register("svc", Recorder("stays", started))
        await paused.register("svc", Recorder("paused", started))
        halfway = Halfway()
        await paused.register("slow", halfway)
        async with trio.open_nursery() as nursery:
            slow_reply = []

            async def ask_slow():  # of itself: the reply needs no link that its peers close
                slow_reply.append(await paused.request("slow", b"slow", timeout=30))

            nursery.start_soon(ask_slow)
            await halfway.entered.wait()
            entered_at = trio.current_time()
            await wait_until(lambda: written_out(paused))  # the acknowledgement of the walk
            nodes.pause(paused)                             # step that brought the request
            with pytest.raises(RuntimeError, match="paused"):
                await paused.request("svc", b"?", timeout=1)  # its application is stopped too

            # Sent at once, about half the requests are walked to the paused member; their
            # steps go unacknowledged and are walked again, to the other member.
            timeout, sent_at = 2.0, trio.current_time()
            payloads = [b"%d" % i for i in range(20)]
            replies = {}

            async def ask(payload):
                replies[payload] = await caller.request("svc", payload, timeout=timeout)

            async with trio.open_nursery() as requests:
                for payload in payloads:
                    requests.start_soon(ask, payload)
            assert replies == {p: p for p in payloads}  # its peers go on without it
            assert sorted(started) == sorted(("stays", p) for p in payloads)
            with trio.fail_after(30):  # and declare it failed
                await wait_until(lambda: leaf_sets_without(paused, nodes), poll=0.1)
            # The pause lasts until the requests' callers have given up, and past the end of
            # the halfway handler's sleep, which it must not have noticed.
            await trio.sleep_until(max(sent_at + timeout, entered_at + Halfway.STEP_S))
            assert halfway.done_at is None, "a handler of the paused node went on"
            nodes.resume(paused)
            resumed_at = trio.current_time()
        assert slow_reply == [b"slow"] and halfway.done_at >= resumed_at

        with trio.fail_after(30):  # back in every leaf set (its backlog was read first)
            await wait_until(lambda: converged(nodes), poll=0.1)
        assert paused.status()["counters"]["freezes"] >= 1  # the runtime saw the freeze
        # The requests that waited for it were dropped unstarted: each ran once, elsewhere.
        assert paused._runtime.core.counters.get("requests_expired", 0) > 0
        assert sorted(started) == sorted(("stays", p) for p in payloads)
        # Fresh requests are not mistaken for old ones: it serves again.
        fresh = iter(range(1000))
        with trio.fail_after(30):
            await retry(lambda: caller.request("svc", b"fresh %d" % next(fresh), timeout=2),
                        accept=lambda _: any(name == "paused" for name, _ in started),
                        errors=(iris.IrisError,), pause=0.01)


@pytest.mark.slow
async def test_a_backlog_longer_than_one_read_is_old_to_its_last_byte():
    """Requests queued on a paused member's link behind more than one read's worth of events
    are as old as the pause too: none runs after the resume (their callers gave up)."""
    ran, events = [], []

    class Noting:
        async def handle_request(self, data):
            ran.append(data)
            return data

    async def note(event):
        events.append(event)

    async with local_nodes(2) as nodes:
        member, caller = nodes
        await member.register("svc", Noting())
        await member.subscribe("news", note)
        with trio.fail_after(10):
            await retry(lambda: caller.request("svc", b"warm", timeout=1),
                        errors=(iris.IrisError,))
            await retry(lambda: caller.publish("news", b"warm"),
                        accept=lambda _: bool(events), pause=0.1)
        ran.clear()
        events.clear()
        nodes.pause(member)
        paused_at = trio.current_time()
        for i in range(150):  # 150 KiB ahead of the requests on the caller's link
            await caller.publish("news", b"%4d" % i + b"e" * 1020)
        for i in range(5):
            with pytest.raises(iris.IrisError):
                await caller.request("svc", b"late %d" % i, timeout=0.3)
        await trio.sleep_until(paused_at + 2.0)  # a freeze, as the member's watch counts one
        nodes.resume(member)
        with trio.fail_after(10):
            await wait_until(lambda: sum(e != b"warm" for e in events) == 150)
            # A fresh request is served after the backlog, once the member is back in the tree.
            await retry(lambda: caller.request("svc", b"fresh", timeout=1),
                        errors=(iris.IrisError,))
        assert member._runtime.core.counters.get("requests_expired", 0) >= 1  # some got there
        assert b"fresh" in ran and not [r for r in ran if r.startswith(b"late")]


async def test_a_paused_node_can_be_crashed_and_one_still_paused_ends_with_the_others():
    async with local_nodes(4) as nodes:  # its end would wait for ever for tasks left held
        stays_paused, dead = nodes[1], nodes[2]
        nodes.pause(stays_paused)
        nodes.pause(dead)
        nodes.crash(dead)  # as kill -9 ends a stopped process: its connections end
        running = [n for n in nodes if n not in (stays_paused, dead)]
        with trio.fail_after(5):  # (failure detection, which would close them too, is slower)
            await wait_until(lambda: not any(dead.id in n._runtime.links for n in running))


# ------------------------------------------------------------------ delay and loss
A, B, C = ("a", 1), ("b", 1), ("c", 1)


async def test_a_delay_holds_back_each_write_in_order_on_the_links_it_applies_to(autojump_clock):
    network = MemoryNetwork()
    network.degrade(delay=0.3, between=([A], [B]))
    ab, ba = _connection(network, A, B)
    ac, ca = _connection(network, A, C)
    start = trio.current_time()

    async def receive(stream):
        data = await stream.receive_some()
        return data, trio.current_time() - start

    await ab.send_all(b"one ")
    await ac.send_all(b"undelayed")
    assert await receive(ca) == (b"undelayed", 0)  # A-C is not degraded
    await trio.sleep(0.1)
    await ab.send_all(b"two")
    assert await receive(ba) == (b"one ", pytest.approx(0.3))
    assert await receive(ba) == (b"two", pytest.approx(0.4))
    await ba.send_all(b"back")  # both ways
    assert await receive(ab) == (b"back", pytest.approx(0.7))
    network.degrade(delay=0.5, between=([A], [B]))
    await ab.send_all(b"held ")
    network.degrade(delay=0, between=([A], [B]))
    await ab.send_all(b"behind")  # never overtakes what was written before it
    assert await receive(ba) == (b"held behind", pytest.approx(1.2))


async def test_loss_delivers_every_byte_in_order_some_late_and_the_same_way_for_a_seed(
        autojump_clock):
    sent = [b"%03d" % i for i in range(100)]

    async def arrivals(seed):
        """When the reads of a connection whose writer wrote `sent` got their bytes."""
        network = MemoryNetwork()
        network.degrade(loss=0.2, seed=seed)
        ab, ba = _connection(network, A, B)
        start = trio.current_time()
        for data in sent:
            await ab.send_all(data)
        await ab.aclose()
        received, read_at = b"", []
        while data := await ba.receive_some():
            received += data
            read_at.append(trio.current_time() - start)
        assert received == b"".join(sent)
        return read_at

    read_at = await arrivals(seed=1)
    assert read_at[-1] >= RTO_MIN_S  # some waited for a retransmission
    assert await arrivals(seed=1) == pytest.approx(read_at)


@pytest.mark.slow
async def test_requests_over_delayed_links_succeed_and_take_the_delay_there_and_back():
    delay = 0.1
    async with local_nodes(4) as nodes:
        await nodes[3].register("svc", Echo())
        caller = nodes[0]

        async def took():
            start = trio.current_time()
            assert await caller.request("svc", b"x", timeout=5) == b"x"
            return trio.current_time() - start

        nodes.degrade(delay=delay)
        for _ in range(3):  # the request and its reply each cross at least one link
            assert await took() >= 2 * delay
        nodes.degrade(delay=2 * delay, between=([caller], nodes[1:]))  # the caller's links
        for _ in range(3):
            assert await took() >= 4 * delay


@pytest.mark.slow
async def test_requests_over_lossy_links_get_through_late_and_no_link_breaks():
    async with local_nodes(4) as nodes:
        await nodes[3].register("svc", Echo())
        nodes.degrade(loss=0.05, seed=1)
        took = []
        with trio.fail_after(60):
            for i in range(60):  # one after the other: each on the links by itself
                payload, start = b"%d" % i, trio.current_time()
                # A message held back past the hop timeout (a segment lost twice) is taken
                # for lost: a walk step's member leaves the tree until it grafts again, and
                # meanwhile the cluster looks empty. So a request may need another try.
                reply = await retry(partial(nodes[0].request, "svc", payload, timeout=5),
                                    errors=(iris.IrisError,))
                assert reply == payload
                took.append(trio.current_time() - start)
        assert max(took) >= RTO_MIN_S  # some waited for a retransmission
        assert not any(n.status()["counters"].get("links_closed_for_bad_input") for n in nodes)
