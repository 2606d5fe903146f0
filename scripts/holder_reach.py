"""Who holds a node in their routing table, and who would hear of its death.

    python scripts/holder_reach.py --nodes 1000 --spread all

A design measurement, on a ring built by the simulator and left calm for 300 s; nothing
crashes. For a sample of nodes Y it counts Y's table holders (by the row Y sits in), how many of
them a death notice reaches today (the detector, Y's left neighbour, tells its leaf set and its
table), and how many a notice passed on by the holders themselves would reach: every holder
reached tells the entries of its table in Y's row only (`--spread row`), in that row and the
rows below it (`below`), or in every row (`all`), and those that hold Y pass it on in turn.
Proximity neighbour selection makes nodes near one another in the network pick the same
entries, so a holder's own entries are likely holders too. Messages are the notices sent.
"""

from __future__ import annotations

import argparse
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_ring import print_result  # noqa: E402

from overlay.node import OverlayNode  # noqa: E402
from simulations.scenarios import ScenarioOptions, build_ring, make_sim  # noqa: E402


def reach(nodes: dict[int, OverlayNode], dead: int, spread: str) -> tuple[set[int], set[int],
                                                                           set[int], int]:
    """(holders of `dead`, those told today, those the holders' notices reach, notices)."""
    holders = {x for x, node in nodes.items() if x != dead and dead in node.table}
    detector = nodes[nodes[dead].leaf.left[0]]
    told = {detector.id, *detector.leaf.members(), *detector.table.entries()}
    told_holders = holders & told
    reached = set(told_holders)
    frontier, sent = list(reached), 0
    while frontier:
        table = nodes[frontier.pop()].table
        row, _ = table.cell_of(dead)
        rows = {"row": range(row, row + 1), "below": range(row, table.rows),
                "all": range(table.rows)}[spread]
        for peer in (p for r in rows for p in table.row(r) if p != dead):
            sent += 1
            if peer in holders and peer not in reached:
                reached.add(peer)
                frontier.append(peer)
    return holders, told_holders, reached, sent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--spread", choices=("row", "below", "all"), default="all")
    parser.add_argument("--sample", type=int, default=60, help="nodes Y looked at")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    opts = ScenarioOptions(nodes=args.nodes, seed=args.seed)
    sim = make_sim(opts)
    build_ring(sim, opts)
    sim.run_for(300.0)
    by_row: dict[int, list[int]] = {}  # row -> [holders, told today, reached]
    sent = 0
    for dead in random.Random(args.seed).sample(sorted(sim.active), args.sample):
        holders, told, reached, notices = reach(sim.nodes, dead, args.spread)
        sent += notices
        for holder in holders:
            counts = by_row.setdefault(sim.nodes[holder].table.cell_of(dead)[0], [0, 0, 0])
            counts[0] += 1
            counts[1] += holder in told
            counts[2] += holder in reached
    per = 1 / args.sample
    result: dict[str, object] = {
        "nodes": args.nodes, "spread": args.spread, "sample": args.sample,
        "holders_per_node": round(sum(c[0] for c in by_row.values()) * per, 1),
        "told_today": round(sum(c[1] for c in by_row.values()) * per, 1),
        "reached": round(sum(c[2] for c in by_row.values()) * per, 1),
        "notices_per_death": round(sent * per),
        **{f"row{r}_holders_told_reached": [round(c * per, 1) for c in counts]
           for r, counts in sorted(by_row.items())},
    }
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
