"""What the simulator's engine costs alone: its event loop driving trivial cores.

    python scripts/bench_engine.py --nodes 10000

Each core sends a ping to one of 16 fixed peers every simulated second and answers every ping
with a pong: three events a node a second (a wake-up, a ping, a pong), each with no protocol
work. The engine, the network model and the event queue are the real ones
(`simulations.engine.Simulation`), so the rate printed is the most any core could get out of
them at this size, against the same-process heapq baseline that `bench_ring.py` uses. What an
event of the real overlay costs beyond it is the cores' own work.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from bench_ring import baseline_events_per_s, print_result  # noqa: E402

from simulations.engine import INF, Simulation  # noqa: E402

PING, PONG = "ping", "pong"
PEERS = 16
_WAKE = 1  # the engine's event kind for a wake-up at a core's `next_deadline`


class TrivialCore:
    """The attributes and the two inputs the engine uses of a core, and nothing else."""

    __slots__ = ("id", "out", "peers", "beats", "next_deadline", "later_wake", "given_up",
                 "failed")

    def __init__(self, node_id: int, out: list[tuple[int, Any]], peers: list[int],
                 first: float) -> None:
        self.id, self.out, self.peers, self.beats = node_id, out, peers, 0
        self.next_deadline, self.later_wake = first, INF
        self.given_up = self.failed = None  # no link policy

    def receive(self, src: int, msg: Any, now: float) -> None:
        if msg is PING:
            self.out.append((src, PONG))

    def handle_timer(self, now: float) -> None:
        self.beats += 1
        self.out.append((self.peers[self.beats % PEERS], PING))
        self.next_deadline = now + 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="simulated seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    sim = Simulation(args.seed)
    rng = random.Random(args.seed)
    ids = [rng.getrandbits(128) for _ in range(args.nodes)]
    for node_id in ids:
        sim.net.place(node_id)
    for node_id in ids:
        core = TrivialCore(node_id, sim._outbox, rng.sample(ids, PEERS), rng.random())
        sim.nodes[node_id] = core  # type: ignore[assignment]  # the engine uses no more
        sim._push(core.next_deadline, _WAKE, node_id)

    baselines = [baseline_events_per_s()]
    cpu0 = time.process_time()
    sim.run_until_time(args.seconds)
    cpu = time.process_time() - cpu0
    baselines.append(baseline_events_per_s())
    baseline_cpu = statistics.median(b[1] for b in baselines)
    rate = sim.events / cpu
    result = {
        "nodes": args.nodes,
        "events": sim.events,
        "events_per_cpu_s": round(rate),
        "cpu_us_per_event": round(cpu / sim.events * 1e6, 2),
        "baseline_trivial_events_per_cpu_s": round(baseline_cpu),
        "events_per_cpu_s_over_baseline": round(rate / baseline_cpu, 4),
    }
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
