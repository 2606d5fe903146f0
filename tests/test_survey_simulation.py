"""Surveys in the simulator (`iris.core.survey`): every member answers once, the count is
exact on a stable ring, failures count as not answered, the bounds hold, and the wire
messages are validated."""

import json

import msgpack
import pytest

import iris.core.messages as im
from iris.core import NO_MEMBERS, OK
from overlay.wire import WIRE_VERSION, DecodeError, decode, encode
from simulations.messaging import MessagingOptions
from simulations.survey import BIG, SMALL, _survey_ring, run_surveys
from simulations.survey_workload import SurveyWorkload


def ring(nodes=80, seed=21):
    sim, work, surveys, result = _survey_ring("test", MessagingOptions(nodes=nodes, seed=seed))
    assert result["graft_s"] is not None
    return sim, work, surveys


def last(surveys: SurveyWorkload, cluster: str):
    return [r for r in surveys.records.values() if r.cluster == cluster][-1]


def test_every_member_answers_each_survey_once_with_one_message_per_edge_and_direction():
    sim, work, surveys = ring()
    run_surveys(sim, surveys, 20, 10.0)
    sim.run_for(8.0)
    r = surveys.summary()
    assert r["surveys"] == 20 and r["survey_ok"] == 20
    assert r["survey_complete_ratio"] == 1.0 and r["survey_in_time_ratio"] == 1.0
    assert r["survey_handler_duplicates"] == 0 and r["survey_answer_duplicates"] == 0
    assert r["survey_answers_from_strangers"] == 0 and r["survey_misdelivered"] == 0
    assert r["survey_edge_repeats"] == 0 and r["survey_final_batches_max"] == 1
    record = last(surveys, BIG)
    assert record.known == len(work.members[BIG]) == len(record.answers)


def test_a_crashed_member_is_reported_missing_within_the_deadline():
    sim, work, surveys = ring(seed=22)
    victim = sorted(work.members[SMALL])[0]
    sim.crash(victim)  # nobody has noticed yet: its tree parent finds out from the survey
    origin = next(n for n in sim.active if n not in work.members[SMALL])
    surveys.survey(origin, SMALL, timeout=3.0)
    sim.run_for(3.5)
    record = last(surveys, SMALL)
    assert record.status == OK and record.done_at is not None
    assert record.done_at - record.sent_at <= 3.0
    answered = {m for m, _ in record.answers}
    assert answered == work.members[SMALL] - {victim}
    assert record.known - len(answered) == 1  # one member missed, and the count says so


def test_a_member_that_gives_no_answer_counts_as_not_answered():
    sim, work, surveys = ring(seed=23)
    quiet = sorted(work.members[SMALL])[:2]
    surveys.unanswering.update(quiet)
    surveys.survey(sim.random_active(), SMALL, timeout=3.0)
    sim.run_for(3.5)
    record = last(surveys, SMALL)
    assert record.status == OK
    assert {m for m, _ in record.answers} == work.members[SMALL] - set(quiet)
    assert record.known == len(work.members[SMALL])


def test_a_cluster_without_members_gets_no_members_at_once():
    sim, work, surveys = ring(seed=24)
    work.members["nobody"] = set()
    surveys.survey(sim.random_active(), "nobody", timeout=30.0)
    sim.run_for(2.0)
    assert last(surveys, "nobody").status == NO_MEMBERS  # well before its timeout


def test_answers_beyond_the_byte_limit_are_left_out_and_flagged():
    sim, work, surveys = ring(seed=25)
    origin = sim.random_active()
    done = []

    def ask(node):
        node.set_time(sim.now)
        core = node.app
        core.surveys.trace = surveys._tracer(origin)
        sid = core.survey(BIG, (10**6).to_bytes(8, "big"), 3.0, max_bytes=24 * 5)
        done.append(sid)

    sim.call(origin, ask)
    got = []
    inner = sim.after_call

    def watch(node):
        for event in node.app.events:
            if type(event).__name__ == "SurveyDone" and node.id == origin:
                got.append(event)
        inner(node)

    sim.after_call = watch
    sim.run_for(3.5)
    (event,) = got
    assert event.status == OK and event.overflow
    assert len(event.answers) == 5  # 24 bytes each: five fit
    assert event.known == len(work.members[BIG])


def test_survey_messages_round_trip_and_bad_ones_are_refused():
    ask = im.SurveyAsk(1, 2, 3, 4000, 1024, b"q")
    answers = im.SurveyAnswers(2, 3, True, 5, False, ((7, b"a"), (8, b"")))
    assert decode(encode(ask)) == ask and decode(encode(answers)) == answers
    too_many = [[b"i" * 16, b""]] * (im.MAX_SURVEY_ANSWERS + 1)
    for body, reason in (
        ([WIRE_VERSION, 46, b"o" * 16, 1, True, 1, False, too_many], "at most"),
        ([WIRE_VERSION, 46, b"o" * 16, 1, 1, 1, False, []], "bool"),
        ([WIRE_VERSION, 46, b"o" * 16, 1, True, 1, False, [[b"short", b""]]], "16 bytes"),
        ([WIRE_VERSION, 45, b"g" * 16, b"o" * 16, 1, 2**32, 1, b""], "range"),
        ([WIRE_VERSION, 45, b"g" * 16, b"o" * 16, 1, 1, 1, "text"], "bytes"),
    ):
        with pytest.raises(DecodeError, match=reason):
            decode(msgpack.packb(body))


@pytest.mark.parametrize("scenario", ["survey", "survey-churn", "survey-partition",
                                      "survey --wire"])
def test_survey_scenarios_pass_their_checks(scenario, capsys):
    from simulations.cli import main

    main([*scenario.split(), "--nodes", "60", "--churn-s", "30", "--partition-s", "30",
          "--json"])
    result = json.loads(capsys.readouterr().out)
    assert result["checks_passed"], result
    assert result["survey_handler_duplicates"] == 0

