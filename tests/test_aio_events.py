"""A topic's events on the asyncio face, and the node's forms under them.

Publishes from asyncio code leave in batches from the loop's callbacks (`flush_by`), not from
a trio task woken per batch. The node hands each event to the asyncio side at once
(`Subscription.hold_event`); the subscription reports what its handler consumed
(`Node.event_consumed`), so the topic's limits bound the queue as for the trio API's
handlers. These tests hold a handler back and check the bound, and that every event counted
against the limits is released again (consumed, replaced or unsubscribed), or the topic would
stay full and drop everything after.

Waits are for conditions, with deadlines (`asyncio.timeout`, `wait_until`)."""

import asyncio

import trio

import iris
import iris.aio
import iris.testing
from iris.aio.node import Subscription
from iris.core.flood import Flooding
from iris.core.limits import ENTRY_COST
from iris.runtime.publish_batch import PublishBatch
from tests.test_aio import run, two_nodes, until


def topic_state(node: iris.aio.Node):
    """The core's record of `node`'s one topic, and the core (its counters)."""
    core = node._node._runtime.core
    return core.topics[next(iter(core.topics))], core


def test_publishes_from_asyncio_leave_in_batches_in_order_with_a_later_request(monkeypatch):
    """Rounds of publishes, each followed by a request that counts what the subscriber has
    had: the count is whole every time (no request overtakes a publish), the events leave
    in few floods, and the batches that were not full left from the loop's callbacks."""
    floods: list[int] = []  # events per Flood started
    asked: list[int] = []  # batches flushed from a callback of the loop
    start, flush_asked = Flooding.start, PublishBatch._flush_asked

    def counted(self, group, payloads):
        floods.append(len(payloads))
        return start(self, group, payloads)

    def counted_flush(self):
        asked.append(len(self.payloads))
        flush_asked(self)

    monkeypatch.setattr(Flooding, "start", counted)
    monkeypatch.setattr(PublishBatch, "_flush_asked", counted_flush)

    class Counter:
        def __init__(self) -> None:
            self.events: list[bytes] = []

        async def handle_request(self, data: bytes) -> bytes:
            return b"%d" % len(self.events)

    async def body(a, b, key):
        counter = Counter()

        async def on_event(event):
            counter.events.append(event)

        await a.subscribe("order", on_event)
        await a.register("count", counter)
        published = []
        for round_ in range(20):
            for _ in range(round_ * 7 % 50 + 1):
                published.append(b"%d" % len(published))
                await b.publish("order", published[-1])
            assert int(await b.request("count", b"", timeout=10)) == len(published)
        assert counter.events == published
        assert sum(floods) >= len(published) and len(floods) <= len(published) // 4
        assert any(asked)  # (a request's call into the core takes the others first)
    run(two_nodes(body))


def test_a_slow_asyncio_subscriber_drops_beyond_its_limits_then_takes_events_again():
    """A handler held back: the node queues no more than the topic's limits allow and drops
    the rest (counted); once the handler goes on, what it consumed is released, the
    topic's count returns to zero and new events are taken again."""
    async def body(a, b, key):
        release = asyncio.Event()
        seen: list[bytes] = []

        async def slow(event):
            seen.append(event)
            await release.wait()

        await a.subscribe("firehose", slow, limits=iris.TopicLimits(max_queued_bytes=10_000))
        for i in range(100):
            await b.publish("firehose", b"%04d" % i + b"p" * 996)
        topic, core = topic_state(a)
        await until(lambda: core.counters.get("events_dropped", 0) + len(seen)
                    + len(a._subscriptions["firehose"]._events) == 100)
        queued = len(a._subscriptions["firehose"]._events)
        assert core.counters["events_dropped"] >= 85
        assert (queued + len(seen)) * (1000 + ENTRY_COST) <= 10_000
        assert topic.queued_bytes <= 10_000
        release.set()
        await until(lambda: len(seen) == 100 - core.counters["events_dropped"])
        assert seen == sorted(seen)  # in order, the dropped ones left out
        await until(lambda: topic.queued_bytes == 0)
        await b.publish("firehose", b"after")
        await until(lambda: seen[-1] == b"after")
    run(two_nodes(body))


def test_replacing_and_ending_a_subscription_releases_what_it_held():
    """Subscribing again hands later events to the new handler only; the old one's queue is
    dropped and released, so the topic's count returns to zero; unsubscribing ends it."""
    async def body(a, b, key):
        release = asyncio.Event()
        first: list[bytes] = []
        second: list[bytes] = []

        async def held(event):
            first.append(event)
            await release.wait()

        async def quick(event):
            second.append(event)

        await a.subscribe("news", held)
        for i in range(5):
            await b.publish("news", b"old %d" % i)
        topic, _ = topic_state(a)
        await until(lambda: len(a._subscriptions["news"]._events) == 4 and first)
        assert topic.queued_bytes > 0
        await a.subscribe("news", quick)
        await until(lambda: topic.queued_bytes == 0)
        for i in range(5):
            await b.publish("news", b"new %d" % i)
        await until(lambda: len(second) == 5)
        assert second == [b"new %d" % i for i in range(5)] and first == [b"old 0"]
        await until(lambda: topic.queued_bytes == 0)
        await a.unsubscribe("news")
        assert "news" not in a.status()["topics"]
    run(two_nodes(body))


class _Loop:
    """The one part of a `Guest` a Subscription uses: it starts its task on the loop."""

    def start_in_asyncio(self, coro):
        return asyncio.get_running_loop().create_task(coro)


def test_consumption_is_reported_while_the_queue_stays_full_and_when_it_empties():
    """200 events queued at once: reported in steps of REPORT_EVERY while the queue holds
    more, the rest when it is empty; every event and byte once."""
    async def main():
        reports: list[tuple[int, int, int]] = []  # (count, nbytes, events handled by then)
        handled: list[bytes] = []

        async def handler(event):
            handled.append(event)
            await asyncio.sleep(0)

        def consumed(topic, nbytes, count):
            assert topic == "t"
            reports.append((count, nbytes, len(handled)))

        sub = Subscription(_Loop(), "t", handler, consumed)
        events = [b"e%d" % i for i in range(200)]
        for event in events:
            sub.hold_event(event)
        await until(lambda: len(handled) == 200 and sum(r[0] for r in reports) == 200)
        assert handled == events
        every = Subscription.REPORT_EVERY
        assert reports[0] == (every, sum(map(len, events[:every])), every)  # 136 still queued
        assert sum(r[1] for r in reports) == sum(map(len, events))
        sub.close()
    asyncio.run(main())


def test_closing_a_subscription_releases_its_queue_and_what_comes_after():
    async def main():
        reports: list[tuple[int, int]] = []
        started = asyncio.Event()

        async def stuck(event):
            started.set()
            await asyncio.Event().wait()

        sub = Subscription(_Loop(), "t", stuck, lambda topic, n, count: reports.append((count, n)))
        for _ in range(10):
            sub.hold_event(b"x" * 100)
        await started.wait()
        sub.close()
        assert reports == [(10, 1000)]  # the one being handled and the 9 queued
        sub.hold_event(b"y" * 50)  # the node has not heard of the close yet
        assert reports == [(10, 1000), (1, 50)]
        async with asyncio.timeout(10):
            while not sub._task.done():  # noqa: ASYNC110 - the task ends once cancelled
                await asyncio.sleep(0)
        assert sub._task.cancelled()
    asyncio.run(main())


async def test_a_hold_event_handler_keeps_events_counted_until_it_reports_them():
    """The node's plain `hold_event` form (trio API): the topic's count grows with what the
    handler holds and shrinks with what it reports; an event it raises on is not held."""
    async with iris.testing.local_nodes(2) as nodes:
        held: list[bytes] = []

        class Holder:
            def hold_event(self, event: bytes) -> None:
                if event == b"raise":
                    raise ValueError("refused")
                held.append(event)

        await nodes[1].subscribe("kept", Holder())
        core = nodes[1]._runtime.core
        topic = core.topics[next(iter(core.topics))]
        for _ in range(3):
            await nodes[0].publish("kept", b"z" * 100)
        await nodes[0].publish("kept", b"raise")
        await iris.testing.wait_until(lambda: len(held) == 3 and nodes[1].status()[
            "counters"].get("hold_event_errors") == 1)
        assert topic.queued_bytes == 3 * (100 + ENTRY_COST)
        nodes[1].event_consumed("kept", 200, 2)
        assert topic.queued_bytes == 100 + ENTRY_COST
        nodes[1].event_consumed("kept", 100)
        assert topic.queued_bytes == 0


async def test_replacing_a_trio_handler_releases_the_events_it_had_queued():
    """The trio API's async handlers: the events queued for a handler that is replaced are
    dropped with it, and no longer count under the topic's limits (they did: the topic then
    stayed that much fuller for good)."""
    async with iris.testing.local_nodes(2) as nodes:
        release = trio.Event()
        first: list[bytes] = []
        second: list[bytes] = []

        async def held(event: bytes) -> None:
            first.append(event)
            await release.wait()

        async def quick(event: bytes) -> None:
            second.append(event)

        await nodes[1].subscribe("kept", held)
        core = nodes[1]._runtime.core
        topic = core.topics[next(iter(core.topics))]
        for i in range(5):
            await nodes[0].publish("kept", b"old %d" % i)
        await iris.testing.wait_until(lambda: topic.queued_bytes == 5 * (5 + ENTRY_COST))
        await nodes[1].subscribe("kept", quick)
        release.set()  # the one being handled when it was replaced finishes
        await iris.testing.wait_until(lambda: topic.queued_bytes == 0)
        await nodes[0].publish("kept", b"new")
        await iris.testing.wait_until(lambda: second == [b"new"])
        assert first == [b"old 0"]
