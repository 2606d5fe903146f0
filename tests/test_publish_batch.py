"""A publisher's events leave in batches (iris.runtime.publish_batch), and batching changes
neither what arrives nor the order in which a node's operations leave."""

import trio
from conftest import wait_until

import iris
import iris.testing
from iris.core.flood import Flooding
from iris.core.messages import Flood


class Counter:
    """Subscriber whose events are taken at once (`accept_event`), and a service that answers
    how many it has taken: a request that overtook a publish would be answered short."""

    def __init__(self) -> None:
        self.events: list[bytes] = []

    def accept_event(self, data: bytes) -> None:
        self.events.append(data)

    async def handle_request(self, data: bytes) -> bytes:
        return b"%d" % len(self.events)


async def test_a_burst_leaves_in_few_floods_all_delivered_in_order(monkeypatch):
    floods: list[int] = []  # events per Flood started
    start = Flooding.start

    def counted(self: Flooding, group: int, payloads: tuple[bytes, ...]) -> Flood:
        floods.append(len(payloads))
        return start(self, group, payloads)

    monkeypatch.setattr(Flooding, "start", counted)
    async with iris.testing.local_nodes(2) as nodes:
        sub = Counter()
        await nodes[1].subscribe("burst", sub)
        sent = [b"%d" % i for i in range(2000)]
        for data in sent:
            await nodes[0].publish("burst", data)
        await wait_until(lambda: len(sub.events) == len(sent))
        assert sub.events == sent
        assert sum(floods) == len(sent)
        assert len(floods) <= len(sent) // 16  # batches, not one Flood per event


async def test_a_request_after_publishes_never_overtakes_them():
    async with iris.testing.local_nodes(2) as nodes:
        counter = Counter()
        await nodes[1].subscribe("order", counter)
        await nodes[1].register("count", counter)
        published = 0
        for round_ in range(20):
            for _ in range(round_ * 7 % 50 + 1):  # publishes not yet sent when the request is
                nodes[0].start_publish("order", b"e")
                published += 1
            answer = await nodes[0].request("count", b"", timeout=5.0)
            assert int(answer) == published


async def test_queued_publishes_leave_before_the_node_does():
    key = iris.generate_network_key()
    async with iris.testing.local_nodes(1, transport="tcp", network_key=key) as nodes:
        counter = Counter()
        await nodes[0].subscribe("last", counter)
        address = "{}:{}".format(*nodes[0].address)
        async with iris.open_node(network_key=key, seeds=[address]) as leaving:
            while not counter.events:  # until the topic's tree has settled with the new node
                await leaving.publish("last", b"hello")
                await trio.sleep(0.05)
            for _ in range(10):
                leaving.start_publish("last", b"bye")  # still queued when the block ends
        await wait_until(lambda: counter.events.count(b"bye") == 10)
