"""The messaging layer's wire messages (type codes 32-63; surveys 45-46; direct publish 47-48;
floods sent again 50).

Trees (one per cluster or topic, rooted at the node closest to the group id) are built by
routed `Subscribe`s and kept alive by aggregated `TreeUp` / `TreeDown` beats between tree
neighbours. Requests and tunnel openings are routed toward the group and then walked through
the tree to one member; broadcasts and publishes are routed to the tree and flooded along it;
a survey's question is routed to the group's root, flooded down the tree, and its answers are
gathered back up it, one batch per tree edge.
"""

from __future__ import annotations

from iris.core.tunnel_flow import CHUNK
from overlay.wire import (
    BOOL,
    ID,
    U32,
    U64,
    Message,
    blob,
    blobs,
    ids,
    records,
    text,
    uint,
    wire_message,
)

MAX_PAYLOAD = 8 * 1024 * 1024  # one request, reply, broadcast or event
MAX_FLOOD_BATCH = 256  # events of one publisher and topic carried by one Flood
MAX_ANCESTORS = 16  # path to the root carried for loop avoidance
MAX_TREE_ENTRIES = 4096  # groups in one aggregated beat
MAX_WALK_HOPS = 64
MAX_ERROR = 1024

# Outcome codes: the status of a request (`Reply`, `RequestDone`) and the code of a tunnel's
# close (`TunnelClose`, `TunnelClosed`) share one numbering, so one table in the runtime turns
# either into the application's error, and no one reads the reason text to tell them apart.
OK = 0  # a reply; a tunnel closed in order by one end's application
REMOTE_ERROR = 1  # the member's handler failed
NO_MEMBERS = 2  # the walk found no member of the group
REFUSED = 3  # a limit refused it (a service's limits, pending requests, tunnels)
TIMEOUT = 4  # no answer in time (decided by the waiting end: never sent)
BROKEN = 5  # a tunnel end broke the tunnel's rules (chunk order, framing, credit)
LOST = 6  # a tunnel's other end is gone (failed, unreachable, or no longer knows the tunnel)


@wire_message(32, ID, ID, U32, U32, U32)
class Subscribe(Message):
    """Routed toward `group`: `subscriber` asks to become a child of the first tree node on the
    way (or of the root); `weight` is the capacity of its subtree. `orphans`: the capacity of
    the rest of the tree beyond a parent it lost, not found again since (those members graft
    anew too; until they do, a new root counts them as not answering a survey). `cut_ms`: how
    long the sender has been without the parent it lost (0 on a first graft): the adopter
    sends it the tree's floods it passed in that time (`iris.core.replay`). Sent straight
    to a tree node, by a tree node weighing a move up the tree (`iris.core.reshape`): measure
    me, adopt me."""

    group: int
    subscriber: int
    weight: int
    orphans: int
    cut_ms: int = 0


@wire_message(33, ID, U32, ids(MAX_ANCESTORS))
class TreeAck(Message):
    """Parent to new child: you are grafted; `outside` is the capacity of the tree outside
    your subtree, `ancestors` my path to the root."""

    group: int
    outside: int
    ancestors: tuple[int, ...]


@wire_message(34, ID)
class Prune(Message):
    """Child to parent: drop me. Parent to child: you are not my child (graft again)."""

    group: int


@wire_message(49, ID)
class Moved(Message):
    """Child to parent: drop me, I moved up to one of your ancestors (`iris.core.reshape`).
    Unlike `Prune`, my subtree is still in the tree, outside yours now."""

    group: int


@wire_message(35, records(MAX_TREE_ENTRIES, ID, U32))
class TreeUp(Message):
    """Child to parent, every tree beat: (group, capacity of my subtree) for each shared tree."""

    entries: tuple[tuple[int, int], ...]


@wire_message(36, records(MAX_TREE_ENTRIES, ID, U32, ids(MAX_ANCESTORS)))
class TreeDown(Message):
    """Parent to child, every tree beat: (group, capacity outside your subtree, my path to
    the root) for each shared tree."""

    entries: tuple[tuple[int, int, tuple[int, ...]], ...]


@wire_message(37, ID, U64, ID, uint(MAX_WALK_HOPS), blob(MAX_PAYLOAD), U32)
class Request(Message):
    """A request to one member of `group`: routed to the tree, then walked to a member.
    `time_left_ms` is what its caller had left when the sender passed it on: each node counts
    its deadline from arrival, takes off what it held the request, and a member never starts
    one past it (its caller has given up)."""

    group: int
    req_id: int
    origin: int
    hops: int
    payload: bytes
    time_left_ms: int


@wire_message(38, U64, uint(3), blob(MAX_PAYLOAD), text(MAX_ERROR))
class Reply(Message):
    """Member to requester, direct. `status`: OK, REMOTE_ERROR, NO_MEMBERS or REFUSED."""

    req_id: int
    status: int
    payload: bytes
    error: str


MAX_AGE_MS = 3_600_000  # `Flood.age_ms` says no more than an hour


@wire_message(39, ID, ID, U64, blobs(MAX_FLOOD_BATCH, MAX_PAYLOAD), uint(MAX_AGE_MS))
class Flood(Message):
    """Broadcasts (cluster) or publishes (topic) of one origin: routed to the tree, then along
    every tree edge. They carry consecutive sequence numbers from `seq` on: (origin, seq)
    identifies the batch, so no node delivers it twice. A publisher's events queued within one
    turn of its loop travel as one batch, so routing, acknowledging and deduplicating are paid
    per batch, not per event. `age_ms`: how long it waited on its way into the tree (hops that
    did not acknowledge it), so that it is not sent again over a mended path once it is too old
    (`iris.core.replay`)."""

    group: int
    origin: int
    seq: int
    payloads: tuple[bytes, ...]
    age_ms: int = 0


@wire_message(50, ID, ID, U64, blobs(MAX_FLOOD_BATCH, MAX_PAYLOAD), uint(MAX_AGE_MS))
class Replayed(Flood):
    """A `Flood` sent again over a mended tree path (`iris.core.replay`), and passed along the
    tree as such: spread, delivered and recorded as any flood. Its `age_ms` is how long ago it
    passed the node that sent it again, so each node keeps it as of then, and what comes again,
    however often, was first passed at most `replay_s` before."""


@wire_message(47, ID, ID, U64, U64, blobs(MAX_FLOOD_BATCH, MAX_PAYLOAD))
class DirectFlood(Message):
    """Publisher to subscriber, direct: a copy of a `Flood` it also sent into the topic's tree
    (`iris.core.direct`). `prev` is the last seq of the publisher's previous `Flood` to the
    topic: the subscriber delivers the copy only if that is the latest it delivered from the
    publisher there, so the copy can never overtake an older event; otherwise it waits for the
    tree's."""

    group: int
    origin: int
    seq: int
    prev: int
    payloads: tuple[bytes, ...]


@wire_message(48, ID, BOOL)
class DirectSubscribe(Message):
    """Subscriber to publisher, direct: send me (`on`), or stop sending me (not `on`), copies
    of your events to `group`."""

    group: int
    on: bool


TUNNEL_ACCEPTOR = 1 << 63
"""Set in the tunnel id of a tunnel's member end (`iris.core.tunnels.TunnelKey`): every tunnel
message names the end that sent it. Tunnel ids are drawn from a counter: they never reach it."""


def other_end(tid: int) -> int:
    """The id of the end a tunnel message is for, from the id of the end that sent it."""
    return tid ^ TUNNEL_ACCEPTOR


def tunnel_of(key: tuple[int, int]) -> tuple[int, int]:
    """The key of the opener's end of the tunnel that `key` names an end of: the tunnel's."""
    return key[0], key[1] & ~TUNNEL_ACCEPTOR


@wire_message(40, ID, ID, U64, uint(MAX_WALK_HOPS), U32)
class TunnelOpen(Message):
    """Opens a tunnel to one member of `group` (walked like a request); `window` is the
    opener's receive window in bytes."""

    group: int
    opener: int
    tid: int
    hops: int
    window: int


@wire_message(41, ID, U64, U32)
class TunnelAccept(Message):
    """Member to opener: the tunnel is open; `window` is the member's window. (In every tunnel
    message (opener, tid) names the end that sent it: see `TUNNEL_ACCEPTOR`.)"""

    opener: int
    tid: int
    window: int


@wire_message(42, ID, U64, U64, U64, blob(CHUNK))
class TunnelData(Message):
    """One chunk, in order (`seq` counts chunks). The first chunk of a message carries the
    message's total size, later chunks carry 0."""

    opener: int
    tid: int
    seq: int
    total: int
    chunk: bytes


@wire_message(43, ID, U64, U64)
class TunnelCredit(Message):
    """The receiver consumed `amount` bytes: the sender may send that much more (0: a
    keep-alive)."""

    opener: int
    tid: int
    amount: int


@wire_message(44, ID, U64, uint(LOST), text(MAX_ERROR))
class TunnelClose(Message):
    """Either end, or the walk that found no member (naming the member end): closed;
    `code` says why (OK, NO_MEMBERS, REFUSED, BROKEN or LOST), `reason` in words."""

    opener: int
    tid: int
    code: int
    reason: str


# ------------------------------------------------------------------------------ surveys
MAX_SURVEY_ANSWERS = 65_536  # answers one survey gathers (one per member node), at most
MAX_SURVEY_BYTES = MAX_PAYLOAD  # bytes of answers one survey gathers, at most


@wire_message(45, ID, ID, U64, U32, U32, blob(MAX_PAYLOAD))
class SurveyAsk(Message):
    """A survey's question to every member of `group`: routed to the group's root, then sent
    along every tree edge (acknowledged) but the one it came by. (origin, sid) names the
    survey. `time_left_ms` is how long the receiver has, counted from arrival, before it must
    send its batch of answers back to the node it got the question from; it passes its
    children a share of it (`iris.core.survey`). A question that arrives with nothing left is
    dropped: its sender has reported without it. `max_bytes` bounds the answers' bytes."""

    group: int
    origin: int
    sid: int
    time_left_ms: int
    max_bytes: int
    payload: bytes


@wire_message(46, ID, U64, BOOL, U32, BOOL, records(MAX_SURVEY_ANSWERS, ID, blob(MAX_PAYLOAD)))
class SurveyAnswers(Message):
    """One tree node's batch for a survey, sent once to the node it got the question from
    (`final`: from the root to the survey's origin). `known`: members the subtree knew of
    (answered or not); `answers`: (member node id, answer) of those that answered; `overflow`:
    answers were left out to keep the survey within its byte or member bound."""

    origin: int
    sid: int
    final: bool
    known: int
    overflow: bool
    answers: tuple[tuple[int, bytes], ...]
