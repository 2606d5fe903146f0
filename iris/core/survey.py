"""Surveys (scatter-gather): ask every member of a cluster and gather their answers, within a
deadline, up the cluster's tree.

The origin routes a `SurveyAsk` to the group's root. The root, and then every tree node that
gets the question, passes it along every tree edge but the one it came by (acknowledged: the
overlay probes a neighbour that does not acknowledge, and declares it failed if it is dead),
hands it to its own member, if it has one, and waits. Each tree node sends exactly one
`SurveyAnswers` batch back to the node it got the question from (the root: to the origin,
`final`), as soon as its member and every neighbour it asked have answered, or when its share of
the deadline runs out. A batch carries the answers of its subtree, (member node id, answer), and
`known`, the members the subtree knew of, answered or not; a neighbour that did not report in
time (dead, cut off, too slow) counts with the capacity its last tree beat reported (its
members, when each member node registers once), and so do children the node dropped as dead
recently, whose members are orphans until they graft again (`GroupTree.lost`); an orphan's graft
tells a new root how many it left behind (`Subscribe.orphans`). A new root that knows no tree
yet holds the question while it settles, as a walk does (`Walk._wait_for_members`). So the
origin gets one message, not one per member, and tells "every member answered"
(`len(answers) == known`) from "the deadline came first".

The deadline travels with the question (`SurveyAsk.time_left_ms`, counted from arrival as a
request's is): the root gets `survey_root_share` of the caller's timeout, and each node passes
its neighbours `survey_child_share` of what it has left, keeping the rest for their batches' way
back. A question that arrives with nothing left is dropped (its sender has reported without it);
an answer that comes after its node reported is not counted.

No member answers twice: each node remembers the surveys it has seen (the shared de-duplication
record, and the surveys in progress); a question that reaches a node a second time (a tree that
changed while it spread, a routed hop sent again) is answered at once with an empty batch, so
its sender does not wait for it and nothing is counted twice. A member is a node: a node with
several registrations of the cluster answers once.

Bounds: answers are at most `MAX_SURVEY_ANSWERS` and their bytes at most the survey's
`max_bytes` (at most `MAX_SURVEY_BYTES`); a node whose batch would go beyond leaves the rest out
and sets `overflow`, which the caller sees as `LimitExceededError`. Surveys in progress at a
node and surveys an origin waits for are bounded by `max_surveys` each.
"""

from __future__ import annotations

from collections.abc import Callable

from iris.core import events as ev
from iris.core.messages import (
    MAX_PAYLOAD,
    MAX_SURVEY_ANSWERS,
    NO_MEMBERS,
    OK,
    REFUSED,
    TIMEOUT,
    SurveyAnswers,
    SurveyAsk,
)
from iris.core.requests import milliseconds
from iris.core.state import TK_BITS, TK_SURVEY, CoreState, cluster_group

Answer = tuple[int, bytes]


class Visit:
    """One survey at one tree node: who to report to, who it waits for, what it gathered."""

    __slots__ = ("key", "vid", "group", "up", "final", "deadline", "waiting", "local_token",
                 "known", "answers", "nbytes", "max_bytes", "overflow")

    def __init__(self, key: tuple[int, int], vid: int, ask: SurveyAsk, up: int, final: bool,
                 deadline: float) -> None:
        self.key = key
        self.vid = vid
        self.group = ask.group
        self.up = up
        self.final = final
        self.deadline = deadline
        self.waiting: dict[int, int] = {}  # neighbour asked -> members it stands for
        self.local_token: int | None = None  # our member's answer is awaited
        self.known = 0
        self.answers: list[Answer] = []
        self.nbytes = 0
        self.max_bytes = ask.max_bytes
        self.overflow = False

    def add(self, member: int, data: bytes) -> None:
        if (len(self.answers) >= MAX_SURVEY_ANSWERS
                or self.nbytes + len(data) > self.max_bytes):
            self.overflow = True
            return
        self.answers.append((member, data))
        self.nbytes += len(data)


class Surveys:
    __slots__ = ("state", "pending", "visits", "by_vid", "tokens", "parked", "trace")

    def __init__(self, state: CoreState) -> None:
        self.state = state
        self.pending: dict[int, float] = {}  # sid -> deadline (surveys this node started)
        self.visits: dict[tuple[int, int], Visit] = {}  # (origin, sid) -> this node's part
        self.by_vid: dict[int, Visit] = {}  # timer ids
        self.tokens: dict[int, tuple[int, int]] = {}  # member token -> (origin, sid)
        self.parked: list[tuple[float, SurveyAsk]] = []  # at a new root: (since, question)
        # The simulator's checks see every survey message sent (None: nobody looks).
        self.trace: Callable[[int, SurveyAsk | SurveyAnswers], None] | None = None

    # ----------------------------------------------------------------------- origin side
    def survey(self, cluster: str, payload: bytes, timeout: float, max_bytes: int) -> int:
        """Ask every member of `cluster`; the outcome comes as `SurveyDone` with the id
        returned (perhaps within this call)."""
        state = self.state
        sid = state.new_id()
        if len(self.pending) >= state.config.max_surveys:
            state.events.append(ev.SurveyDone(sid, REFUSED, 0, (), False,
                                              "too many surveys in progress"))
            return sid
        deadline = state.now + timeout
        self.pending[sid] = deadline
        state.node.schedule(deadline, (sid << TK_BITS) | TK_SURVEY)
        group = cluster_group(cluster)
        share = timeout * state.config.survey_root_share
        ask = SurveyAsk(group, state.node.id, sid, milliseconds(share),
                        max(0, min(max_bytes, MAX_PAYLOAD)), payload)
        state.node.route(group, ask)  # (delivered within the call when we are the root)
        return sid

    def _done(self, msg: SurveyAnswers) -> None:
        """The root's batch reached the origin."""
        if self.pending.pop(msg.sid, None) is None:
            self.state.count("surveys_late")
            return
        status, error = OK, ""
        if msg.known == 0 and not msg.answers:
            status, error = NO_MEMBERS, "no members in cluster"
        self.state.events.append(ev.SurveyDone(msg.sid, status, msg.known, msg.answers,
                                               msg.overflow, error))

    def _expire_pending(self, sid: int) -> None:
        if self.pending.pop(sid, None) is not None:
            self.state.events.append(ev.SurveyDone(sid, TIMEOUT, 0, (), False,
                                                   "survey timed out"))

    # ------------------------------------------------------------------- tree node side
    def arrive(self, ask: SurveyAsk, src: int | None, parked_since: float | None = None) -> None:
        """The question reached this node: routed to us as the group's root (`src` None) or
        from the tree neighbour `src` (or it was parked here since `parked_since`)."""
        state = self.state
        key = (ask.origin, ask.sid)
        if parked_since is None and (
                key in self.visits or not state.first_sight(ask.origin, ask.sid, -1)):
            state.count("survey_duplicate_dropped")
            if src is not None:  # the sender waits for our batch: nothing to add
                self._send(src, SurveyAnswers(ask.origin, ask.sid, False, 0, False, ()))
            return
        held = state.arrival_age if parked_since is None else state.now - parked_since
        time_left = ask.time_left_ms / 1000 - held
        if time_left <= 0:
            state.count("surveys_expired")  # our sender has reported without us
            return
        tree = state.trees.get(ask.group)
        if src is None and tree is None and self._park(ask, parked_since):
            return
        up, final = (ask.origin, True) if src is None else (src, False)
        if tree is None or len(self.visits) >= state.config.max_surveys:
            if tree is not None:
                state.count("surveys_refused")
            known = 0 if tree is None else tree.weight
            self._report_batch(up, final, SurveyAnswers(ask.origin, ask.sid, final, known,
                                                        False, ()))
            return
        tree.busy_at = state.now  # no reshaping under it (`iris.core.reshape`)
        vid = state.new_id()
        visit = Visit(key, vid, ask, up, final, state.now + time_left)
        self.visits[key] = visit
        self.by_vid[vid] = visit
        state.node.schedule(visit.deadline, (vid << TK_BITS) | TK_SURVEY)
        onward = milliseconds(time_left * state.config.survey_child_share)
        if onward > 0:
            fwd = SurveyAsk(ask.group, ask.origin, ask.sid, onward, ask.max_bytes, ask.payload)
            for child, (weight, _) in tree.children.items():
                if child != src:
                    visit.waiting[child] = int(weight)
                    self._send(child, fwd, acked=True)
            parent = tree.parent
            if parent is not None and parent != src:
                visit.waiting[parent] = tree.up_weight
                self._send(parent, fwd, acked=True)
        else:  # no time for anyone else: what they stand for counts as not answered
            visit.known += sum(int(w) for c, (w, _) in tree.children.items() if c != src)
            if tree.parent is not None and tree.parent != src:
                visit.known += tree.up_weight
        visit.known += tree.lost_weight(state.now)  # orphans of dead children: not answering
        service = state.services.get(ask.group)
        if service is not None and tree.local:
            visit.known += 1
            token = visit.local_token = state.new_id()
            self.tokens[token] = key
            state.events.append(ev.SurveyReceived(service.name, token, ask.payload,
                                                  visit.deadline))
        self._check(visit)

    def _park(self, ask: SurveyAsk, parked_since: float | None) -> bool:
        """We are the group's root and know no tree. If we only just became the root (as
        for a walk: `Walk._wait_for_members`), the members' grafts are probably on their
        way: hold the question and try again shortly, within `root_settle_after_failure_s`
        and the survey's own time. True if parked."""
        state = self.state
        now, cfg = state.now, state.config
        since = now if parked_since is None else parked_since
        unsettled = now < state.settle_until or state.node.root_in_doubt(ask.group)
        left = ask.time_left_ms / 1000 - (now - since)
        retry = cfg.park_retry_s
        if (not unsettled or now - since >= cfg.root_settle_after_failure_s
                or left <= 2 * retry or len(self.parked) >= cfg.max_parked):
            return False
        if not self.parked:
            state.node.schedule(now + retry, TK_SURVEY)  # ident 0: the parked questions
        self.parked.append((since, ask))
        return True

    def release_parked(self) -> None:
        """Ask again the questions parked here, or route them on to the node that has become
        the root meanwhile (as `Walk.release_parked` does)."""
        parked, self.parked = self.parked, []
        state = self.state
        for since, ask in parked:
            if state.node.is_root(ask.group):
                self.arrive(ask, None, parked_since=since)
                continue
            onward = aged(ask, state.now - since)
            if onward is not None:
                state.node.route(ask.group, onward)
            else:
                state.count("surveys_expired")

    def answer(self, token: int, data: bytes | None) -> None:
        """Our member's answer (None: it gives none, as when its handler failed)."""
        key = self.tokens.pop(token, None)
        visit = self.visits.get(key) if key is not None else None
        if visit is None or visit.local_token != token:
            self.state.count("survey_answers_late")
            return
        visit.local_token = None
        if data is not None:
            visit.add(self.state.node.id, data)
        self._check(visit)

    def on_answers(self, src: int, msg: SurveyAnswers) -> None:
        if msg.final:
            if msg.origin == self.state.node.id:
                self._done(msg)
            return
        visit = self.visits.get((msg.origin, msg.sid))
        if visit is None or visit.waiting.pop(src, None) is None:
            self.state.count("survey_batches_late")
            return
        visit.known += msg.known
        visit.overflow |= msg.overflow
        for member, data in msg.answers:
            visit.add(member, data)
        self._check(visit)

    def lost(self, peer: int, msg: SurveyAsk) -> None:
        """`peer` did not acknowledge the question in time. It may be dead, or only slow (a
        loaded machine: a survey sends a question on every edge at once, and the
        acknowledgements of many come late together); the overlay now probes it. Its batch
        is still awaited, until the overlay declares it failed (`peer_failed`) or our share
        of the deadline runs out: giving up at once lost the answers of live subtrees (110
        nodes in one process: most of a 100-member tree), and dropping the neighbour from the
        tree, as a lost walk step does, tore the tree down."""
        self.state.count("survey_asks_unacknowledged")

    def peer_failed(self, peer: int) -> None:
        for visit in [v for v in self.visits.values() if peer in v.waiting]:
            self._give_up_on(visit, peer)

    def timer(self, ident: int) -> None:
        """A survey's deadline: the origin's (it gives up) or a visit's (report now); or
        (ident 0, no id is) the parked questions' next try."""
        if ident == 0:
            self.release_parked()
        elif ident in self.pending:
            self._expire_pending(ident)
        elif (visit := self.by_vid.get(ident)) is not None:
            self.state.count("survey_batches_cut_short")
            self._report(visit)

    # -------------------------------------------------------------------------- helpers
    def _give_up_on(self, visit: Visit, peer: int) -> None:
        weight = visit.waiting.pop(peer, None)
        if weight is not None:
            visit.known += weight
            self._check(visit)

    def _check(self, visit: Visit) -> None:
        if not visit.waiting and visit.local_token is None:
            self._report(visit)

    def _report(self, visit: Visit) -> None:
        """Send this node's one batch: everything gathered, and every neighbour still
        awaited (and our member, if it has not answered) counted as not answered."""
        del self.visits[visit.key]
        del self.by_vid[visit.vid]
        if visit.local_token is not None:
            self.tokens.pop(visit.local_token, None)
            self.state.count("survey_answers_late")
        visit.known += sum(visit.waiting.values())
        origin, sid = visit.key
        self._report_batch(visit.up, visit.final, SurveyAnswers(
            origin, sid, visit.final, visit.known, visit.overflow, tuple(visit.answers)))

    def _report_batch(self, up: int, final: bool, msg: SurveyAnswers) -> None:
        if final and up == self.state.node.id:
            if self.trace is not None:
                self.trace(up, msg)
            self._done(msg)
        else:
            self._send(up, msg)

    def _send(self, peer: int, msg: SurveyAsk | SurveyAnswers, acked: bool = False) -> None:
        if self.trace is not None:
            self.trace(peer, msg)
        if acked:
            self.state.node.send_acked(peer, msg)
        else:
            self.state.node.send(peer, msg)


def aged(msg: SurveyAsk, seconds: float) -> SurveyAsk | None:
    """`msg` waited `seconds` for a hop that did not acknowledge it: what it has left less
    that (None: nothing left, it goes no further)."""
    left = msg.time_left_ms - round(seconds * 1000)
    if left <= 0:
        return None
    return SurveyAsk(msg.group, msg.origin, msg.sid, left, msg.max_bytes, msg.payload)
