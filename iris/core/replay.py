"""Floods lost to a broken tree path, sent again when the path is mended.

When a tree node dies, the members below it get no broadcast and no event until the node just
below it notices (a late beat, a probe: several seconds) and grafts again; and what its subtree
published went up into the dead node and no further. Under churn at 1,000 simulated nodes
nearly every delivery a live member missed was of this kind (docs/BENCHMARKS.md).

So every tree node keeps the floods that passed it in the last `MessagingConfig.replay_s`
(`FloodHistory`, one bounded record per node). A node that lost its parent says in its graft
how long it has been cut off (`Subscribe.cut_ms`); the node that adopts it sends it the floods
of that tree it passed in that time, and once adopted, the grafted node sends its new parent
the ones it passed. They go as `Replayed`, which each side spreads as any flood: a node drops
what it has seen (`CoreState.first_sight`), a member delivers only what is newer than what it
delivered from that origin (`CoreState.in_order`), so nothing arrives twice or out of order.

A flood is kept as of when it would have come had it not waited for hops given up on its way
into the tree (`Flood.age_ms`), and a `Replayed` says how long ago that was at its sender (its
`age_ms`), so the node that gets it keeps it as of then too: what comes again is at most about
`replay_s` old however often it is passed on, a flood late or lost, never delivered long after
it was sent (the partition checks' `floods_late`, 10 s). It must be kept: when a tree node with
many children dies, its orphans graft again one by one over several seconds, often to a node
that joined the tree only to adopt an earlier one. That node got what the cut kept from it as a
`Replayed`; kept by nobody, as it once was, it was lost to every later orphan grafting there
(`messaging-churn`, 1,000 nodes, seed 1: 4 members missed a broadcast so, of 80).
"""

from __future__ import annotations

from collections import OrderedDict, deque

from iris.core.messages import MAX_AGE_MS, Flood, Replayed

ENTRY_BYTES = 96
"""What one recorded flood costs besides its payloads (the record and the message object)."""

SLACK_S = 1.0
"""Added to a cut's length at the node that sends the floods again: the graft that told it
was on its way meanwhile, and the cut began some way up the tree from it."""

MAX_RECIPIENTS = 1024
"""(group, peer) pairs remembered as sent floods again lately (`FloodHistory.replay`)."""


class FloodHistory:
    """The floods this node passed lately, oldest first: (when, came from, flood). Bounded
    by age, count and payload bytes; the oldest go first.

    Sending them again is bounded too, for a graft is a small message that any node can send
    naming any subscriber: each (group, peer) gets each at most once per `keep_s` (asked
    again for a longer cut, only the older part goes), and all peers together at most
    `max_bytes` of them per `keep_s`."""

    __slots__ = ("keep_s", "max_floods", "max_bytes", "entries", "bytes", "sent_to",
                 "window_start", "window_bytes")

    def __init__(self, keep_s: float, max_floods: int, max_bytes: int) -> None:
        self.keep_s = keep_s
        self.max_floods = max_floods
        self.max_bytes = max_bytes
        # (when, came from, flood, what it costs to keep)
        self.entries: deque[tuple[float, int | None, Flood, int]] = deque()
        self.bytes = 0
        # (group, peer) -> when floods last went to it again, and from when they went
        self.sent_to: OrderedDict[tuple[int, int], tuple[float, float]] = OrderedDict()
        self.window_start = -1e9
        self.window_bytes = 0

    def record(self, msg: Flood, came_from: int | None, when: float) -> None:
        """Keep `msg`, as passed at `when` (now, less any time it is known to have waited, or,
        for a `Replayed`, how long ago it passed the node that sent it again)."""
        payloads = msg.payloads
        cost = ENTRY_BYTES + (len(payloads[0]) if len(payloads) == 1 else sum(map(len, payloads)))
        entries = self.entries
        entry = (when, came_from, msg, cost)
        if not entries or entries[-1][0] <= when:
            entries.append(entry)
        else:
            # Older than the newest kept (a flood sent again): in its place, oldest first.
            place = len(entries) - 1
            while place > 0 and entries[place - 1][0] > when:
                place -= 1
            entries.insert(place, entry)
        self.bytes += cost
        old = entries[-1][0] - self.keep_s
        while entries and (entries[0][0] < old or len(entries) > self.max_floods
                           or self.bytes > self.max_bytes):
            self.bytes -= entries.popleft()[3]

    def replay(self, group: int, peer: int, cut_ms: int, now: float) -> list[Replayed]:
        """What to send `peer`, cut off from the tree for `cut_ms`, again: the floods of
        `group` passed in that time (and `SLACK_S` more, `keep_s` at most), oldest first, each
        as a `Replayed` that says how long ago it passed here, but for those that came from
        `peer` (it has them); of those it had lately only older ones (a longer cut asked
        for), and none once the budget is spent. (Entries older than `keep_s` left since the
        last flood are passed over.)"""
        start = now - min(cut_ms / 1000 + SLACK_S, self.keep_s)
        key = (group, peer)
        end = float("inf")
        last = self.sent_to.get(key)
        if last is not None and now - last[0] < self.keep_s:
            if start >= last[1]:
                return []
            end = last[1]  # what is newer went already
        if now - self.window_start >= self.keep_s:
            self.window_start, self.window_bytes = now, 0
        floods: list[Replayed] = []
        for when, came_from, msg, cost in self.entries:
            if start <= when < end and msg.group == group and came_from != peer:
                if self.window_bytes + cost > self.max_bytes:
                    break
                self.window_bytes += cost
                age_ms = min(int((now - when) * 1000), MAX_AGE_MS)
                floods.append(Replayed(msg.group, msg.origin, msg.seq, msg.payloads, age_ms))
        self.sent_to[key] = (now, start)
        self.sent_to.move_to_end(key)
        if len(self.sent_to) > MAX_RECIPIENTS:
            self.sent_to.popitem(last=False)
        return floods
