"""`iris demo`: a 20-node overlay on loopback TCP in one process, every pattern, measured.

Nodes join one by one through the first; three clusters register, two topics get subscribers;
then requests (16 at a time), broadcasts, publishes and one tunnel run, and a table reports
counts, delivery, latency percentiles and throughput. The latencies are those of all the nodes
and callers sharing one process (one core): the report says how many requests were in flight.

Clusters and topics want 14 and 8 members; on fewer nodes each gets as many as there are
(a node may then serve two clusters), and the delivery ratios count the members they got.
"""

from __future__ import annotations

import json
import random
import signal
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

import iris
import iris.testing

CLUSTERS = {"echo": 6, "compute": 5, "store": 3}
TOPICS = {"news": 8, "metrics": 4}


class Tally:
    """Counts deliveries; `all_in` is set once the expected number has arrived, so the demo
    waits for the last one instead of polling."""

    def __init__(self, expected: int) -> None:
        self.count = 0
        self.expected = expected
        self.all_in = trio.Event()
        if expected <= 0:
            self.all_in.set()

    def add(self) -> None:
        self.count += 1
        if self.count >= self.expected:
            self.all_in.set()


class DemoService:
    """Answers requests, counts broadcasts, and checks tunnel order."""

    def __init__(self, name: str, broadcasts_in: Tally) -> None:
        self.name = name
        self.broadcasts_in = broadcasts_in

    async def handle_request(self, data: bytes) -> bytes:
        return self.name.encode() + b":" + data

    async def handle_broadcast(self, data: bytes) -> None:
        self.broadcasts_in.add()

    async def handle_tunnel(self, tunnel: iris.Tunnel) -> None:
        try:
            while True:
                data = await tunnel.receive()
                await tunnel.send(data[:8])  # acknowledge with the sequence number
        except iris.ClosedError:
            pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def run_demo(nodes: int = 20, requests: int = 2000, concurrency: int = 16,
                   broadcasts: int = 50, publishes: int = 200, tunnel_messages: int = 2000,
                   progress: Any = None, seed: int = 1) -> dict[str, Any]:
    if nodes < 2:
        raise ValueError("the demo needs at least 2 nodes")
    rng = random.Random(seed)
    key = iris.generate_network_key()
    cluster_sizes = {cluster: min(size, nodes) for cluster, size in CLUSTERS.items()}
    topic_sizes = {topic: min(size, nodes) for topic, size in TOPICS.items()}
    expected_broadcasts = broadcasts * sum(cluster_sizes.values())
    expected_events = publishes * sum(topic_sizes.values())
    broadcasts_in, events_in = Tally(expected_broadcasts), Tally(expected_events)
    started = time.perf_counter()
    result: dict[str, Any] = {"nodes": nodes, "processes": 1,
                              "requests_in_flight": min(concurrency, requests)}

    def step(what: str, advance: int = 1) -> None:
        if progress is not None:
            progress(what, advance)

    async with iris.testing.local_nodes(nodes, transport="tcp", network_key=key,
                                        on_join=lambda: step("joining")) as running:
        result["join_s"] = round(time.perf_counter() - started, 2)

        members: dict[str, list[iris.Node]] = {}
        order = list(running)
        rng.shuffle(order)
        position = 0
        for cluster, size in cluster_sizes.items():  # disjoint, unless there are too few nodes
            members[cluster] = [order[(position + i) % nodes] for i in range(size)]
            position += size
            for node in members[cluster]:
                await node.register(cluster, DemoService(cluster, broadcasts_in))
        received: dict[str, list[bytes]] = {}
        for topic, size in topic_sizes.items():
            for i, node in enumerate(rng.sample(running, size)):
                box = received.setdefault(f"{topic}/{i}", [])

                async def on_event(data: bytes, box: list[bytes] = box) -> None:
                    box.append(data)
                    events_in.add()

                await node.subscribe(topic, on_event)
        step("registering")

        # Requests: `concurrency` callers at a time.
        latencies: list[float] = []
        failures = 0
        t0 = time.perf_counter()

        async def caller(count: int) -> None:
            nonlocal failures
            for _ in range(count):
                node = rng.choice(running)
                cluster = rng.choice(list(CLUSTERS))
                begin = time.perf_counter()
                try:
                    reply = await node.request(cluster, b"ping", timeout=5.0)
                    if not reply.startswith(cluster.encode()):
                        failures += 1
                    latencies.append(time.perf_counter() - begin)
                except iris.ClosedError:  # the demo is being stopped (Ctrl-C): its nodes left
                    return
                except iris.IrisError:
                    failures += 1
                step("requests")

        async with trio.open_nursery() as callers:
            for i in range(concurrency):
                callers.start_soon(caller, requests // concurrency + (i < requests % concurrency))
        request_wall = time.perf_counter() - t0

        # Broadcasts and publishes.
        for cluster in CLUSTERS:
            for _ in range(broadcasts):
                await rng.choice(running).broadcast(cluster, b"b")
        publishers = {topic: rng.sample(running, 2) for topic in TOPICS}
        for k in range(publishes):
            for topic in TOPICS:
                event = b"%s:%d:%d" % (topic.encode(), k % 2, k)
                await publishers[topic][k % 2].publish(topic, event)
        with trio.move_on_after(10):
            await broadcasts_in.all_in.wait()
            await events_in.all_in.wait()
        step("broadcast/publish", 1)

        # Publishes arrive in order per publisher.
        order_ok = True
        for box in received.values():
            last: dict[bytes, int] = {}
            for data in box:
                name, publisher, seq = data.split(b":")
                if int(seq) <= last.get(name + publisher, -1):
                    order_ok = False
                last[name + publisher] = int(seq)

        # One tunnel: send numbered messages, read the acknowledgements back in order.
        tunnel_in_order = True
        t1 = time.perf_counter()
        async with await running[0].tunnel("echo", timeout=5.0) as tun:
            async def sender() -> None:
                payload = b"x" * 1016
                for k in range(tunnel_messages):
                    await tun.send(k.to_bytes(8, "big") + payload)

            async with trio.open_nursery() as pair:
                pair.start_soon(sender)
                for k in range(tunnel_messages):
                    if int.from_bytes(await tun.receive(), "big") != k:
                        tunnel_in_order = False
                    if k % 200 == 0:
                        step("tunnel", 1)
        tunnel_wall = time.perf_counter() - t1

        result.update({
            "requests": requests,
            "request_success_ratio": (requests - failures) / requests if requests else 1.0,
            "request_p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
            "request_p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
            "request_mean_ms": round(statistics.fmean(latencies) * 1000, 3) if latencies else None,
            "requests_per_s": round(len(latencies) / request_wall) if request_wall else None,
            "broadcasts": broadcasts * len(CLUSTERS),
            "broadcast_delivery_ratio": min(1.0, broadcasts_in.count / expected_broadcasts),
            "publishes": publishes * len(TOPICS),
            "publish_delivery_ratio": min(1.0, events_in.count / expected_events),
            "publish_in_order": order_ok,
            "tunnel_messages": tunnel_messages,
            "tunnel_in_order": tunnel_in_order,
            "tunnel_round_trips_per_s":
                round(tunnel_messages / tunnel_wall) if tunnel_wall else None,
            "wall_s": round(time.perf_counter() - started, 2),
        })
    return result


def main(as_json: bool = False, nodes: int = 20, requests: int = 2000,
         concurrency: int = 16) -> int:
    if as_json:
        result = trio.run(_interruptible, lambda: run_demo(nodes=nodes, requests=requests,
                                                           concurrency=concurrency))
        print(json.dumps(result))
        return 0 if _healthy(result) else 1

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    console = Console()
    total = (nodes - 1) + 1 + requests + 1 + 10
    with Progress(TextColumn("{task.description:<18}"), BarColumn(),
                  TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("starting", total=total)

        def progress(what: str, advance: int) -> None:
            bar.update(task, description=what, advance=advance)

        result = trio.run(_interruptible, lambda: run_demo(
            nodes=nodes, requests=requests, concurrency=concurrency, progress=progress))
    table = Table(title=f"iris demo: {result['nodes']} nodes on loopback TCP")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"The {result['nodes']} nodes and the callers share this one process; "
                  f"{result['requests_in_flight']} requests were in flight at a time, and a "
                  f"request's latency includes its wait behind the others.")
    return 0 if _healthy(result) else 1


async def _interruptible(demo: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Run the demo; Ctrl-C cancels it (its nodes leave, as a program's would) and then
    raises KeyboardInterrupt. (Left to trio, the interrupt is raised wherever the main thread
    is, the progress bar's code among other places; a run was seen going on after it.)"""
    result: dict[str, Any] | None = None
    async with trio.open_nursery() as nursery:
        async def on_interrupt() -> None:
            with trio.open_signal_receiver(signal.SIGINT) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(on_interrupt)
        result = await demo()
        nursery.cancel_scope.cancel()
    if result is None:
        raise KeyboardInterrupt
    return result


def _healthy(result: dict[str, Any]) -> bool:
    return bool(result["request_success_ratio"] == 1.0
                and result["broadcast_delivery_ratio"] == 1.0
                and result["publish_delivery_ratio"] == 1.0 and result["tunnel_in_order"])
