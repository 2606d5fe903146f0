"""Surveys in the simulator: the scripted members' answers and the exact scoring of every
survey (`iris.core.survey`).

It rides on a `MessagingWorkload` (memberships, grafts): it takes the survey events out of
each node's events before the messaging workload drains the rest. Every member answers a
question at once with its own id and the survey's tag (the question carries the tag), so the
scoring knows, for every survey:

- who was asked: the live members grafted when it was sent (`expected`);
- who answered, and how often (a member's handler run twice for one survey is a duplicate);
- what the origin got: its status, the members it says answered, and `known`;
- every survey message sent, by (survey, sender, receiver): a tree edge carries at most one
  message each way (the question down, the batch up); the root's one batch to the origin is
  counted on its own (the origin may be a tree neighbour of the root as well).

Checks (`simulations.survey`) compare these: on a stable ring every expected member answered,
once, the count is exact and each edge carried one message a way; under churn every answer
the origin got is from a member that ran its handler for that survey (live, a member when it
answered), and the count never hides a missed member (`known - answered >= expected members
that did not answer`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from iris.core import OK, TIMEOUT, MessagingCore
from iris.core import events as ev
from iris.core.messages import SurveyAnswers, SurveyAsk
from overlay.node import OverlayNode
from simulations.engine import Simulation
from simulations.messaging_workload import MessagingWorkload, core_of


@dataclass
class SurveyRecord:
    origin: int
    cluster: str
    tag: int
    sent_at: float
    timeout: float
    expected: set[int]  # live members grafted and reachable from the origin when it was sent
    sid: int = -1
    status: int | None = None
    done_at: float | None = None
    known: int = 0
    answers: tuple[tuple[int, bytes], ...] = ()
    overflow: bool = False
    handled: Counter[int] = field(default_factory=Counter)  # member -> handler runs
    members_when_handled: set[int] = field(default_factory=set)  # handled by a member then


class SurveyWorkload:
    def __init__(self, sim: Simulation, work: MessagingWorkload) -> None:
        self.sim = sim
        self.work = work
        self.records: dict[int, SurveyRecord] = {}  # by tag
        self._by_sid: dict[tuple[int, int], SurveyRecord] = {}  # (origin, sid)
        self.edges: Counter[tuple[int, int, int, int]] = Counter()  # (origin, sid, src, dst)
        self.finals: Counter[tuple[int, int]] = Counter()  # (origin, sid): roots' batches
        self.misdelivered = 0  # questions handled outside their cluster, answers of strangers
        self.unanswering: set[int] = set()  # members that give no answer (a failing handler)
        self._tag = 0
        self._inner = sim.after_call
        sim.after_call = self._drain

    # ------------------------------------------------------------------------ plumbing
    def _drain(self, node: OverlayNode) -> None:
        app = node.app
        if isinstance(app, MessagingCore):
            if app.surveys.trace is None:
                app.surveys.trace = self._tracer(node.id)
            if app.events:
                rest = []
                for event in app.events:
                    if isinstance(event, ev.SurveyReceived):
                        self._on_question(node.id, app, event)
                    elif isinstance(event, ev.SurveyDone):
                        self._on_done(node.id, event)
                    else:
                        rest.append(event)
                app.events = rest
        if self._inner is not None:
            self._inner(node)

    def _tracer(self, me: int) -> Callable[[int, SurveyAsk | SurveyAnswers], None]:
        edges, finals = self.edges, self.finals

        def sent(dst: int, msg: SurveyAsk | SurveyAnswers) -> None:
            if isinstance(msg, SurveyAnswers) and msg.final:
                finals[(msg.origin, msg.sid)] += 1  # to the caller: not a tree edge's
            else:
                edges[(msg.origin, msg.sid, me, dst)] += 1

        return sent

    # ------------------------------------------------------------------------ members
    def _on_question(self, me: int, core: MessagingCore, event: ev.SurveyReceived) -> None:
        tag = int.from_bytes(event.payload[:8], "big")
        record = self.records.get(tag)
        if record is None or record.cluster != event.cluster:
            self.misdelivered += 1
        else:
            record.handled[me] += 1
            if me in self.work.members.get(event.cluster, ()):
                record.members_when_handled.add(me)
            else:
                self.misdelivered += 1
        if me in self.unanswering:
            core.survey_answer(event.token, None)
        else:
            core.survey_answer(event.token, event.payload[:8] + me.to_bytes(16, "big"))

    def _on_done(self, me: int, event: ev.SurveyDone) -> None:
        record = self._by_sid.pop((me, event.sid), None)
        if record is None:
            self.misdelivered += 1
            return
        record.status = event.status
        record.done_at = self.sim.now
        record.known = event.known
        record.answers = event.answers
        record.overflow = event.overflow

    # ------------------------------------------------------------------------ actions
    def survey(self, origin: int, cluster: str, timeout: float = 5.0) -> None:
        self._tag += 1
        tag = self._tag
        live = self.sim.nodes
        expected = {m for m in self.work.members.get(cluster, ())
                    if m in live and self.work.grafted(m, cluster, False)
                    and self.sim.reachable(origin, m)}
        record = SurveyRecord(origin, cluster, tag, self.sim.now, timeout, expected)
        self.records[tag] = record

        def ask(node: OverlayNode) -> None:
            node.set_time(self.sim.now)
            core = core_of(node)
            if core.surveys.trace is None:
                core.surveys.trace = self._tracer(origin)
            record.sid = core.survey(cluster, tag.to_bytes(8, "big"), timeout)
            self._by_sid[(origin, record.sid)] = record

        self.sim.call(origin, ask)

    # ------------------------------------------------------------------------ scoring
    def summary(self, since: float = -1.0, until: float = float("inf")) -> dict[str, Any]:
        """Figures over the surveys sent in [since, until) whose origin is still alive."""
        live = self.sim.nodes
        records = [r for r in self.records.values()
                   if since <= r.sent_at < until and r.origin in live]
        complete = ok = timed_out = in_time = exact_count = hidden = strangers = 0
        answer_dups = handler_dups = missed = reported_missed = 0
        latencies: list[float] = []
        for r in records:
            handler_dups += sum(n - 1 for n in r.handled.values() if n > 1)
            if r.status is None:
                continue
            if r.status == TIMEOUT:
                timed_out += 1
                continue
            if r.status != OK:
                continue
            ok += 1
            assert r.done_at is not None
            latencies.append(r.done_at - r.sent_at)
            in_time += r.done_at <= r.sent_at + r.timeout
            members = [int.from_bytes(data[8:24], "big") for _, data in r.answers]
            senders = [m for m, _ in r.answers]
            answer_dups += len(senders) - len(set(senders))
            # Every answer is from a member that ran its handler for this survey, and says so.
            strangers += sum(1 for m, who in zip(senders, members, strict=True)
                             if m != who or m not in r.members_when_handled)
            got = set(senders)
            unanswered = len(r.expected - got)
            missed += unanswered
            reported_missed += r.known - len(got)
            hidden += r.known - len(got) < unanswered  # the count hid a missed member
            exact_count += r.known == len(r.expected)
            complete += got == r.expected and r.known == len(r.expected)
        sids = {(r.origin, r.sid) for r in records}
        edge_repeats = sum(n - 1 for (origin, sid, _, _), n in self.edges.items()
                           if n > 1 and (origin, sid) in sids)
        latencies.sort()
        count = len(records)
        return {
            "surveys": count,
            "survey_ok": ok,
            "survey_timeouts": timed_out,
            "survey_unresolved": sum(1 for r in records if r.status is None),
            "survey_complete_ratio": complete / count if count else 1.0,
            "survey_in_time_ratio": in_time / count if count else 1.0,
            "survey_count_exact_ratio": exact_count / count if count else 1.0,
            "survey_answer_duplicates": answer_dups,
            "survey_handler_duplicates": handler_dups,
            "survey_answers_from_strangers": strangers,
            "survey_misdelivered": self.misdelivered,
            "survey_missed": missed,
            "survey_missed_reported": reported_missed,
            "survey_missed_hidden": hidden,
            "survey_edge_repeats": edge_repeats,
            "survey_final_batches_max": max((self.finals[s] for s in sids), default=0),
            "survey_p50_s": _quantile(latencies, 0.5),
            "survey_p99_s": _quantile(latencies, 0.99),
        }


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 4)
