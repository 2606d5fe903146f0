"""The overlay's wire messages (type codes 1-31).

Node lists travel as ids only; the real runtime's link layer resolves ids to addresses.
"""

from __future__ import annotations

from overlay.wire import (
    BOOL,
    ID,
    NESTED,
    U32,
    U64,
    Message,
    ids,
    number,
    optional,
    records,
    text,
    uint,
    uints,
    wire_message,
)

MAX_LIST = 64  # a leaf set (<= 32) or a routing-table row (16) plus slack
MAX_HOPS = 255
MAX_ACKS = 1024  # sequence numbers one RouteAck may carry


NO_FAILURE = 0xFFFF  # `Heartbeat.failure_age` of a sender that saw no failure that recently


@wire_message(1, ids(MAX_LIST), uint(NO_FAILURE))
class Heartbeat(Message):
    """Sent to each immediate neighbour every heartbeat interval; carries the sender's leaf
    set so that neighbours learn of nodes they miss (concurrent joins, merges), and how many
    seconds ago it last saw or heard of a failure (`NO_FAILURE`: none within that), so that
    they sweep their tables too (`OverlayNode._failure_noticed`)."""

    leaf: tuple[int, ...]
    failure_age: int = NO_FAILURE


MAX_RTT_US = 3_600_000_000  # an hour, in microseconds


@wire_message(2, U64, BOOL, BOOL, uint(32))
class Ping(Message):
    """Liveness and round-trip probe. `want_leaf` asks for the leaf set in the answer;
    `want_row`, if not 0, for table row `want_row - 1` (a routing-table entry probed for
    liveness also offers its row's nodes as candidates: `overlay.proximity`)."""

    seq: int
    want_leaf: bool
    active: bool
    want_row: int = 0


@wire_message(3, U64, BOOL, optional(ids(MAX_LIST)), ids(16), uints(16, MAX_RTT_US),
              uint(MAX_RTT_US))
class Pong(Message):
    """The answer to `seq`; `row` and `rtts` as in `RowReply` when asked for a row.

    `cell_us` is what the prober's `Hello` would have to beat: the round trip (microseconds,
    plus 1) the answering node holds for the table cell the prober falls in, or 0 when it
    would take the prober whatever the round trip (an empty cell, an entry not measured, a
    place in its leaf set). A prober that takes the answering node into its table greets it
    only when its own round trip is nearer (`OverlayNode._adopted`)."""

    seq: int
    active: bool
    leaf: tuple[int, ...] | None
    row: tuple[int, ...] = ()
    rtts: tuple[int, ...] = ()
    cell_us: int = 0


@wire_message(4, ID)
class JoinRequest(Message):
    """Asks a node to route a join (or a ring-merge lookup) toward `joiner`'s id."""

    joiner: int


@wire_message(5, ids(MAX_LIST * 2), optional(ids(MAX_LIST)))
class JoinReply(Message):
    """Sent straight to the joiner by every node on the join route: its table rows that
    matter to the joiner; the root (the last node) also sends its leaf set."""

    nodes: tuple[int, ...]
    leaf: tuple[int, ...] | None


@wire_message(6, number(3600.0))
class Hello(Message):
    """A node that just became active announces itself; `rtt` is the round trip it measured
    to the receiver (0 if none), so the receiver can weigh it for its routing table."""

    rtt: float


@wire_message(7)
class Leave(Message):
    """Graceful departure: the receiver drops the sender at once."""


@wire_message(8, ID, BOOL)
class Departed(Message):
    """`node` was found dead by the sender; the receiver verifies before it forgets it.

    `held`: passed on by a node that held `node` in its routing table, to its own table
    entries (which are likely to hold it too) and leaf set (`OverlayNode._tell_holders`); a
    receiver that does not hold it does nothing at all."""

    node: int
    held: bool = False


@wire_message(9, uint(31))
class RowRequest(Message):
    """Lazy routing-table repair: asks for the receiver's table row `row`."""

    row: int


@wire_message(10, uint(31), ids(16), uints(16, MAX_RTT_US))
class RowReply(Message):
    """The sender's table row `row`, with the round trip it measured to each node, in
    microseconds (0: not measured), in the same order. The round trips let a node searching
    for nearer entries probe only the candidates likely to beat its own (`overlay.proximity`);
    a reply whose two lists differ in length is taken without them."""

    row: int
    nodes: tuple[int, ...]
    rtts: tuple[int, ...]


@wire_message(11, ID, U64, ID, uint(MAX_HOPS), NESTED)
class Route(Message):
    """A message routed toward `key`; every hop acknowledges `seq` to the previous hop."""

    key: int
    seq: int
    origin: int
    hops: int
    payload: Message


@wire_message(12, uints(MAX_ACKS))
class RouteAck(Message):
    """Acknowledges hops (`Route`) and `Direct` messages by their sequence numbers. A core
    acknowledges each message on its own; a driver that hands a core a whole batch of frames
    may merge the acknowledgements for one peer into a single message."""

    seqs: tuple[int, ...]


@wire_message(13, ID, U32)
class Lookup(Message):
    """A bare routed probe used by the simulator's checkers and benchmarks."""

    requester: int
    tag: int


@wire_message(14, U64, NESTED)
class Direct(Message):
    """A point-to-point message the receiver acknowledges (`RouteAck`), for the layer
    above when it must know that a specific peer got it."""

    seq: int
    payload: Message


@wire_message(15, records(256, ID, text(255), uint(65535)))
class Addresses(Message):
    """Link layer only (never reaches a core): where the nodes named in the next frames
    listen, so the receiver can reach every node id it is told about."""

    entries: tuple[tuple[int, str, int], ...]


@wire_message(17)
class LinkClose(Message):
    """Link layer only: the sender writes nothing more on this connection. Sent first by the
    side that closes an idle link, then by the other side, after everything it had queued: a
    connection ends only once both have said it, so no frame is in flight when it does."""
