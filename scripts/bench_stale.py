"""How long a crashed node stays in other nodes' routing tables, in a calm ring.

    python scripts/bench_stale.py --nodes 1000 --crashes 3 --calm 900

Builds a ring, lets it run quietly for `--calm` simulated seconds (long enough for the table
probes to slow down to their calm period), then crashes `--crashes` random nodes at once and
prints, at growing times after the crash, how many live nodes still hold each of them (in
the leaf set or the routing table), until none does or `--until` passes. It also prints the
maintenance messages the ring sent per node per second over that span.

Issue 16's floor has a crashed node dropped by every leaf-set holder within 15 s; the table
holders are found by their own probes or told by a sweep, and this script shows how long that
takes when nothing else fails. `--json` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from simulations.scenarios import ScenarioOptions, build_ring, make_sim  # noqa: E402

MARKS_S = (5, 15, 30, 60, 120, 300, 600, 1200, 2400, 3600, 7200)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--crashes", type=int, default=3)
    parser.add_argument("--calm", type=float, default=900.0, help="quiet seconds before")
    parser.add_argument("--until", type=float, default=3600.0, help="seconds watched after")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    opts = ScenarioOptions(nodes=args.nodes, seed=args.seed)
    sim = make_sim(opts)
    if not build_ring(sim, opts)["converged"]:
        print("the ring did not converge", file=sys.stderr)
        return 1
    sim.run_for(args.calm)
    victims = {sim.random_active() for _ in range(args.crashes)}

    def holders(victim: int) -> tuple[int, int]:
        """(leaf-set holders, table holders) of `victim` among the live nodes."""
        nodes = sim.nodes.values()
        return (sum(victim in n.leaf for n in nodes),
                sum(victim in n.table and victim not in n.leaf for n in nodes))

    before = {v: holders(v) for v in victims}
    sent_before = sim.sent_by_category()[0]
    start = sim.now
    for victim in victims:
        sim.crash(victim)
    marks = []
    for mark in (m for m in MARKS_S if m <= args.until):
        sim.run_until_time(start + mark)
        left = [holders(v) for v in victims]
        marks.append({"after_s": mark, "leaf_holders": [h[0] for h in left],
                      "table_holders": [h[1] for h in left]})
        if not any(any(h) for h in left):
            break
    span = sim.now - start
    result = {
        "nodes": args.nodes,
        "seed": args.seed,
        "calm_s": args.calm,
        "holders_at_crash": [{"leaf": before[v][0], "table": before[v][1]} for v in victims],
        "after_crash": marks,
        "maintenance_msgs_per_node_s": round(
            (sim.sent_by_category()[0] - sent_before) / len(sim.nodes) / span, 4),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.nodes} nodes, seed {args.seed}, {len(victims)} crashed after {args.calm:.0f} s"
          f" of calm; holders at the crash (leaf, table): "
          f"{[(b['leaf'], b['table']) for b in result['holders_at_crash']]}")
    for row in marks:
        print(f"  +{row['after_s']:>5} s  leaf holders {row['leaf_holders']}"
              f"  table holders {row['table_holders']}")
    print(f"maintenance {result['maintenance_msgs_per_node_s']} messages per node per second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
