"""A publisher's events leave in batches: the ones it publishes to a topic within one turn of
its trio loop travel as one `Flood` (`MessagingCore.publish_batch`).

Why: routing a message to the topic's root, acknowledging each hop, and recognising a repeat
cost about as much as the event itself (measured with two processes, the root on the
subscriber's node: 12 us of CPU per 1 KiB event on each side, against 7 us when the root was
the publisher's node and only the tree edge was crossed). Paid once per batch, they fall out of
the per-event cost, whichever node is the root.

How: `add` keeps the event and wakes the batch's task, which runs once the publisher yields (a
`publish` yields at least every 64 calls: `iris.runtime.backpressure`) and passes the batch to
the core. A batch also leaves at once when it is full (`MAX_EVENTS` events or `MAX_BYTES`
bytes), when the next event is for another topic, and before any other call into the cores
(`take`, from `Runtime.call`): so a node's operations still leave in the order the application
made them, a publish never overtaken by a later request, broadcast or leave. The cost for one
lone publish is one pass of the loop before it is sent.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from iris.core.messages import MAX_FLOOD_BATCH

MAX_EVENTS = MAX_FLOOD_BATCH  # events in one batch (the wire's limit for one Flood)
MAX_BYTES = 64 * 1024  # payload bytes in one batch: a larger event leaves in a batch of its own


class PublishBatch:
    __slots__ = ("topic", "payloads", "nbytes", "_flush", "_wanted")

    def __init__(self, flush: Callable[[], None]) -> None:
        """`flush` makes the runtime take the batch (a call into the cores, which `take`s it
        first thing): the batch's task calls it."""
        self.topic = ""
        self.payloads: list[bytes] = []
        self.nbytes = 0
        self._flush = flush
        self._wanted: trio.Event | None = None  # set: the task will flush on its next turn

    def add(self, topic: str, payload: bytes) -> None:
        """Queue one event of `topic` (after any queued for another topic have left)."""
        if self.payloads and (topic != self.topic
                              or self.nbytes + len(payload) > MAX_BYTES):
            self._flush()
        self.topic = topic
        self.payloads.append(payload)
        self.nbytes += len(payload)
        if len(self.payloads) >= MAX_EVENTS or self.nbytes >= MAX_BYTES:
            self._flush()
        elif self._wanted is not None and not self._wanted.is_set():
            self._wanted.set()

    def take(self) -> tuple[str, tuple[bytes, ...]]:
        """The queued batch (topic, events), now no longer queued."""
        batch = (self.topic, tuple(self.payloads))
        self.payloads.clear()
        self.nbytes = 0
        return batch

    async def run(self) -> None:
        """The batch's task: flush what was queued since it last ran, once the publisher
        yields."""
        while True:
            wanted = self._wanted = trio.Event()
            await wanted.wait()
            if self.payloads:
                self._flush()
