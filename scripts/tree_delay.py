"""Delay through the pub/sub trees: published from random nodes, and from each tree's root.

`iris sim messaging` reports `publish_delay_stretch` for events (and `broadcast_delay_stretch`
for broadcasts): the way to the tree, then through it, over the direct delay from the sender to
each receiver. Events also go straight to the subscribers that asked their publisher
(`iris.core.direct`), from a publisher's second event to a topic on: here a random publisher's
figures are mostly the tree's, the root's mostly the direct copies'. Scribe's figure of about
1.7 (its "delay penalty", `../shared/REFERENCES.md`) has the root as the source, and is a ratio
of average delays per group (its RAD) rather than a mean of per-delivery ratios, in which
nearby pairs weigh most. This script builds the same ring and
groups as `iris sim messaging`, then publishes to every topic from random publishers and from
the topic's root, and prints both kinds of figure for both, so the two can be compared:

    python scripts/tree_delay.py --nodes 1000 --seed 1

Figures (per delivery, first arrivals, the sender itself left out):
- `mean_ratio`: mean of delay / direct delay without jitter (`publish_delay_stretch`);
- `mean_ratio_expected`: the same over direct delay plus the network's mean jitter;
- `rad_median`, `rad_mean`: per topic, total delay over total expected direct delay (the ratio
  of average delays), then the median and mean over topics.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from iris.core import topic_group
from simulations.messaging import make_messaging_sim, setup_groups
from simulations.messaging_workload import MessagingWorkload, core_of
from simulations.scenarios import ScenarioOptions, build_ring


def root_of(work: MessagingWorkload, topic: str) -> int | None:
    """The node holding `topic`'s tree without a parent (one, on a settled ring)."""
    group = topic_group(topic)
    roots = [node_id for node_id, node in work.sim.nodes.items()
             if (tree := core_of(node).trees.get(group)) is not None and tree.parent is None]
    return roots[0] if len(roots) == 1 else None


def figures(work: MessagingWorkload, first: int) -> dict[str, Any]:
    """The figures of the deliveries recorded from `work.stretch_records[first]` on."""
    jitter = work.sim.net.config.jitter_s
    ratios, expected = [], []
    by_topic: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for tag, latency, direct, _ in work.stretch_records[first:]:
        ratios.append(latency / direct)
        expected.append(latency / (direct + jitter))
        sums = by_topic[work.floods[tag][0]]
        sums[0] += latency
        sums[1] += direct + jitter
    rads = [measured / direct for measured, direct in by_topic.values()]
    return {
        "deliveries": len(ratios),
        "mean_ratio": round(statistics.fmean(ratios), 3),
        "mean_ratio_expected": round(statistics.fmean(expected), 3),
        "rad_median": round(statistics.median(rads), 3),
        "rad_mean": round(statistics.fmean(rads), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20, help="events per topic and sender kind")
    args = parser.parse_args()
    opts = ScenarioOptions(nodes=args.nodes, seed=args.seed)
    sim, work = make_messaging_sim(opts)
    build_ring(sim, opts)
    setup_groups(sim, work, opts)
    topics = sorted(work.subscribers)
    roots = {topic: root_of(work, topic) for topic in topics}
    out: dict[str, Any] = {"nodes": args.nodes, "seed": args.seed, "topics": len(topics),
                           "topics_without_one_root": sum(r is None for r in roots.values())}
    senders: dict[str, Callable[[str], int | None]] = {
        "random_publisher": lambda topic: sim.random_active(),
        "root": roots.get,
    }
    for kind, sender in senders.items():
        first = len(work.stretch_records)
        for _ in range(args.rounds):
            for topic in topics:
                origin = sender(topic)
                if origin is not None and origin in sim.nodes:
                    work.flood(origin, topic, True)
            sim.run_for(2.0)  # one round at a time: no queueing behind the previous one
        sim.run_for(5.0)
        out[kind] = figures(work, first)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
