"""A publisher sends its events straight to the subscribers that asked, beside the tree
(`iris.core.direct`): a subscriber delivers a direct copy only right after the publisher's
previous event, so switching between the two ways never reorders nor loses an event; the
state on both sides is bounded and expires.

The unit tests drive sans-IO cores by hand: `node.out` shows what a core sent, `node.receive`
feeds it messages at the times given."""

import random

from conftest import wait_until

import iris.testing
from iris.core import MessagingConfig, MessagingCore, topic_group
from iris.core import events as ev
from iris.core.messages import DirectFlood, DirectSubscribe, Flood, Subscribe
from overlay.node import OverlayNode
from overlay.wire import DecodeError, decode, encode
from simulations.messaging import MessagingOptions, scenario_messaging

ME, PUBLISHER, NEIGHBOUR, OTHER = 1, 7, 2, 9
GROUP = topic_group("news")


def core_at(node_id, config=None, subscribe=True):
    core = MessagingCore(OverlayNode(node_id, random.Random(node_id)), config)
    core.node.start(0.0)
    if subscribe:
        core.subscribe("news")
    core.events.clear()
    core.node.out.clear()
    return core


def delivered(core):
    return [e.payload for e in core.events if isinstance(e, ev.EventReceived)]


def sent(core, kind):
    return [(dest, msg) for dest, msg in core.node.out if isinstance(msg, kind)]


def test_a_subscriber_asks_the_publisher_of_an_event_the_tree_brought():
    core = core_at(ME)
    core.node.receive(NEIGHBOUR, Flood(GROUP, PUBLISHER, 5, (b"first",)), 0.0)
    assert delivered(core) == [b"first"]
    assert sent(core, DirectSubscribe) == [(PUBLISHER, DirectSubscribe(GROUP, True))]
    core.node.out.clear()
    core.node.receive(NEIGHBOUR, Flood(GROUP, PUBLISHER, 6, (b"second",)), 1.0)
    assert sent(core, DirectSubscribe) == []  # asked a moment ago
    core.node.receive(NEIGHBOUR, Flood(GROUP, PUBLISHER, 8, (b"third",)), 4.0)
    assert sent(core, DirectSubscribe) == [(PUBLISHER, DirectSubscribe(GROUP, True))]


def test_a_direct_copy_comes_first_and_the_trees_copy_is_dropped_silently():
    core = core_at(ME)
    core.node.receive(NEIGHBOUR, Flood(GROUP, PUBLISHER, 5, (b"first",)), 0.0)
    core.node.receive(PUBLISHER, DirectFlood(GROUP, PUBLISHER, 6, 5, (b"second",)), 0.1)
    core.node.receive(NEIGHBOUR, Flood(GROUP, PUBLISHER, 6, (b"second",)), 0.2)
    assert delivered(core) == [b"first", b"second"]
    assert core.flood.direct.delivered_directly(PUBLISHER, 6)
    assert core.counters["floods_delivered_directly"] == 1
    assert "floods_out_of_order" not in core.counters


def test_a_direct_copy_never_overtakes_an_older_event_still_in_the_tree():
    """The switch between the ways: the copy of event 6 arrives before the tree brought 5 (the
    subscriber asked after 4); it is held, and goes right after the tree delivered 5."""
    core = core_at(ME)
    core.node.receive(NEIGHBOUR, Flood(GROUP, PUBLISHER, 4, (b"4",)), 0.0)
    core.node.receive(PUBLISHER, DirectFlood(GROUP, PUBLISHER, 6, 5, (b"6",)), 0.1)
    assert delivered(core) == [b"4"]
    core.node.receive(NEIGHBOUR, Flood(GROUP, PUBLISHER, 5, (b"5",)), 0.2)
    assert delivered(core) == [b"4", b"5", b"6"]
    core.node.receive(NEIGHBOUR, Flood(GROUP, PUBLISHER, 6, (b"6",)), 0.3)
    core.node.receive(PUBLISHER, DirectFlood(GROUP, PUBLISHER, 7, 6, (b"7",)), 0.4)
    assert delivered(core) == [b"4", b"5", b"6", b"7"]
    assert core.counters["floods_delivered_directly"] == 1
    assert "floods_out_of_order" not in core.counters


def test_a_held_copy_the_tree_delivered_first_is_dropped():
    """Nothing delivered from the publisher yet: the copy cannot show that it comes next; the
    tree's copy of the same event is delivered, once."""
    core = core_at(ME)
    core.node.receive(PUBLISHER, DirectFlood(GROUP, PUBLISHER, 6, 5, (b"6",)), 0.0)
    assert delivered(core) == []
    core.node.receive(NEIGHBOUR, Flood(GROUP, PUBLISHER, 6, (b"6",)), 0.1)
    core.node.receive(PUBLISHER, DirectFlood(GROUP, PUBLISHER, 6, 5, (b"6",)), 0.2)
    assert delivered(core) == [b"6"]
    assert core.counters["direct_floods_behind"] == 2
    assert not core.flood.direct.held


def test_held_copies_are_bounded():
    core = core_at(ME, MessagingConfig(direct_held=2))
    for publisher in range(10, 15):
        core.node.receive(publisher, DirectFlood(GROUP, publisher, 6, 5, (b"x",)), 0.0)
    core.node.receive(PUBLISHER, DirectFlood(GROUP, PUBLISHER, 6, 5, (b"x" * 70_000,)), 0.0)
    assert list(core.flood.direct.held) == [(GROUP, 13), (GROUP, 14)]


def test_copies_from_another_node_than_the_publisher_are_refused():
    core = core_at(ME)
    core.node.receive(NEIGHBOUR, Flood(GROUP, PUBLISHER, 5, (b"5",)), 0.0)
    core.node.receive(OTHER, DirectFlood(GROUP, PUBLISHER, 6, 5, (b"forged",)), 0.1)
    assert delivered(core) == [b"5"]
    assert core.counters["direct_floods_refused"] == 1


def test_a_node_not_subscribed_asks_the_publisher_to_stop():
    core = core_at(ME, subscribe=False)
    core.node.receive(PUBLISHER, DirectFlood(GROUP, PUBLISHER, 6, 5, (b"6",)), 0.0)
    assert sent(core, DirectSubscribe) == [(PUBLISHER, DirectSubscribe(GROUP, False))]
    assert delivered(core) == []


def copies(core):
    return [(dest, msg.seq, msg.prev) for dest, msg in sent(core, DirectFlood)]


def test_a_publisher_sends_copies_to_those_that_asked_from_its_second_event_on():
    core = core_at(PUBLISHER, subscribe=False)
    core.node.receive(ME, DirectSubscribe(GROUP, True), 0.0)  # not published to yet: ignored
    core.publish("news", b"a")
    assert copies(core) == []
    audience = core.flood.direct.audiences[GROUP]
    first = audience.prev  # the seq of "a"
    core.node.receive(ME, DirectSubscribe(GROUP, True), 0.1)
    core.node.receive(OTHER, DirectSubscribe(GROUP, True), 0.1)
    core.node.out.clear()
    core.publish_batch("news", (b"b", b"c"))
    assert sorted(copies(core)) == [(ME, first + 1, first), (OTHER, first + 1, first)]
    assert audience.prev == first + 2
    core.node.out.clear()
    core.node.receive(OTHER, DirectSubscribe(GROUP, False), 0.2)
    core.publish("news", b"d")
    assert copies(core) == [(ME, first + 3, first + 2)]


def test_no_copy_goes_where_the_trees_own_copy_goes_in_one_hop():
    """A subscriber that is the publisher's tree neighbour gets the tree's copy straight from
    it: a direct copy would only double the traffic (two nodes publishing to each other)."""
    core = core_at(PUBLISHER)  # subscribed: the root of its one-node ring's tree
    core.publish("news", b"a")
    core.trees_protocol._adopt(core.state.trees[GROUP], Subscribe(GROUP, ME, 1, 0))
    for asker in (ME, OTHER):
        core.node.receive(asker, DirectSubscribe(GROUP, True), 0.1)
    core.node.out.clear()
    core.publish("news", b"b")
    assert [dest for dest, _, _ in copies(core)] == [OTHER]
    assert [dest for dest, msg in sent(core, Flood)] == [ME]


def test_the_audience_is_bounded_and_forgets_the_silent_and_the_failed():
    config = MessagingConfig(direct_audience=2, direct_ttl_s=60.0)
    core = core_at(PUBLISHER, config, subscribe=False)
    core.publish("news", b"a")
    for asker in (ME, OTHER, NEIGHBOUR):
        core.node.receive(asker, DirectSubscribe(GROUP, True), 1.0)
    assert core.counters["direct_audience_full"] == 1
    core.node.receive(ME, DirectSubscribe(GROUP, True), 40.0)  # ME asks again, OTHER not
    core.node.out.clear()
    core.node.set_time(70.0)
    core.publish("news", b"b")
    assert [dest for dest, _, _ in copies(core)] == [ME]
    core.peer_failed(ME)
    core.node.out.clear()
    core.publish("news", b"c")
    assert copies(core) == []


def test_the_publishers_remembered_are_bounded():
    core = core_at(ME, MessagingConfig(direct_asked=3))
    for publisher in range(10, 20):
        core.node.receive(NEIGHBOUR, Flood(GROUP, publisher, 5, (b"x",)), 0.0)
    assert core.flood.direct.asked is not None and len(core.flood.direct.asked) == 3


def test_direct_messages_are_checked_when_decoded():
    for msg in (DirectFlood(GROUP, PUBLISHER, 6, 5, (b"x",)), DirectSubscribe(GROUP, False)):
        assert decode(encode(msg)) == msg
    too_many = DirectFlood(GROUP, PUBLISHER, 6, 5, (b"x",) * 257)
    for bad in (encode(too_many), encode(DirectSubscribe(GROUP, True))[:-1] + b"\x02"):
        try:
            decode(bad)
        except DecodeError:
            continue
        raise AssertionError(f"decoded {bad!r}")


def test_most_events_arrive_straight_and_every_one_once_and_in_order():
    """The simulator at 120 nodes, 10 events per publisher and topic over 10 s: every event
    reaches every subscriber once, in order, and most first arrivals come from the direct
    copy (a publisher's first event to a topic, and those sent before a subscriber's request
    for copies reached it, come through the tree only), much sooner than through the tree."""
    opts = MessagingOptions(nodes=120, seed=4, requests=1000, request_rate=100.0, broadcasts=20,
                            publishes=600, tunnel_messages=10, tunnel_big_mib=0)
    r = scenario_messaging(opts)
    assert r["publish_delivery_ratio"] == 1.0 and r["publish_duplicates"] == 0
    assert r["publish_order_violations"] == 0 and r["floods_dropped_out_of_order"] == 0
    assert r["publish_direct_share"] > 0.8
    assert r["publish_delay_stretch"] < r["broadcast_delay_stretch"] / 2


async def test_real_nodes_learn_the_audience_and_deliver_every_event_once_in_order():
    """Over the runtime's links: the publisher learns both subscribers from their requests
    (the addresses travel with the events), and switching them to the direct way loses,
    repeats and reorders nothing."""
    async with iris.testing.local_nodes(5) as nodes:
        got: dict[int, list[bytes]] = {1: [], 3: []}
        for i in got:
            async def on_event(data, i=i):
                got[i].append(data)
            await nodes[i].subscribe("direct-news", on_event)
        publisher = nodes[4]._runtime.core
        await nodes[4].publish("direct-news", b"0")
        await wait_until(lambda: all(v == [b"0"] for v in got.values()))
        audiences = publisher.flood.direct.audiences
        wanted = {nodes[1].id, nodes[3].id}
        await wait_until(lambda: set(audiences[topic_group("direct-news")].asked) == wanted)
        for k in range(1, 50):
            await nodes[4].publish("direct-news", b"%d" % k)
        await wait_until(lambda: all(len(v) >= 50 for v in got.values()))
        assert got[1] == got[3] == [b"%d" % k for k in range(50)]
