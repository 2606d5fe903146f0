"""Idle links close by agreement (iris.runtime.idle_links, `LinkClose`): which ones, and that
closing them loses and reorders nothing."""

import random
from dataclasses import dataclass

import pytest
import trio

import iris
from iris.runtime.idle_links import idle_links
from iris.testing import local_nodes, retry, wait_until
from overlay.link_policy import LinkPolicy


@dataclass(eq=False)
class FakeLink:
    read_at: float
    active_at: float = 0.0
    used: bool = False
    closable: bool = True


def policy(idle_close_s: float, max_links: int) -> LinkPolicy:
    p = LinkPolicy()
    p.idle_close_s, p.max_links = idle_close_s, max_links
    return p


def test_a_link_idle_for_the_policy_time_is_chosen_and_a_busy_or_used_one_is_not():
    idle = FakeLink(read_at=10.0)
    recent = FakeLink(read_at=95.0)
    used = FakeLink(read_at=10.0, used=True)  # a frame queued since the last look
    busy = FakeLink(read_at=10.0, closable=False)  # frames queued, or closing already
    links = [idle, recent, used, busy]
    assert idle_links(links, 100.0, policy(60.0, 100), len(links)) == [idle]
    assert used.active_at == 100.0 and not used.used  # its use is remembered for next time


def test_over_the_cap_the_links_idle_longest_close_first():
    links = [FakeLink(read_at=float(t)) for t in (90, 10, 50, 99)]
    chosen = idle_links(links, 100.0, policy(3600.0, 2), len(links))
    assert [link.read_at for link in chosen] == [10.0, 50.0]


def test_the_cap_leaves_three_quarters_of_the_descriptors_to_the_rest(monkeypatch):
    from iris.runtime import accept
    monkeypatch.setattr(accept, "open_file_limit", lambda: 256)
    assert accept.link_share(512) == 64
    monkeypatch.setattr(accept, "open_file_limit", lambda: 1 << 20)
    assert accept.link_share(512) == 512
    monkeypatch.setattr(accept, "open_file_limit", lambda: None)
    assert accept.link_share(512) == 512


async def test_a_node_takes_the_link_policy_it_is_given():
    """`open_node(link_policy=...)` (as `iris node --idle-close-s --max-links` does); the cap
    still leaves three quarters of the descriptors to the rest."""
    from iris.runtime.accept import link_share

    policy = iris.LinkPolicy(idle_close_s=5.0, max_links=100)
    async with iris.open_node(network_key=iris.generate_network_key(),
                              link_policy=policy) as node:
        assert node._runtime.link_policy.idle_close_s == 5.0
        assert node._runtime.link_policy.max_links == link_share(100)


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_an_idle_link_closes_on_both_sides_and_the_next_frame_dials_anew(transport):
    async with local_nodes(2, transport=transport) as nodes:
        a, b = nodes[0]._runtime, nodes[1]._runtime
        await nodes[1].register("svc", Echo())
        assert await nodes[0].request("svc", b"before", timeout=10) == b"before"
        old_a, old_b = a.links[b.node_id], b.links[a.node_id]
        a.link_policy.idle_close_s = 0.0  # every quiet link counts as idle
        a.close_idle(trio.current_time())
        with trio.fail_after(10):
            await old_a.ended.wait()
            await old_b.ended.wait()
        assert a.counters["links_closed_idle"] >= 1
        assert "links_closed_unanswered" not in a.counters
        assert "links_closed_idle" not in b.counters  # b only answered
        assert await nodes[0].request("svc", b"after", timeout=10) == b"after"
        assert a.links[b.node_id] is not old_a


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_links_closing_again_and_again_under_traffic_lose_and_reorder_nothing(transport):
    """Every node of four closes every link that is quiet for a moment, hundreds of times,
    while two publishers' events, requests between all nodes and a tunnel's echoes flow: every
    event arrives once and in its publisher's order, every request is answered, the tunnel's
    data comes back in order, and no link ends any other way (a hop given up, a reset, a
    fault in the close)."""
    rng = random.Random(1)
    count = 1000
    async with local_nodes(4, transport=transport) as nodes:
        runtimes = [node._runtime for node in nodes]
        for runtime in runtimes:
            runtime.link_policy.idle_close_s = 0.0  # every quiet link counts as idle
        got: dict[int, list[bytes]] = {0: [], 1: []}
        for i, events in got.items():
            async def on_event(data: bytes, events=events) -> None:
                events.append(data)

            await nodes[i].subscribe("feed", on_event)
        for i, node in enumerate(nodes):
            await node.register(f"svc{i}", Echo())
        for node in nodes:  # (the members' grafts reach the trees' roots before the traffic)
            for j in range(len(nodes)):
                assert await node.request(f"svc{j}", b"ready", timeout=10) == b"ready"

        async def closer() -> None:
            while True:
                await trio.sleep(rng.uniform(0.0005, 0.004))
                rng.choice(runtimes).close_idle(trio.current_time())

        async def publish(node, tag: bytes) -> None:
            for k in range(count):
                await node.publish("feed", tag + b"%d" % k)
                if k % 7 == 0:
                    await trio.sleep(0.0005)

        async def ask(node) -> None:
            for k in range(150):
                j = rng.randrange(len(nodes))
                assert await node.request(f"svc{j}", b"q%d" % k, timeout=10) == b"q%d" % k

        async def tunnel() -> None:
            async with await nodes[3].tunnel("svc0", timeout=5) as tun:
                for k in range(300):
                    await tun.send(b"t%d" % k * 50)
                    assert await tun.receive() == b"t%d" % k * 50

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(closer)
                async with trio.open_nursery() as traffic:
                    traffic.start_soon(publish, nodes[2], b"a")
                    traffic.start_soon(publish, nodes[3], b"b")
                    for node in nodes:
                        traffic.start_soon(ask, node)
                    traffic.start_soon(tunnel)
                await wait_until(lambda: all(len(v) >= 2 * count for v in got.values()))
                nursery.cancel_scope.cancel()
        for events in got.values():
            for tag in (b"a", b"b"):
                assert [e for e in events if e.startswith(tag)] == [
                    tag + b"%d" % k for k in range(count)]
        assert sum(runtime.counters.get("links_closed_idle", 0) for runtime in runtimes) >= 50
        assert all(set(runtime.counters) <= {"links_closed_idle"} for runtime in runtimes)


async def test_beyond_the_cap_the_node_closes_links_until_the_cap_holds():
    async with local_nodes(4) as nodes:
        a = nodes[0]._runtime
        await wait_until(lambda: len(a._running) >= 3)
        a.link_policy.max_links = 1  # idle_close_s stays at its minute: only the cap acts
        a.close_idle(trio.current_time())
        assert len([link for link in a._running if not link.closing]) <= 1
        closing = [link for link in a._running if link.closing]
        with trio.fail_after(10):
            for link in closing:
                await link.ended.wait()
        assert a.counters["links_closed_idle"] == len(closing) >= 2


async def test_a_peer_that_does_not_answer_has_the_link_closed_after_the_wait():
    """A paused peer reads nothing: our `LinkClose` goes unanswered, and the connection is
    closed anyway after `close_wait_s`; the peer is reached again once it is back."""
    async with local_nodes(2) as nodes:
        a, b = nodes[0]._runtime, nodes[1]._runtime
        await nodes[1].register("svc", Echo())
        assert await nodes[0].request("svc", b"before", timeout=10) == b"before"
        old = a.links[b.node_id]
        a.link_policy.idle_close_s, a.link_policy.close_wait_s = 0.0, 0.5
        nodes.pause(nodes[1])
        a.close_idle(trio.current_time())
        assert old.closing
        with trio.fail_after(10):
            await old.ended.wait()
        assert a.counters["links_closed_unanswered"] == 1
        nodes.resume(nodes[1])
        with trio.fail_after(20):  # (a request sent while the overlay still doubts b may fail)
            reply = await retry(lambda: nodes[0].request("svc", b"after", timeout=2),
                                errors=(iris.IrisError,), pause=0.1)
        assert reply == b"after"


class Echo:
    async def handle_request(self, data):
        return data

    async def handle_tunnel(self, tunnel):
        try:
            while True:
                await tunnel.send(await tunnel.receive())
        except iris.ClosedError:
            pass
