"""What one join costs in a ring that is already large.

    python scripts/bench_join.py --nodes 100000 --joins 1000

`bench_ring.py` grows a ring from one node to N in 20 simulated seconds, so its cost per join
mixes the join with the searches of a ring growing N-fold. Here a ring of N is formed without
joins (`simulations.formed`), left quiet for 30 simulated seconds, and then `--joins` nodes join
it through the protocol, one every 1/`--rate` s, until every checker passes. The same ring,
from the same moment, also runs as long without them (the control, in a fork of the process),
and the joins' cost is the difference. Printed: the join messages sent per join, the
maintenance messages and the simulated events per join beyond the control's, the time the
ring took to settle after the last join, and whether every checker passed. `--json` prints
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from overlay.node import C_JOIN, C_MAINTENANCE  # noqa: E402
from simulations import checkers  # noqa: E402
from simulations.engine import Simulation  # noqa: E402
from simulations.scenarios import (  # noqa: E402
    ScenarioOptions,
    build_ring,
    make_sim,
    measure_maintenance,
)

QUIET_S = 30.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=10_000, help="the formed ring's size")
    parser.add_argument("--joins", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="joins per simulated second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.nodes < 1 or args.joins < 1 or args.rate <= 0:
        parser.error("--nodes and --joins must be at least 1, --rate positive")

    opts = ScenarioOptions(nodes=args.nodes, seed=args.seed, formed=True)
    sim = make_sim(opts)
    wall = time.perf_counter()
    build_ring(sim, opts)
    form_wall = time.perf_counter() - wall
    quiet = measure_maintenance(sim, QUIET_S)  # per node per second, before the joins

    # The joins run in a copy of this process; this one then runs the same ring over the same
    # span without them (the control), and the joins' cost is the difference.
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        try:
            with os.fdopen(write_end, "w") as out:
                json.dump(_joined(sim, args), out)
        finally:
            os._exit(0)  # never back into the parent's code (it then finds no answer)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        joined = json.load(answer)
    os.waitpid(child, 0)
    before = _counts(sim)
    sim.run_until_time(sim.now + joined["span"])
    control = _since(sim, before)
    joins = args.joins
    result = {
        "nodes": args.nodes,
        "joins": joins,
        "rate": args.rate,
        "seed": args.seed,
        "join_msgs_per_join": round(joined["sent"][C_JOIN] / joins, 1),
        "maintenance_msgs_per_join": round(
            (joined["sent"][C_MAINTENANCE] - control["sent"][C_MAINTENANCE]) / joins, 1),
        "events_per_join": round((joined["events"] - control["events"]) / joins, 1),
        "quiet_maintenance_msgs_per_node_s": round(quiet, 4),
        "joins_sim_s": round(joins / args.rate, 3),
        "settled_after_s": joined["settled_after_s"],
        "checks_passed": joined["settled_after_s"] is not None,
        "form_wall_s": round(form_wall, 2),
        "join_wall_s": joined["wall_s"],
    }
    if args.json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:>{width}}  {value}")
    return 0 if result["checks_passed"] else 1


def _counts(sim: Simulation) -> tuple[list[int], int]:
    """Messages sent so far (by category) and events run."""
    return sim.sent_by_category(), sim.events


def _since(sim: Simulation, before: tuple[list[int], int]) -> dict[str, Any]:
    """What was sent (by category) and run since `before` (`_counts`)."""
    sent0, events0 = before
    return {"sent": [b - a for a, b in zip(sent0, sim.sent_by_category(), strict=True)],
            "events": sim.events - events0}


def _joined(sim: Simulation, args: argparse.Namespace) -> dict[str, Any]:
    """The joins, one every 1/rate s, then until every checker passes."""
    wall, start, before = time.perf_counter(), sim.now, _counts(sim)
    for i in range(args.joins):
        sim.at(start + i / args.rate, sim.add_node)
    sim.run_until_time(start + args.joins / args.rate)
    total = args.nodes + args.joins
    settled = sim.run_until(lambda: len(sim.active) == total and checkers.all_ok(sim),
                            timeout=600.0, check_every=1.0)
    return {**_since(sim, before), "span": sim.now - start, "settled_after_s": settled,
            "wall_s": round(time.perf_counter() - wall, 2)}


if __name__ == "__main__":
    sys.exit(main())
