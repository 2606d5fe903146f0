"""Why a tunnel closed, as a code: the messaging cores of two nodes driven by hand (no
simulator, no runtime), and the `TunnelClosed` events and `TunnelClose` messages they produce.
"""

import random

from iris.core import LOST, NO_MEMBERS, OK, REFUSED, TIMEOUT, MessagingConfig, MessagingCore
from iris.core import events as ev
from iris.core.messages import TunnelClose, other_end
from overlay.node import OverlayNode

A, B = 1, 2**127


class Pair:
    """Two nodes whose messages arrive at once, unless `held` (then they wait in `queue`);
    the clock moves only through `run_until`, which fires the nodes' timers on the way."""

    def __init__(self, config=None, b_config=None):
        rng = random.Random(1)
        self.now = 0.0
        self.held = False
        self.queue = []  # (source, destination, message) not delivered yet
        self.cores = {}
        for node_id, cfg in ((A, config), (B, b_config or config)):
            self.cores[node_id] = MessagingCore(OverlayNode(node_id, rng), cfg)
        self.node(A).start(0.0)
        self.node(B).start(0.0, seeds=[A])
        self.deliver()
        assert self.node(A).active and self.node(B).active

    def node(self, node_id):
        return self.cores[node_id].node

    def deliver(self):
        for _ in range(1000):
            for core in self.cores.values():
                out, core.node.out = core.node.out, []
                self.queue.extend((core.node.id, dest, msg) for dest, msg in out)
            if self.held or not self.queue:
                return
            queue, self.queue = self.queue, []
            for src, dest, msg in queue:
                self.node(dest).receive(src, msg, self.now)
        raise AssertionError("the nodes never went quiet")

    def run_until(self, until):
        self.deliver()
        while True:
            due = min(core.node.next_deadline for core in self.cores.values())
            if due > until:
                break
            self.now = due
            for core in self.cores.values():
                if core.node.next_deadline <= due:
                    core.node.handle_timer(due)
            self.deliver()
        self.now = until

    def closed(self, node_id, key):
        return [(e.code, e.reason) for e in self.cores[node_id].events
                if isinstance(e, ev.TunnelClosed) and e.key == key]

    def register(self, node_id, cluster):
        core = self.cores[node_id]
        core.node.set_time(self.now)
        core.register(cluster)
        self.run_until(self.now + 1.0)
        assert any(isinstance(e, ev.Joined) and e.name == cluster for e in core.events)

    def open(self, node_id, cluster, timeout):
        core = self.cores[node_id]
        core.node.set_time(self.now)
        return core.open_tunnel(cluster, timeout)


def test_an_opening_to_a_cluster_without_members_closes_with_no_members():
    """Whichever node is the root (the root parks the opening while it has only just become
    the root, then gives up), the opener hears NO_MEMBERS, once, long before its timeout."""
    pair = Pair()
    for opener in (A, B):
        key = pair.open(opener, "empty", timeout=30.0)
        pair.run_until(pair.now + 10.0)
        assert pair.closed(opener, key) == [(NO_MEMBERS, "no members in cluster")]


def test_an_opening_nobody_accepts_in_time_closes_with_timeout():
    """The opening travels too slowly: at its deadline the opener gives up (TIMEOUT). The
    member that accepts it afterwards is told the opener no longer knows it (LOST)."""
    pair = Pair()
    pair.register(B, "slow")
    pair.held = True
    key = pair.open(A, "slow", timeout=0.5)
    pair.run_until(0.5 + pair.now)
    assert pair.closed(A, key) == [(TIMEOUT, "tunnel open timed out")]
    pair.held = False
    pair.run_until(pair.now + 1.0)
    member_end = (key[0], other_end(key[1]))
    assert any(isinstance(e, ev.TunnelIncoming) and e.key == member_end
               for e in pair.cores[B].events)
    assert pair.closed(B, member_end) == [(LOST, "no such tunnel")]
    assert pair.closed(A, key) == [(TIMEOUT, "tunnel open timed out")]  # nothing more


def test_a_tunnel_limit_refuses_with_refused_at_either_end():
    full = MessagingConfig(max_tunnels=0)
    pair = Pair(b_config=full)
    key = pair.open(B, "any", timeout=5.0)  # refused at once, within the call
    assert pair.closed(B, key) == [(REFUSED, "too many tunnels")]
    pair.register(B, "busy")
    key = pair.open(A, "busy", timeout=5.0)
    pair.run_until(pair.now + 1.0)
    assert pair.closed(A, key) == [(REFUSED, "too many tunnels")]


def test_an_orderly_close_carries_ok_to_both_ends():
    pair = Pair()
    pair.register(B, "talk")
    key = pair.open(A, "talk", timeout=5.0)
    pair.run_until(pair.now + 0.1)
    assert any(isinstance(e, ev.TunnelOpened) and e.key == key for e in pair.cores[A].events)
    member_end = (key[0], other_end(key[1]))  # the member's end: named apart from the opener's
    pair.cores[B].tunnel_close(member_end, "done")
    sent = [msg for _, msg in pair.node(B).out if isinstance(msg, TunnelClose)]
    assert sent == [TunnelClose(*member_end, OK, "done")]
    pair.run_until(pair.now + 0.1)
    assert pair.closed(A, key) == pair.closed(B, member_end) == [(OK, "done")]
