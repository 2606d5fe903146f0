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

A node run as a guest of another event loop (`iris.aio`: trio in asyncio's callbacks) is
published to from that loop's code, while trio itself waits for I/O in its helper thread; to
wake the batch's task from there is to wake that thread and hand trio's tick back, once per
batch. Such a node has its batches leave from a callback of the host loop instead
(`flush_by`): measured, an asyncio loop of 1 KiB publishes into a lone node took 0.7 us of CPU
per publish this way against 1.35 us through the task.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from iris.core.messages import MAX_FLOOD_BATCH

MAX_EVENTS = MAX_FLOOD_BATCH  # events in one batch (the wire's limit for one Flood)
MAX_BYTES = 64 * 1024  # payload bytes in one batch: a larger event leaves in a batch of its own


class PublishBatch:
    __slots__ = ("topic", "payloads", "nbytes", "_flush", "_wanted", "_call_soon", "_asked")

    def __init__(self, flush: Callable[[], None]) -> None:
        """`flush` makes the runtime take the batch (a call into the cores, which `take`s it
        first thing): the batch's task calls it."""
        self.topic = ""
        self.payloads: list[bytes] = []
        self.nbytes = 0
        self._flush = flush
        self._wanted: trio.Event | None = None  # set: the task will flush on its next turn
        self._call_soon: Callable[[Callable[[], None]], object] | None = None  # see flush_by
        self._asked = False  # a flush is asked of `_call_soon` and has not run yet

    def flush_by(self, call_soon: Callable[[Callable[[], None]], object]) -> None:
        """Batches leave from `call_soon(fn)` callbacks (the host loop's: see the module)
        instead of the batch's task."""
        self._call_soon = call_soon

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
        elif self._call_soon is not None:
            if not self._asked:
                self._asked = True
                self._call_soon(self._flush_asked)
        elif self._wanted is not None and not self._wanted.is_set():
            self._wanted.set()

    def take(self) -> tuple[str, tuple[bytes, ...]]:
        """The queued batch (topic, events), now no longer queued."""
        batch = (self.topic, tuple(self.payloads))
        self.payloads.clear()
        self.nbytes = 0
        return batch

    def _flush_asked(self) -> None:
        self._asked = False
        if self.payloads:
            self._flush()

    async def run(self) -> None:
        """The batch's task: flush what was queued since it last ran, once the publisher
        yields."""
        while True:
            wanted = self._wanted = trio.Event()
            await wanted.wait()
            if self.payloads:
                self._flush()
