"""Surveys between real nodes in one process (loopback TCP, encryption on): what they sustain.

    python scripts/bench_survey.py [--members 10 100] [--extra 10] [--surveys 500]
                                   [--concurrency 8] [--transport tcp]

For each member count M: M + extra nodes (`iris.testing.local_nodes`), M of them members of
one cluster answering with 16 bytes; first `--surveys` surveys one after the other from a
non-member (latency p50/p99), then as many again with `--concurrency` in flight at once
(surveys per second). Every survey must be complete (every member answered), else it is
counted as incomplete. All nodes share one process and one core's worth of Python, so the
figures are those of the whole ring's work per survey (M + 1 questions and batches), not of
one node. With many nodes in one process, the cyclic garbage collector's full passes over all
their state stall every node at once (see `--gc-freeze`). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import trio  # noqa: E402

from iris.testing import local_nodes  # noqa: E402


class Member:
    def __init__(self, node_id: int) -> None:
        self.answer = node_id.to_bytes(16, "big")

    async def handle_survey(self, data: bytes) -> bytes:
        return self.answer


def quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def measure(members: int, extra: int, surveys: int, concurrency: int,
                  transport: str, freeze: bool) -> dict[str, object]:
    started = time.monotonic()
    async with local_nodes(members + extra, transport=transport) as nodes:
        ring_s = time.monotonic() - started
        for node in nodes[extra:]:
            await node.register("bench", Member(node.id))
        if freeze:
            gc.collect()
            gc.freeze()  # the rings' long-lived state out of the collector's way (see --help)
        asker = nodes[0]
        incomplete: list[tuple[int, int]] = []  # (answers, members known) of each

        async def one() -> float:
            t0 = time.perf_counter()
            result = await asker.survey("bench", b"q", timeout=10.0)
            if not (result.complete and result.members_known == members):
                incomplete.append((len(result.answers), result.members_known))
            return time.perf_counter() - t0

        for _ in range(20):  # warm up
            await one()
        latencies = [await one() for _ in range(surveys)]

        left = surveys

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await one()

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - t0
        counters: dict[str, int] = {}
        for node in nodes:
            status = node.status()["counters"]
            for name, value in status.items():
                if "survey" in name:
                    counters[name] = counters.get(name, 0) + value
    return {
        "members": members, "nodes": members + extra, "transport": transport,
        "gc_freeze": freeze,
        "ring_s": round(ring_s, 1),
        "sequential_p50_ms": round(quantile(latencies, 0.5) * 1000, 2),
        "sequential_p99_ms": round(quantile(latencies, 0.99) * 1000, 2),
        "sequential_per_s": round(len(latencies) / sum(latencies), 1),
        "concurrent": concurrency,
        "concurrent_per_s": round(surveys / elapsed, 1),
        "incomplete": len(incomplete),
        "incomplete_answers_of_known": incomplete[:10],
        "counters": counters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--extra", type=int, default=10, help="nodes that are not members")
    parser.add_argument("--surveys", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--transport", choices=("tcp", "memory"), default="tcp")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() once the ring is up: with 110 nodes in one process "
                             "the collector's full passes over every node's state stall the "
                             "whole process for up to a second or more, which a process of "
                             "one node does not see")
    args = parser.parse_args()
    results = [trio.run(measure, m, args.extra, args.surveys, args.concurrency, args.transport,
                        args.gc_freeze)
               for m in args.members]
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
