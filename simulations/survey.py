"""Survey scenarios: ask every member of a large cluster, on a stable ring, under churn and
across a partition, and score every survey exactly (`simulations.survey_workload`).

One cluster of `SURVEY_MEMBERS` members (200, or every node of a smaller ring) and one of
`SMALL_MEMBERS`; `SURVEYS` surveys from random nodes at `SURVEY_RATE` per simulated second,
each with a `SURVEY_TIMEOUT_S` deadline.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from simulations import timeline
from simulations.engine import Simulation
from simulations.messaging import _finish, _messaging_options, make_messaging_sim
from simulations.messaging_workload import MessagingWorkload
from simulations.report import Check, judge
from simulations.scenarios import ScenarioOptions, base_result, build_ring
from simulations.survey_workload import SurveyWorkload

SURVEY_MEMBERS = 200
SMALL_MEMBERS = 10
SURVEYS = 200
SURVEY_RATE = 10.0
SURVEY_TIMEOUT_S = 5.0
BIG, SMALL = "survey-big", "survey-small"

NO_DUPLICATES = (
    Check("survey_handler_duplicates", "==", 0, "members that answered one survey twice"),
    Check("survey_answer_duplicates", "==", 0, "members listed twice in one survey's answers"),
    Check("survey_answers_from_strangers", "==", 0,
          "answers from a node that did not answer that survey as a member"),
    Check("survey_misdelivered", "==", 0, "questions handled outside their cluster"),
)


def _survey_ring(name: str, options: ScenarioOptions
                 ) -> tuple[Simulation, MessagingWorkload, SurveyWorkload, dict[str, Any]]:
    opts = _messaging_options(options)
    sim, work = make_messaging_sim(opts)
    surveys = SurveyWorkload(sim, work)
    result = base_result(name, opts)
    build_ring(sim, opts)
    timeline.phase(sim, "grouping")
    ids = list(sim.active)
    big = sim.rng.sample(ids, min(SURVEY_MEMBERS, len(ids)))
    for node in big:
        work.register(node, BIG)
    for node in sim.rng.sample(ids, min(SMALL_MEMBERS, len(ids))):
        work.register(node, SMALL)
    result["survey_members"] = len(big)
    result["graft_s"] = sim.run_until(work.all_grafted, timeout=60.0, check_every=0.5)
    sim.run_for(2 * work.core(ids[0]).config.tree_beat_s)  # capacities known up the tree
    return sim, work, surveys, result


def run_surveys(sim: Simulation, surveys: SurveyWorkload, count: int, rate: float,
                clusters: tuple[str, ...] = (BIG, SMALL)) -> None:
    """`count` surveys at `rate` from random live nodes, to the clusters in turn."""
    start = sim.now

    def ask(cluster: str) -> None:
        surveys.survey(sim.random_active(), cluster, SURVEY_TIMEOUT_S)

    for i in range(count):
        sim.at(start + i / rate, functools.partial(ask, clusters[i % len(clusters)]))


def scenario_survey(opts: ScenarioOptions) -> dict[str, Any]:
    """Stable ring: every member of every survey answers once, within the deadline."""
    wall = time.perf_counter()
    sim, work, surveys, result = _survey_ring("survey", opts)
    start = sim.now
    run_surveys(sim, surveys, SURVEYS, SURVEY_RATE)
    timeline.phase(sim, "surveying", until=start + SURVEYS / SURVEY_RATE + SURVEY_TIMEOUT_S)
    sim.run_until_time(start + SURVEYS / SURVEY_RATE + SURVEY_TIMEOUT_S + 1.0)
    result.update(surveys.summary())
    judge(result, (
        Check("survey_complete_ratio", "==", 1.0,
              "surveys in which every live member answered and the count was exact"),
        Check("survey_in_time_ratio", "==", 1.0, "surveys answered within their deadline"),
        *NO_DUPLICATES,
        Check("survey_edge_repeats", "==", 0,
              "survey messages beyond one per tree edge and direction"),
        Check("survey_final_batches_max", "==", 1, "batches a survey's origin got from roots"),
    ))
    return _finish(result, sim, wall)


def scenario_survey_churn(opts: ScenarioOptions) -> dict[str, Any]:
    """--churn-fraction of the nodes are replaced over --churn-s (a crash, and a new node
    takes over its memberships) while surveys run: every answer is from a live member, none
    twice, and the count never hides a live member that did not answer."""
    wall = time.perf_counter()
    options = _messaging_options(opts)
    sim, work, surveys, result = _survey_ring("survey-churn", options)
    span = options.churn_s
    victims = int(options.nodes * options.churn_fraction)

    def replace() -> None:
        victim = sim.random_active()
        clusters = [c for c, members in work.members.items() if victim in members]
        for c in clusters:
            work.members[c].discard(victim)
        sim.crash(victim)
        newcomer = sim.add_node()

        def take_over() -> None:
            if newcomer in sim.active:
                for c in clusters:
                    work.register(newcomer, c)
            elif newcomer in sim.nodes:
                sim.at(sim.now + 0.5, take_over)

        sim.at(sim.now + 0.5, take_over)

    start = sim.now
    for i in range(victims):
        sim.at(start + span * (i + 0.5) / victims, replace)
    run_surveys(sim, surveys, SURVEYS, SURVEYS / span)
    timeline.phase(sim, "churning", until=start + span + SURVEY_TIMEOUT_S)
    sim.run_until_time(start + span + SURVEY_TIMEOUT_S + 1.0)
    result["churn_s"] = span
    result["replaced"] = victims
    result.update(surveys.summary())
    judge(result, (
        *NO_DUPLICATES,
        Check("survey_missed_hidden", "==", 0,
              "surveys whose count hid a live member that did not answer"),
        Check("survey_unresolved", "==", 0, "surveys without an outcome"),
    ))
    return _finish(result, sim, wall)


def scenario_survey_partition(opts: ScenarioOptions) -> dict[str, Any]:
    """Split in halves: surveys on each side reach only that side's members (none twice, the
    count hides none); after the heal and the trees' repair every survey is complete."""
    wall = time.perf_counter()
    options = _messaging_options(opts)
    sim, work, surveys, result = _survey_ring("survey-partition", options)
    ids = list(sim.active)
    sim.rng.shuffle(ids)
    halves = [ids[0::2], ids[1::2]]
    sim.partition(halves)
    timeline.phase(sim, "partitioned", until=sim.now + options.partition_s)
    sim.run_for(options.partition_s / 2)  # the cut is noticed, each side repairs its trees
    split_start = sim.now
    count = max(2, int(options.partition_s / 2 * SURVEY_RATE / 2))
    run_surveys(sim, surveys, count, SURVEY_RATE)
    sim.run_for(options.partition_s / 2)
    sim.heal()
    split = surveys.summary(since=split_start)
    for name in ("surveys", "survey_handler_duplicates", "survey_answer_duplicates",
                 "survey_answers_from_strangers", "survey_missed_hidden", "survey_ok"):
        result[f"split_{name}"] = split[name]
    timeline.phase(sim, "healing", until=sim.now + 30.0)
    sim.run_for(30.0)
    after = sim.now
    run_surveys(sim, surveys, 20, SURVEY_RATE)
    sim.run_for(20 / SURVEY_RATE + SURVEY_TIMEOUT_S + 1.0)
    result.update(surveys.summary(since=after))
    result["survey_misdelivered"] = surveys.misdelivered
    judge(result, (
        Check("split_survey_handler_duplicates", "==", 0,
              "members that answered one survey twice, during the split"),
        Check("split_survey_answers_from_strangers", "==", 0,
              "answers from a node that did not answer that survey, during the split"),
        Check("split_survey_missed_hidden", "==", 0,
              "surveys during the split whose count hid a member that did not answer"),
        Check("survey_complete_ratio", "==", 1.0,
              "surveys 30 s after the heal in which every live member answered"),
        *NO_DUPLICATES,
    ))
    return _finish(result, sim, wall)


SURVEY_SCENARIOS = {
    "survey": scenario_survey,
    "survey-churn": scenario_survey_churn,
    "survey-partition": scenario_survey_partition,
}
