"""The link policy: what the protocol decides about the links between nodes.

Moving bytes is the driver's job; deciding what a link does is protocol, and it lives here,
sans-IO, so that every driver (the trio runtime, the simulator) runs the same rules. This is the
seam for the decisions that make real failures behave: which frames go ahead of others on a
link, and when a link is declared dead, closed and redialled (a stalled TCP connection, not a
dropped message, is what a partition looks like on real machines).

Link liveness: a peer the overlay declares failed (or gone) has its connection closed at once,
and the next frame for it dials a fresh one. A partition on real machines leaves the old
connection open with unsent and unacknowledged data, retransmitted at a doubling interval (an
RTO near a minute after one); kept in use after the heal, it delivered heartbeats tens of
seconds late and old events after new ones sent another way. A connection also ends when a
write is not taken from it for `stall_s`, and (where the OS has them) when sent data stays
unacknowledged for `user_timeout_s` (TCP_USER_TIMEOUT) or an idle connection stops answering
keep-alive probes. The overlay's own heartbeats and probes are the portable keep-alive: they
declare a silent peer failed, which closes its connection.

Idle links close by agreement: one side writes `LinkClose` as its last frame and keeps reading;
the other answers with its own after everything it had queued. Each side shuts its write side
once it has read the other's `LinkClose` and written its own, and the connection ends at the
other side's end of stream. Neither side writes on the connection after its `LinkClose`, so
nothing is in flight when it ends: no frame is lost the way one written into a connection the
peer is closing at that moment would be. Frames a side sends meanwhile wait for a fresh
connection, dialled only once the old one has ended, when the peer has read all that was
written on it (their order holds).

A hop given up is never delivered later: when a routed message's acknowledgement does not come
in time, the message goes another way, and a link to the old next hop that still holds data
the peer has not taken is reset, its backlog discarded. Otherwise a partition shorter than the
timeouts above leaves the hop in that backlog, delivered at the heal: the message is served
twice (in the simulator, up to 15 requests ran twice after a 12 s split of 20 nodes).

Priority of each outgoing frame: overlay maintenance (probes, heartbeats, joins, hop
acknowledgements, table repair) is CONTROL and goes ahead of BULK (everything
routed or sent for the layers above) on the same link. A heartbeat or an acknowledgement stuck
behind megabytes of application data would make a live peer look dead: suspected, probed,
declared failed, its routes re-sent, on a link that is only busy.

The decision is taken from the message class, one entry per overlay message, so that a new
message gets its priority by a choice written here, not by where its type code falls.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from overlay import messages as m
from overlay.wire import Message


class Priority(enum.Enum):
    CONTROL = "control"  # overlay maintenance: ahead of bulk on its link
    BULK = "bulk"  # routed and messaging traffic


CONTROL = Priority.CONTROL
BULK = Priority.BULK

PRIORITY_OF: Mapping[type[Message], Priority] = {
    # Failure detection and repair: late, they make live peers look dead.
    m.Heartbeat: CONTROL,
    m.Ping: CONTROL,
    m.Pong: CONTROL,
    m.Departed: CONTROL,
    m.RowRequest: CONTROL,
    m.RowReply: CONTROL,
    # Membership: joins and departures change every neighbour's state.
    m.JoinRequest: CONTROL,
    m.JoinReply: CONTROL,
    m.Hello: CONTROL,
    m.Leave: CONTROL,
    # Hop acknowledgements: late, they re-send routed messages and suspect the peer.
    m.RouteAck: CONTROL,
    # Where the nodes named in the next frames listen: it must not trail those frames.
    m.Addresses: CONTROL,
    # The last frame a side writes on a connection: after everything queued before it.
    m.LinkClose: BULK,
    # Carriers of the layers above, and the simulator's stand-in for their traffic.
    m.Route: BULK,
    m.Direct: BULK,
    m.Lookup: BULK,
}
"""The priority of every overlay message; any other class (the messaging layer's) is BULK."""


@dataclass
class LinkPolicy:
    """The rules a driver follows for its links; see the module docstring. Each number can be
    given as a keyword: `LinkPolicy(max_links=128)`."""

    stall_s: float = 10.0
    """A write the connection does not take for this long (the peer stopped acknowledging and
    the send buffer is full) closes it."""

    user_timeout_s: float = 10.0
    """TCP_USER_TIMEOUT: sent data unacknowledged this long aborts the connection. Ten seconds
    of silence is far beyond any round trip between nodes and well inside the overlay's own
    failure detection (12.5 s for a neighbour), so the connection is gone before the heal."""

    dial_timeout_s: float = 5.0
    """A connection not set up within this long is given up (what waited for it is dropped as
    a lost hop's frames are): across a cut the SYN gets no answer."""

    keepalive_idle_s: float = 5.0
    keepalive_interval_s: float = 2.0
    keepalive_count: int = 3
    """TCP keep-alive on an idle connection: probed after 5 s of silence, every 2 s, given up
    after 3 unanswered (an idle connection to a vanished peer ends within ~11 s)."""

    idle_close_s: float = 60.0
    """A connection that carried no frame either way for this long is closed, by agreement
    (`LinkClose`): a node talks to many peers once (the callers it answers, the subscribers
    it copies events to, the nodes it probes), and each connection kept holds a descriptor,
    buffers and two tasks. The next frame for the peer dials anew. Neighbours never go idle
    (heartbeats, probes)."""

    max_links: int = 512
    """At most this many connections are kept beyond a moment: the ones idle longest close
    first (by agreement, as above), whatever `idle_close_s` says. The trio runtime lowers it
    to a quarter of the descriptors the process may open (`iris.runtime.accept.link_share`),
    so the application and a relay's clients keep theirs."""

    close_wait_s: float = 10.0
    """A peer that does not answer our `LinkClose` within this long (a paused process) has
    the connection closed anyway, as a stalled write does (`stall_s`)."""

    def close_when_gone(self, peer: int) -> bool:
        """Whether the connection to a peer the overlay declared failed or gone is closed: always
        (its queued frames are lost as a lost hop's are, and re-sent another way)."""
        return True

    def reset_when_given_up(self, stalled: bool) -> bool:
        """Whether the link to a peer a hop was given up on (`OverlayNode.given_up`: its
        acknowledgement did not come, the message went another way) is reset: when it is
        `stalled`, still holding data the peer has not taken (frames queued or waiting for a
        dial, bytes the kernel has retransmitted in vain), since that data may hold the hop,
        delivered at the heal after its copy went another way. Reset means its backlog is
        discarded (an abortive close, RST, never the orderly one that delivers it first), with
        the frames queued behind the hop: lost hops, re-sent another way when their own
        acknowledgements do not come; the next frame dials a fresh connection. A link that
        took everything is kept: the hop reached the peer, and only its acknowledgement is
        late (a slow or paused peer, whose messages are told their age on arrival)."""
        return stalled

    def priority(self, msg: Message) -> Priority:
        """Whether `msg` goes ahead of bulk frames on its link (CONTROL) or in turn (BULK)."""
        return PRIORITY_OF.get(type(msg), BULK)
