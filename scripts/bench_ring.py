"""Scale benchmark of the ring simulator: N nodes join, then many routed lookups.

    python scripts/bench_ring.py --nodes 10000 --lookups 100000

Prints wall time, simulated events per wall second (with the real protocol handlers), peak RSS
and memory per node ((peak RSS - RSS before the nodes exist) / N), hops and correctness, and
whether every checker passed. `--json` prints one JSON object instead.

The simulator's rate is read against a trivial heapq event loop timed in the same process
(`baseline_*`), three times (before the nodes exist, after the join, after the lookups): on a
shared machine one sample catches whatever else runs at that moment, so the median is used.
Each rate is given per wall second and per CPU second of this process (`*_cpu_*`): the
CPU-time figures do not count the time the process waited for a core, which other people's
work on a 2-core machine makes vary by a factor of two from run to run. `cpu_us_per_event` is
the same figure the other way up: what one simulated event costs.

`--formed` starts from a ring formed without joins (`simulations.formed`): the run is then the
quiet window, the lookups and the checks of a ring of N, without the quarter of an hour the
joins of 100,000 nodes take.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
if os.environ.get("IRIS_SIM_COMPILED"):  # `--compiled`, run again on the build
    sys.path.insert(0, os.environ["IRIS_SIM_COMPILED"])

from simulations import checkers, compiled  # noqa: E402
from simulations.scenarios import (  # noqa: E402
    ScenarioOptions,
    build_ring,
    make_sim,
    measure_maintenance,
    run_lookups,
)


def baseline_events_per_s(count: int = 1_000_000) -> tuple[float, float]:
    """A plain heapq event loop with a no-op handler, timed in this process: the machine's
    speed right now, to read the simulator's rate against (this 2-core machine's speed
    drifts by more than the differences we want to see). Events per wall second and per CPU
    second."""
    import heapq

    heap: list[tuple[float, int]] = [(float(i % 1000), i) for i in range(1000)]
    heapq.heapify(heap)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(count):
        when, n = heapq.heappop(heap)
        heapq.heappush(heap, (when + 1.0, n))
    return count / (time.perf_counter() - t0), count / (time.process_time() - c0)


def print_result(result: dict[str, object], as_json: bool) -> None:
    """One JSON object, or one figure a line, named."""
    if as_json:
        print(json.dumps(result))
    else:
        width = max(map(len, result))
        for key, value in result.items():
            print(f"{key:>{width}}  {value}")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--lookups", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--join-rate", type=float, default=0.0, help="joins per simulated second")
    parser.add_argument("--formed", action="store_true",
                        help="start from a ring formed from the truth, no joins "
                        "(simulations.formed): the join_* figures are then the forming's, "
                        "and wall_s, cpu_s and the rates leave it out")
    parser.add_argument("--near-seeds", action="store_true",
                        help="each joiner is given the nearest active node as its seed")
    parser.add_argument("--skip-checks", action="store_true",
                        help="skip the full checkers at the end")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--compiled", action="store_true",
                        help="run on the cores and engine compiled with mypyc "
                        "(simulations.compiled)")
    args = parser.parse_args()
    if args.compiled and not os.environ.get(compiled.ENV):
        try:
            folder = compiled.build(announce=lambda line: print(line, file=sys.stderr))
        except (compiled.BuildError, OSError) as e:
            parser.error(f"--compiled: {e}")
        compiled.reexec(folder, [os.path.abspath(__file__), *sys.argv[1:]])
    if args.compiled and not compiled.loaded():
        parser.error("--compiled: the compiled modules did not load")

    baselines = [baseline_events_per_s()]
    rss_before = rss_bytes()
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    opts = ScenarioOptions(nodes=args.nodes, seed=args.seed, join_rate=args.join_rate,
                           formed=args.formed, near_seeds=args.near_seeds)
    sim = make_sim(opts)
    built = build_ring(sim, opts)
    wall_join = time.perf_counter() - wall0
    cpu_join = time.process_time() - cpu0
    events_join = sim.events
    baselines.append(baseline_events_per_s())
    wall0 += time.perf_counter() - wall0 - wall_join  # the baseline's time is not the run's
    cpu0 += time.process_time() - cpu0 - cpu_join
    if args.formed:  # forming runs no event: the rates and totals count what follows
        wall0, cpu0 = wall0 + wall_join, cpu0 + cpu_join

    maintenance = measure_maintenance(sim, 30.0)
    wall1 = time.perf_counter()
    events1 = sim.events
    lookups = run_lookups(sim, args.lookups, rate=max(1000.0, args.lookups / 20))
    wall_lookups = time.perf_counter() - wall1
    events_lookups = sim.events - events1
    wall_total = time.perf_counter() - wall0
    cpu_total = time.process_time() - cpu0
    peak = peak_rss_bytes()
    baselines.append(baseline_events_per_s())
    baseline = statistics.median(b[0] for b in baselines)
    baseline_cpu = statistics.median(b[1] for b in baselines)

    result = {
        "nodes": args.nodes,
        "seed": args.seed,
        "compiled": args.compiled,
        "formed": args.formed,
        "near_seeds": args.near_seeds,
        "converged": built["converged"],
        "join_msgs_per_join": round(built["join_msgs_per_join"], 1),
        "join_sim_s": round(built["join_s"], 1),
        "join_wall_s": round(wall_join, 2),
        "join_events": events_join,
        "join_events_per_s": round(events_join / wall_join),
        "lookups": lookups["lookups"],
        "correct_ratio": lookups["correct_ratio"],
        "mean_hops": round(lookups["mean_hops"], 4),
        "max_hops": lookups["max_hops"],
        "log16_n": round(math.log(args.nodes, 16), 3),
        "lookup_wall_s": round(wall_lookups, 2),
        "lookup_events_per_s": round(events_lookups / wall_lookups),
        "maintenance_msgs_per_node_s": round(maintenance, 4),
        "events": sim.events,
        "events_per_s": round(sim.events / wall_total),
        "baseline_trivial_events_per_s": round(baseline),
        "baseline_samples": [round(b[0]) for b in baselines],
        "events_per_s_over_baseline": round(sim.events / wall_total / baseline, 4),
        "events_per_cpu_s": round(sim.events / cpu_total),
        "baseline_trivial_events_per_cpu_s": round(baseline_cpu),
        "events_per_cpu_s_over_baseline": round(sim.events / cpu_total / baseline_cpu, 4),
        "cpu_us_per_event": round(cpu_total / sim.events * 1e6, 2),
        "wall_s": round(wall_total, 2),
        "cpu_s": round(cpu_total, 2),
        "rss_before_mb": round(rss_before / 2**20, 1),
        "peak_rss_mb": round(peak / 2**20, 1),
        "bytes_per_node": round((peak - rss_before) / args.nodes),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    }
    if not args.skip_checks:
        t = time.perf_counter()
        leaf = checkers.check_leaf_sets(sim)
        table = checkers.check_routing_tables(sim)
        routing = checkers.check_routing(sim, 2000)
        result.update(
            leaf_sets_exact=leaf.ok,
            tables_sound=table.ok,
            table_fill_ratio=round(table.fill_ratio, 4),
            routing_consistent=routing.ok,
            checks_passed=leaf.ok and table.ok and routing.ok and lookups["correct_ratio"] == 1.0,
            check_wall_s=round(time.perf_counter() - t, 2),
        )
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
