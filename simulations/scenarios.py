"""Ring scenarios: build a ring, disturb it, measure how it routes and how fast it repairs.

Every scenario returns one flat dict of figures (the `--json` output). Times are simulated
seconds unless the key ends in `wall_s`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from overlay.config import OverlayConfig
from simulations import checkers, timeline
from simulations.connections import link_policy, model_of
from simulations.engine import Simulation
from simulations.network import NetworkConfig
from simulations.report import Check, judge

MAINTENANCE_WINDOW_S = 60.0


@dataclass
class ScenarioOptions:
    nodes: int = 1000
    seed: int = 1
    lookups: int = 10_000
    lookup_rate: float = 2000.0
    join_rate: float = 0.0  # joins per simulated second; 0: nodes / 20, at least 20
    formed: bool = False
    """Start from a ring formed from the truth rather than joined (`simulations.formed`)."""
    near_seeds: bool = False
    """Each joiner is given the nearest active node as its seed, not a random one."""
    groups: int = 2
    isolate: bool = False
    partition_s: float = 60.0
    churn_s: float = 300.0
    session_s: float = 600.0
    fail_fraction: float = 0.10
    loss: float = 0.0
    duplicate: float = 0.0
    wire: bool = False
    repair_timeout_s: float = 600.0
    links: str | None = None
    """How messages travel (`simulations.connections.LINK_MODELS`); None: the scenario's
    default (datagrams for the ring scenarios, connections for the messaging ones)."""


def make_sim(opts: ScenarioOptions, config: OverlayConfig | None = None) -> Simulation:
    net = NetworkConfig(loss=opts.loss, duplicate=opts.duplicate)
    sim = Simulation(opts.seed, config=config, network=net, wire=opts.wire,
                     links=link_policy(opts.links or "datagrams"))
    sim.near_seeds = opts.near_seeds
    timeline.attach(sim)
    return sim


def build_ring(sim: Simulation, opts: ScenarioOptions) -> dict[str, Any]:
    """Join `opts.nodes` nodes through random active seeds (or form the ring at once,
    `opts.formed`), then wait for every checker."""
    if opts.formed:
        start = sim.now
        sim.form_ring(opts.nodes)
        timeline.phase(sim, "settling")
        settle = sim.run_until(lambda: checkers.all_ok(sim), timeout=opts.repair_timeout_s,
                               check_every=2.0)
        return {"join_s": sim.now - start, "converged": settle is not None,
                "join_msgs_per_join": 0.0}
    rate = opts.join_rate or max(20.0, opts.nodes / 20.0)
    sim.add_node()
    start = sim.now
    for i in range(1, opts.nodes):
        sim.at(start + i / rate, sim.add_node)
    timeline.phase(sim, "joining", until=start + opts.nodes / rate)
    sim.run_until_time(start + opts.nodes / rate)
    join_msgs = sim.sent_by_category()[1]
    timeline.phase(sim, "settling")
    settle = sim.run_until(
        lambda: len(sim.active) == opts.nodes and checkers.all_ok(sim),
        timeout=opts.repair_timeout_s,
        check_every=2.0,
    )
    return {
        "join_s": sim.now - start,
        "converged": settle is not None,
        "join_msgs_per_join": join_msgs / max(1, opts.nodes - 1),
    }


def measure_maintenance(sim: Simulation, seconds: float = MAINTENANCE_WINDOW_S) -> float:
    """Maintenance messages sent per node per simulated second over a quiet window."""
    before = sim.sent_by_category()[0]
    timeline.phase(sim, "quiet", until=sim.now + seconds)
    sim.run_for(seconds)
    after = sim.sent_by_category()[0]
    return (after - before) / len(sim.nodes) / seconds


def run_lookups(sim: Simulation, count: int, rate: float, grace_s: float = 10.0) -> dict[str, Any]:
    sim.lookups.reset()
    end = sim.lookups.schedule(count, rate)
    timeline.phase(sim, "lookups", until=end)
    sim.run_until_time(end)
    sim.run_until(lambda: sim.lookups.done, timeout=grace_s, check_every=0.5)
    return sim.lookups.summary()


def check_summary(sim: Simulation) -> dict[str, Any]:
    """Every checker over the final state (`RING_CHECKS` says what must hold)."""
    leaf = checkers.check_leaf_sets(sim)
    table = checkers.check_routing_tables(sim)
    routing = checkers.check_routing(sim, 1000)
    return {
        "leaf_sets_exact": leaf.ok,
        "leaf_sets_checked": leaf.checked,
        "leaf_sets_wrong": leaf.wrong,
        "tables_sound": table.ok,
        "table_dead_entries": table.dead,
        "table_misplaced_entries": table.misplaced,
        "table_fill_ratio": round(table.fill_ratio, 4),
        "routing_consistent": routing.ok,
        "routing_walks": routing.lookups,
        "routing_walks_wrong": routing.lookups - routing.correct,
    }


# What `check_summary`'s checkers require, figure by figure (leaf_sets_exact, tables_sound and
# routing_consistent are these conjunctions).
RING_CHECKS = (
    Check("leaf_sets_checked", ">=", 1, "active nodes whose leaf sets were checked"),
    Check("leaf_sets_wrong", "==", 0, "active nodes whose leaf set differs from the truth"),
    Check("table_dead_entries", "==", 0, "routing-table entries naming dead nodes"),
    Check("table_misplaced_entries", "==", 0, "routing-table entries in the wrong cell"),
    Check("routing_walks_wrong", "==", 0,
          "walks through the routing state to random keys that end off the true root"),
)
# Under churn a lookup may be lost with the node holding it (counted apart, `lost`); one
# delivered anywhere but at the key's root is the failure an overlay must not have.
NO_WRONG_ROOT = Check("wrong_root", "==", 0, "lookups delivered at a node not the key's root",
                      context=("lookups", "lost"))
ALL_LOOKUPS_CORRECT = Check("correct_ratio", "==", 1.0,
                            "routed lookups delivered at the key's true root",
                            context=("lookups", "wrong_root", "lost"))


def detection_time(sim: Simulation, timeout: float = 60.0) -> float | None:
    """Crash one random active node; time until no live node keeps it in its leaf set."""
    victim = sim.random_active()
    holders = [n for n in sim.nodes.values() if victim in n.leaf]
    sim.crash(victim)
    return sim.run_until(lambda: not any(victim in n.leaf for n in holders if n.id in sim.nodes),
                         timeout=timeout, check_every=0.1)


def base_result(name: str, opts: ScenarioOptions) -> dict[str, Any]:
    """The figures every scenario's result opens with: what ran."""
    how = {k: True for k in ("formed", "near_seeds") if getattr(opts, k)}
    return {"scenario": name, "nodes": opts.nodes, "seed": opts.seed, **how}


def link_figures(sim: Simulation) -> dict[str, Any]:
    """How messages travelled, and what the modelled connections went through."""
    counters = {} if sim.connections is None else sim.connections.counters
    return {"links": model_of(sim.connections),
            **{f"links_{k}": v for k, v in sorted(counters.items())}}


def _finish(result: dict[str, Any], sim: Simulation, wall_start: float) -> dict[str, Any]:
    timeline.phase(sim, "done")
    wall = time.perf_counter() - wall_start
    result["events"] = sim.events
    result["wall_s"] = round(wall, 3)
    result["events_per_wall_s"] = round(sim.events / wall) if wall else 0
    result["sim_s"] = round(sim.now, 3)
    result["messages_sent"] = sim.messages_sent
    result["messages_dropped"] = sim.messages_dropped
    result.update(link_figures(sim))
    result["digest"] = sim.digest()[:16]
    return result


def scenario_join(opts: ScenarioOptions) -> dict[str, Any]:
    """N nodes join; then maintenance cost, lookups, and the time to detect one crash."""
    wall = time.perf_counter()
    sim = make_sim(opts)
    result = base_result("join", opts)
    result.update(build_ring(sim, opts))
    result["maintenance_msgs_per_node_s"] = round(measure_maintenance(sim), 4)
    result.update(run_lookups(sim, opts.lookups, opts.lookup_rate))
    timeline.phase(sim, "checking")
    result.update(check_summary(sim))
    judge(result, (*RING_CHECKS, ALL_LOOKUPS_CORRECT))
    timeline.phase(sim, "crash detection")
    result["detect_s"] = detection_time(sim)
    return _finish(result, sim, wall)


def scenario_mass_failure(opts: ScenarioOptions) -> dict[str, Any]:
    """A fraction of the nodes (10%) crash at once; time until every checker passes again."""
    wall = time.perf_counter()
    sim = make_sim(opts)
    result = base_result("mass-failure", opts)
    result.update(build_ring(sim, opts))
    before = run_lookups(sim, min(opts.lookups, 2000), opts.lookup_rate)
    result["mean_hops_before"] = before["mean_hops"]
    victims = sim.rng.sample(list(sim.active), int(len(sim.active) * opts.fail_fraction))
    failed_at = sim.now
    timeline.phase(sim, "failure")
    for victim in victims:
        sim.crash(victim)
    result["failed"] = len(victims)
    during = run_lookups(sim, min(opts.lookups, 2000), opts.lookup_rate)
    result["correct_ratio_during_repair"] = during["correct_ratio"]
    result["mean_hops_during_repair"] = during["mean_hops"]
    timeline.phase(sim, "repairing")
    repair = sim.run_until(lambda: checkers.all_ok(sim), opts.repair_timeout_s, check_every=2.0)
    result["repair_s"] = None if repair is None else round(sim.now - failed_at, 3)
    result["maintenance_msgs_per_node_s"] = round(measure_maintenance(sim), 4)
    result.update(run_lookups(sim, opts.lookups, opts.lookup_rate))
    result["mean_hops_after"] = result["mean_hops"]
    timeline.phase(sim, "checking")
    result.update(check_summary(sim))
    judge(result, (*RING_CHECKS, ALL_LOOKUPS_CORRECT))
    return _finish(result, sim, wall)


def scenario_churn(opts: ScenarioOptions) -> dict[str, Any]:
    """Nodes crash at random (exponential sessions) and new ones join to replace them,
    while lookups run; then the churn stops and the ring must settle."""
    wall = time.perf_counter()
    sim = make_sim(opts)
    result = base_result("churn", opts)
    result.update(build_ring(sim, opts))
    rng = sim.rng
    start = sim.now
    end = start + opts.churn_s
    rate = opts.nodes / opts.session_s  # failures per second keeping N steady
    replaced = 0

    def replace() -> None:
        """One node crashes and a new one joins, given two seeds as an operator gives several:
        with one, a seed that crashed right after the joiner started left it a ring of its own
        for good (no seed ever answers, and it knows no other node)."""
        nonlocal replaced
        if len(sim.active) > 1:
            sim.crash(sim.random_active())
            if opts.near_seeds:
                sim.add_node(spare_seed=True)
            else:
                seeds = {sim.random_active(), sim.random_active()}
                sim.add_node(seeds=tuple(sorted(seeds)))
            replaced += 1

    t = start + rng.expovariate(rate)
    while t < end:
        sim.at(t, replace)
        t += rng.expovariate(rate)
    count = min(opts.lookups, int(opts.churn_s * 20))
    sent_before = sim.sent_by_category()
    sim.lookups.reset()
    sim.lookups.schedule(count, count / opts.churn_s)
    timeline.phase(sim, "churning", until=end)
    sim.run_until_time(end)
    sim.run_until(lambda: sim.lookups.done, timeout=10.0, check_every=0.5)
    result.update(sim.lookups.summary())
    result["replaced"] = replaced
    sent = [b - a for a, b in zip(sent_before, sim.sent_by_category(), strict=True)]
    span = sim.now - start
    result["maintenance_msgs_per_node_s"] = round(sent[0] / opts.nodes / span, 4)
    result["join_msgs_per_node_s"] = round(sent[1] / opts.nodes / span, 4)
    timeline.phase(sim, "repairing")
    repair = sim.run_until(lambda: checkers.all_ok(sim), opts.repair_timeout_s, check_every=2.0)
    result["repair_s"] = None if repair is None else round(repair, 3)
    timeline.phase(sim, "checking")
    result.update(check_summary(sim))
    judge(result, (*RING_CHECKS, NO_WRONG_ROOT))
    return _finish(result, sim, wall)


def scenario_partition(opts: ScenarioOptions) -> dict[str, Any]:
    """Split the ring (random groups, or one isolated node), wait, heal; time the merge."""
    wall = time.perf_counter()
    sim = make_sim(opts)
    result = base_result("partition", opts)
    result.update(build_ring(sim, opts))
    ids = list(sim.active)
    sim.rng.shuffle(ids)
    if opts.isolate:
        groups = [ids[1:], ids[:1]]
    else:
        groups = [ids[i :: opts.groups] for i in range(opts.groups)]
    result["groups"] = [len(g) for g in groups]
    sim.partition(groups)
    timeline.phase(sim, "partitioned", until=sim.now + opts.partition_s)
    sim.run_for(opts.partition_s)
    sim.heal()
    timeline.phase(sim, "healing")
    repair = sim.run_until(lambda: checkers.all_ok(sim), opts.repair_timeout_s, check_every=1.0)
    result["repair_s"] = None if repair is None else round(repair, 3)
    result["maintenance_msgs_per_node_s"] = round(measure_maintenance(sim), 4)
    result.update(run_lookups(sim, opts.lookups, opts.lookup_rate))
    timeline.phase(sim, "checking")
    result.update(check_summary(sim))
    judge(result, (*RING_CHECKS, ALL_LOOKUPS_CORRECT))
    return _finish(result, sim, wall)


SCENARIOS: dict[str, Callable[[ScenarioOptions], dict[str, Any]]] = {
    "join": scenario_join,
    "churn": scenario_churn,
    "mass-failure": scenario_mass_failure,
    "partition": scenario_partition,
}
