"""Requests at both ends: the requester's pending requests and their deadlines, and the
member's admission of requests under its service limits and its replies.

The reply goes straight from the member to the requester. One timer, armed at the earliest
deadline still pending (`Deadlines`), turns silence into TIMEOUT; late and duplicate replies
are ignored.

The deadline travels with the request (`Request.time_left_ms`), so the member knows when its
caller gives up: a request that arrives past it, or waits past it in the service's queue, is
dropped unstarted (counted as `requests_expired`; no reply, nobody waits for one), and the
application is told each request's deadline. A member runs a request once, however many
copies of it the walk brought (`ARRIVED`).
"""

from __future__ import annotations

from iris.core import events as ev
from iris.core.messages import MAX_ERROR, OK, REFUSED, REMOTE_ERROR, TIMEOUT, Reply, Request
from iris.core.state import TK_REQUEST, CoreState, Service, cluster_group
from overlay.deadlines import Deadlines

ARRIVED = -1
"""The hop count under which a member records a request it was chosen for (`CoreState.
first_sight`; a walk's own records count hops from 0), so that no copy runs twice here."""


class Requests:
    __slots__ = ("state", "pending", "deadlines", "inbound")

    def __init__(self, state: CoreState) -> None:
        self.state = state
        self.pending: dict[int, float] = {}  # req_id -> deadline
        self.deadlines = Deadlines()  # one timer for every pending request
        self.inbound: dict[int, tuple[int, int, int]] = {}  # token -> (origin, req_id, group)

    # -------------------------------------------------------------------- requester side
    def request(self, cluster: str, payload: bytes, timeout: float) -> int:
        state = self.state
        req_id = state.new_id()
        if len(self.pending) >= state.config.max_pending_requests:
            state.events.append(ev.RequestDone(req_id, REFUSED, b"", "too many pending requests"))
            return req_id
        deadline = state.now + timeout
        self.pending[req_id] = deadline
        at = self.deadlines.add(deadline, req_id, self.pending)
        if at is not None:
            state.node.schedule(at, TK_REQUEST)
        group = cluster_group(cluster)
        state.node.route(group, Request(group, req_id, state.node.id, 0, payload,
                                        milliseconds(timeout)))
        return req_id

    def on_reply(self, src: int, msg: Reply) -> None:
        if self.pending.pop(msg.req_id, None) is None:
            self.state.count("late_replies")
            return
        self.state.events.append(ev.RequestDone(msg.req_id, msg.status, msg.payload, msg.error))

    def expire(self) -> None:
        """The request timer fired: every request past its deadline times out."""
        state = self.state
        expired, at = self.deadlines.expire(state.now, self.pending)
        for req_id in expired:
            del self.pending[req_id]
            state.events.append(ev.RequestDone(req_id, TIMEOUT, b"", "request timed out"))
        if at is not None:
            state.node.schedule(at, TK_REQUEST)

    # ----------------------------------------------------------------------- member side
    def arrive(self, msg: Request, service: Service, held: float) -> None:
        """The walk chose this node (after holding the request `held` seconds): admit the
        request under the service's limits, unless its caller has given up already."""
        state = self.state
        if not state.first_sight(msg.origin, msg.req_id, ARRIVED):
            # A copy that came by another way (a walk re-routed after a step whose
            # acknowledgement was lost, which counts its hops anew): run once per member.
            state.count("request_duplicate_dropped")
            return
        deadline = state.now + msg.time_left_ms / 1000 - held
        if deadline <= state.now:
            state.count("requests_expired")
            return
        admitted = service.requests.offer((msg, deadline), len(msg.payload))
        if admitted:
            self._hand_to_app(msg, deadline, service)
        elif admitted is None:
            self.state.count("requests_refused")
            self.state.node.send(msg.origin,
                                 Reply(msg.req_id, REFUSED, b"", "service limits exceeded"))

    def reply(self, token: int, payload: bytes = b"", error: str | None = None) -> None:
        origin, req_id, group = self.inbound.pop(token)
        status = OK if error is None else REMOTE_ERROR
        self.state.node.send(origin, Reply(req_id, status, payload if error is None else b"",
                                           (error or "")[:MAX_ERROR]))
        service = self.state.services.get(group)
        if service is not None:
            self._next_from_queue(service)

    def expired(self, token: int) -> None:
        """The application was handed a request too late to start it (its caller's deadline
        passed on the way): no reply, as for one dropped here; its slot goes to the next."""
        _, _, group = self.inbound.pop(token)
        self.state.count("requests_expired")
        service = self.state.services.get(group)
        if service is not None:
            self._next_from_queue(service)

    def _next_from_queue(self, service: Service) -> None:
        """A request of the service finished: hand over the queued ones its slot admits; one
        whose caller gave up while it waited is dropped, and its slot goes to the next."""
        state = self.state
        ready = service.requests.done()
        while ready:
            freed = 0
            for msg, deadline in ready:
                if deadline <= state.now:
                    state.count("requests_expired")
                    freed += 1
                else:
                    self._hand_to_app(msg, deadline, service)
            ready = [item for _ in range(freed) for item in service.requests.done()]

    def _hand_to_app(self, msg: Request, deadline: float, service: Service) -> None:
        """`msg` was admitted (it counts as in flight): the application gets it."""
        token = self.state.new_id()
        self.inbound[token] = (msg.origin, msg.req_id, msg.group)
        self.state.events.append(ev.RequestReceived(service.name, token, msg.payload, deadline))


MAX_TIME_LEFT_MS = 2**32 - 1


def milliseconds(seconds: float) -> int:
    """A time left as the wire carries it: whole milliseconds, at most ~49 days."""
    return max(0, min(MAX_TIME_LEFT_MS, round(seconds * 1000)))
