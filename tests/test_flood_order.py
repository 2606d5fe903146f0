"""A member never delivers a publisher's events (or a sender's broadcasts) out of order: one
older than the latest delivered from that origin in that group is dropped, counted. (Seen on
real processes after a partition: events held on a stalled connection arrived after newer
ones sent another way.)"""

import random

from iris.core import MessagingCore, topic_group
from iris.core import events as ev
from iris.core.messages import Flood
from overlay.node import OverlayNode

PUBLISHER, OTHER = 7, 9


def test_an_event_older_than_one_delivered_from_its_publisher_is_dropped():
    core = MessagingCore(OverlayNode(1, random.Random(1)))
    core.node.start(0.0)
    core.subscribe("news")
    core.events.clear()
    group = topic_group("news")
    for origin, seq, payload in [(PUBLISHER, 5, b"fifth"), (PUBLISHER, 3, b"third, late"),
                                 (OTHER, 1, b"another publisher"), (PUBLISHER, 6, b"sixth")]:
        core.node.receive(2, Flood(group, origin, seq, (payload,)), 0.0)
    delivered = [e.payload for e in core.events if isinstance(e, ev.EventReceived)]
    assert delivered == [b"fifth", b"another publisher", b"sixth"]
    assert core.state.counters["floods_out_of_order"] == 1


def test_a_batch_is_delivered_event_by_event_and_dropped_whole_when_old():
    """A Flood carrying a batch delivers its events in order with consecutive sequence numbers;
    a repeat of the batch, or one older than what was delivered, delivers none of it."""
    core = MessagingCore(OverlayNode(1, random.Random(1)))
    core.node.start(0.0)
    core.subscribe("news")
    core.events.clear()
    group = topic_group("news")
    first = Flood(group, PUBLISHER, 10, (b"a", b"b", b"c"))
    for msg in [first, first, Flood(group, PUBLISHER, 12, (b"late",)),
                Flood(group, PUBLISHER, 13, (b"d",))]:
        core.node.receive(2, msg, 0.0)
    delivered = [(e.payload, e.seq) for e in core.events if isinstance(e, ev.EventReceived)]
    assert delivered == [(b"a", 10), (b"b", 11), (b"c", 12), (b"d", 13)]
    assert core.state.counters["flood_duplicate_dropped"] == 1
    assert core.state.counters["floods_out_of_order"] == 1


def test_a_publish_batch_takes_consecutive_sequence_numbers():
    core = MessagingCore(OverlayNode(1, random.Random(1)))
    core.node.start(0.0)
    core.subscribe("news")
    core.events.clear()
    core.publish_batch("news", (b"x", b"y"))
    core.publish("news", b"z")
    seqs = [e.seq for e in core.events if isinstance(e, ev.EventReceived)]
    assert [e.payload for e in core.events] == [b"x", b"y", b"z"]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2]
