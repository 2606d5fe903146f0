"""The link policy: what the protocol decides about the links between nodes.

Moving bytes is the driver's job; deciding what a link does is protocol, and it lives here,
sans-IO, so that every driver (the trio runtime, the simulator) runs the same rules. This is the
seam for the decisions that make real failures behave: which frames go ahead of others on a
link, and, as that work lands, when a link is declared dead, closed and redialled (a stalled
TCP connection, not a dropped message, is what a partition looks like on real machines).

Decided today: the priority of each outgoing frame. Overlay maintenance (probes, heartbeats,
joins, hop acknowledgements, table repair) is CONTROL and goes ahead of BULK (everything
routed or sent for the layers above) on the same link. A heartbeat or an acknowledgement stuck
behind megabytes of application data would make a live peer look dead: suspected, probed,
declared failed, its routes re-sent, on a link that is only busy.

The decision is taken from the message class, one entry per overlay message, so that a new
message gets its priority by a choice written here, not by where its type code falls.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

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
    # Carriers of the layers above, and the simulator's stand-in for their traffic.
    m.Route: BULK,
    m.Direct: BULK,
    m.Lookup: BULK,
}
"""The priority of every overlay message; any other class (the messaging layer's) is BULK."""


class LinkPolicy:
    """The rules a driver follows for its links; see the module docstring."""

    def priority(self, msg: Message) -> Priority:
        """Whether `msg` goes ahead of bulk frames on its link (CONTROL) or in turn (BULK)."""
        return PRIORITY_OF.get(type(msg), BULK)
