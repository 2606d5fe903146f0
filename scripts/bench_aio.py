"""What the asyncio face (`iris.aio`) costs against the trio API, measured in one run.

    python scripts/bench_aio.py [--repeats 3] [--workloads rtt,req16,pubsub] [--req-seconds 3]
                                [--events 100000] [--faces trio,aio] [--root any] [--json]

Workloads and parameters as in peers-bench (`../shared/peers-bench`): `rtt` sequential 64 B
request/reply (500 warm-up, 5000 measured): p50, p99; `req16` 16 concurrent requesters, 0.5 s
warm-up, requests/s completed in a fixed window; `pubsub` N x 1 KiB events, one publisher, one
subscriber primed by a warm-up: sent/s, received/s (first to last arrival), fraction arrived,
and which node was the topic's root (`root=`: with the root on the subscriber's node each batch
of events crosses a routed, acknowledged hop; `--root` picks the side, by the topic's name).
Each measurement is two OS processes using the face under test: a server node ("echo" or a
subscription) and a client node seeded with it. trio: `trio.run` + `iris.open_node`; aio:
`asyncio.run` + `iris.aio.open_node`, handler and callback asyncio coroutines; sync (opt-in):
`iris.sync.open_node`, plain functions, a thread per requester. Children are this script with
`--child`: JSON lines out (ready, primed, result, bye, error), commands in (go, end N, stop).
Faces are interleaved (trio, aio, trio, aio, ...); figures are medians, `aio/trio` the ratio of
medians. CPU is user+system per operation (client: measured part; server: since ready, warm-up
included). BENCH_AIO_PROFILE=client:FILE (or server:FILE) runs that side under cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import trio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import iris  # noqa: E402
import iris.aio  # noqa: E402
from overlay.ids import key_for, ring_distance  # noqa: E402

SERVICE, TOPIC, LISTEN = "echo", "bench-aio", "127.0.0.1:0"
WARM, MEAS = 0x57, 0x4D  # first byte of an event: warm-up or measured
LIFE_S = 600.0  # no child lives longer than this
METRICS = {  # workload -> [(metric, higher is better)], the first one is the headline
    "rtt": [("p50_us", False), ("p99_us", False), ("cli_cpu_us", False), ("srv_cpu_us", False)],
    "req16": [("req_per_s", True), ("p50_us", False), ("cli_cpu_us", False),
              ("srv_cpu_us", False)],
    "pubsub": [("sent_per_s", True), ("recv_per_s", True), ("arrived", True),
               ("cli_cpu_us", False), ("srv_cpu_us", False)],
}
Fns = list[Callable[[], Awaitable[None]]]


def cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def topic_for(subscriber: int, root: str) -> str:
    """The topic: with `root` "subscriber" (or "publisher"), the one of 4,096 names whose key
    is nearest to (farthest from) the subscriber's node id, so the root falls on that side but
    for a chance of about 1 in 4,096 (`root_side` reports the side that came out)."""
    if root == "any":
        return TOPIC
    names = [f"{TOPIC}-{i}" for i in range(4096)]
    by_distance = sorted(names, key=lambda n: ring_distance(subscriber, key_for("topic:" + n)))
    return by_distance[0] if root == "subscriber" else by_distance[-1]


def emit(kind: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"_": kind, **data}) + "\n")
    sys.stdout.flush()


# ------------------------------------------------------------------ child processes
class Control:
    """Commands from the parent on stdin, read by a daemon thread."""

    def __init__(self) -> None:
        self.go, self.stop = threading.Event(), threading.Event()
        self.end: int | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in sys.stdin:
                cmd = line.split() or [""]
                if cmd[0] == "go":
                    self.go.set()
                elif cmd[0] == "end":
                    self.end = int(cmd[1])
                elif cmd[0] == "stop":
                    break
        finally:
            self.stop.set()


def run_now(coro: Any) -> Any:
    """Run a coroutine that never suspends (the sync face's calls all block)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise RuntimeError("run_now: the coroutine suspended")


async def trio_together(fns: Fns) -> None:
    async with trio.open_nursery() as nursery:
        for fn in fns:
            nursery.start_soon(fn)


async def aio_together(fns: Fns) -> None:
    async with asyncio.TaskGroup() as group:
        for fn in fns:
            group.create_task(fn())  # type: ignore[arg-type]


async def sync_together(fns: Fns) -> None:
    threads = [threading.Thread(target=run_now, args=(fn(),)) for fn in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


async def sync_sleep(seconds: float) -> None:
    time.sleep(seconds)  # noqa: ASYNC251 - run by run_now, never on an event loop


@asynccontextmanager
async def sync_open(**options: Any) -> Any:
    """An `iris.sync` node, its methods as coroutines that never suspend."""
    def wrap(method: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)
        return call
    with importlib.import_module("iris.sync").open_node(**options) as node:
        yield SimpleNamespace(address=node.address, id=node.id, **{
            m: wrap(getattr(node, m)) for m in ("request", "publish", "register", "subscribe")})


def face(name: str) -> SimpleNamespace:
    """What differs between the faces; the drivers below are written once against it."""
    if name == "trio":
        return SimpleNamespace(run=trio.run, open=iris.open_node, sleep=trio.sleep,
                               together=trio_together, plain=False)
    if name == "aio":
        return SimpleNamespace(run=lambda fn: asyncio.run(fn()), open=iris.aio.open_node,
                               sleep=asyncio.sleep, together=aio_together, plain=False)
    return SimpleNamespace(run=lambda fn: run_now(fn()), open=sync_open, sleep=sync_sleep,
                           together=sync_together, plain=True)


async def serve(f: SimpleNamespace, workload: str, p: dict[str, Any], ctl: Control) -> None:
    key, n = iris.generate_network_key(), {"ops": 0, "meas": 0, "first": 0.0, "last": 0.0}

    def count(data: bytes) -> bytes:  # echo, and counts of what arrived
        n["ops"] += 1
        if workload != "pubsub":
            return data
        if data[0] == MEAS:
            n["meas"] += 1
            n["last"] = time.perf_counter()
            n["first"] = n["first"] or n["last"]
        elif n["ops"] == 1:
            emit("primed")
        return data

    async def acount(data: bytes) -> bytes:
        return count(data)

    handler = count if f.plain else acount
    async with f.open(network_key=key, listen=LISTEN) as node:
        topic = topic_for(node.id, p["root"])
        if workload == "pubsub":
            await node.subscribe(topic, handler)
        else:
            await node.register(SERVICE, SimpleNamespace(handle_request=handler))
        cpu0, t_end = cpu_s(), time.monotonic() + LIFE_S
        emit("ready", seed="{}:{}".format(*node.address), key=key.hex(), node_id=node.id,
             topic=topic)
        seen = (0, time.monotonic())  # (measured events, when that count last changed)
        while workload == "pubsub" and not ctl.stop.is_set() and time.monotonic() < t_end:
            if seen[0] != n["meas"]:
                seen = (int(n["meas"]), time.monotonic())
            # report once all N are in, or nothing new came for 3 s
            if ctl.end is not None and (n["meas"] >= ctl.end or time.monotonic() - seen[1] > 3):
                span = n["last"] - n["first"]
                emit("result", received=n["meas"], recv_per_s=n["meas"] / span if span else 0.0)
                break
            await f.sleep(0.05)
        while not ctl.stop.is_set() and time.monotonic() < t_end:
            await f.sleep(0.05)
        emit("bye", cpu_us=(cpu_s() - cpu0) * 1e6 / max(1, n["ops"]))


def p50_p99(lat_ns: list[int]) -> dict[str, float]:
    lat = sorted(lat_ns) or [0]
    return {"p50_us": lat[len(lat) // 2] / 1e3, "p99_us": lat[int(len(lat) * 0.99)] / 1e3}


async def client(f: SimpleNamespace, workload: str, p: dict[str, Any], ctl: Control) -> None:
    async with f.open(network_key=bytes.fromhex(p["key"]), listen=LISTEN,
                      seeds=[p["seed"]]) as node:
        msg, t0, clock = bytes([MEAS]) + b"x" * 63, time.monotonic(), time.perf_counter_ns
        while workload != "pubsub":  # until the overlay routes "echo" to the server
            try:
                await node.request(SERVICE, b"probe", timeout=1.0)
                break
            except Exception:
                if time.monotonic() - t0 > 30:
                    raise
                await f.sleep(0.1)
        if workload == "rtt":
            for _ in range(p["rtt_warmup"]):
                assert await node.request(SERVICE, msg, timeout=5.0) == msg
            lat, cpu0 = [], cpu_s()
            for _ in range(p["rtt_requests"]):
                t = clock()
                reply = await node.request(SERVICE, msg, timeout=5.0)
                lat.append(clock() - t)
                assert reply == msg
            res = {**p50_p99(lat), "cli_cpu_us": (cpu_s() - cpu0) * 1e6 / len(lat)}
        elif workload == "req16":
            start = clock() + int(p["req_warmup_s"] * 1e9)
            end = start + int(p["req_seconds"] * 1e9)
            lat, cpu = [], [0.0, 0.0]  # CPU time at the window's start and end

            async def requester() -> None:
                while (t := clock()) < end:
                    if t >= start and not cpu[0]:
                        cpu[0] = cpu_s()
                    reply = await node.request(SERVICE, msg, timeout=5.0)
                    done = clock()
                    assert reply == msg
                    if t >= start and done <= end:
                        lat.append(done - t)
                    if done >= end and not cpu[1]:
                        cpu[1] = cpu_s()

            await f.together([requester] * p["req_concurrency"])
            res = {"req_per_s": len(lat) / p["req_seconds"], "completed": len(lat), **p50_p99(lat),
                   "cli_cpu_us": (cpu[1] - cpu[0]) * 1e6 / max(1, len(lat))}
        else:
            warm = bytes([WARM]) + b"x" * 1023
            while not ctl.go.is_set():  # warm up until the subscriber has seen one
                if time.monotonic() - t0 > 30:
                    raise RuntimeError("the subscriber was not primed within 30 s")
                await node.publish(p["topic"], warm)
                await f.sleep(0.02)
            tail, sent, cpu0, t1 = b"x" * (1024 - 9), 0, cpu_s(), time.perf_counter()
            while sent < p["events"]:  # distinct payloads: marker, sequence number, filler
                await node.publish(p["topic"], bytes([MEAS]) + sent.to_bytes(8, "big") + tail)
                sent += 1
                if not sent & 255 and time.perf_counter() - t1 > p["pubsub_max_seconds"]:
                    break
            await f.sleep(0)
            res = {"sent": sent, "sent_per_s": sent / (time.perf_counter() - t1),
                   "cli_cpu_us": (cpu_s() - cpu0) * 1e6 / max(1, sent), "node_id": node.id}
        emit("result", **res)
        t_end = time.monotonic() + LIFE_S
        while not ctl.stop.is_set() and time.monotonic() < t_end:
            await f.sleep(0.05)


def child(role: str, face_name: str, workload: str, params: str) -> None:
    ctl, f, p = Control(), face(face_name), json.loads(params)
    profile = os.environ.get("BENCH_AIO_PROFILE", "")

    def run() -> None:
        f.run(lambda: (serve if role == "server" else client)(f, workload, p, ctl))
    try:
        if not profile.startswith(role + ":"):
            return run()
        import cProfile
        with cProfile.Profile() as prof:
            run()
        prof.dump_stats(f"{profile.split(':', 1)[1]}.{face_name}.{workload}")
    except BaseException as exc:
        emit("error", message=f"{role}: {type(exc).__name__}: {exc}")
        raise


# ------------------------------------------------------------------------- parent
class Child:
    """One child process; its stdout lines go to a queue, read by a thread."""

    def __init__(self, role: str, face_name: str, workload: str, p: dict[str, Any],
                 log: str) -> None:
        self.role, self.log, self.lines = role, log, queue.Queue[dict[str, Any] | None]()
        with open(log, "w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--child", role, face_name,
                 workload, json.dumps(p)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def expect(self, kind: str, timeout: float, watch: Child | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if watch is not None and watch.proc.poll() is not None:
                raise RuntimeError(f"the {watch.role} exited (see {watch.log})")
            try:
                msg = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if msg is None or msg["_"] == "error":
                raise RuntimeError(f"{self.role}: {msg['message'] if msg else 'exited'} "
                                   f"(see {self.log})")
            if msg["_"] == kind:
                return msg
        raise RuntimeError(f"no {kind!r} from the {self.role} within {timeout:.0f} s")

    def close(self, grace: float) -> None:
        try:
            self.send("stop")
            self.proc.wait(grace)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def root_side(subscriber: int, publisher: int, topic: str) -> str:
    """Which of the two nodes is the topic's root: the node whose id is nearer its key."""
    key = key_for("topic:" + topic)
    return "subscriber" if ring_distance(subscriber, key) < ring_distance(publisher, key) \
        else "publisher"


def measure(face_name: str, workload: str, p: dict[str, Any], logs: str) -> dict[str, Any]:
    tag = os.path.join(logs, f"{workload}-{face_name}-{time.monotonic_ns()}")
    srv, cli, grace = Child("server", face_name, workload, p, tag + "-server.log"), None, 0.0
    try:
        ready = srv.expect("ready", 60)
        cli = Child("client", face_name, workload, {**p, **ready}, tag + "-client.log")
        if workload == "pubsub":
            srv.expect("primed", 60, watch=cli)
            cli.send("go")
            res = cli.expect("result", p["pubsub_max_seconds"] + 60, watch=srv)
            srv.send(f"end {res['sent']}")
            sub = srv.expect("result", 60, watch=cli)
            res.update(recv_per_s=sub["recv_per_s"], received=sub["received"],
                       arrived=sub["received"] / res["sent"],
                       root=root_side(ready["node_id"], res.pop("node_id"), ready["topic"]))
        else:
            res = cli.expect("result", 60 + p["req_seconds"], watch=srv)
        cli.send("stop")
        srv.send("stop")
        res["srv_cpu_us"] = srv.expect("bye", 10)["cpu_us"]
        del res["_"]
        grace = 10.0  # (after a failure or Ctrl-C: none, both are killed at once)
        return res
    finally:
        for c in (cli, srv):
            if c is not None:
                c.close(grace)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workloads", default="rtt,req16,pubsub")
    ap.add_argument("--faces", default="trio,aio", help="of trio,aio,sync; the first is the base")
    ap.add_argument("--req-seconds", type=float, default=3.0)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--root", choices=("any", "subscriber", "publisher"), default="any",
                    help="pubsub: the node the topic's root falls on (any: by chance)")
    ap.add_argument("--json", action="store_true", help="print only the JSON object")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child)
    faces, workloads = args.faces.split(","), args.workloads.split(",")
    if not set(workloads) <= set(METRICS) or not set(faces) <= {"trio", "aio", "sync"}:
        ap.error("unknown workload or face")
    p = {"rtt_warmup": 500, "rtt_requests": 5000, "req_concurrency": 16, "req_warmup_s": 0.5,
         "req_seconds": args.req_seconds, "events": args.events, "pubsub_max_seconds": 20.0,
         "root": args.root}
    logs = tempfile.mkdtemp(prefix="bench_aio-")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {w: {f: [] for f in faces}
                                                         for w in workloads}
    for w in workloads:
        for i in range(args.repeats):
            for f in faces:
                res = measure(f, w, p, logs)
                runs[w][f].append(res)
                print(f"{w} {f} #{i + 1}: " + " ".join(f"{k}={res[k]:.4g}" for k, _ in METRICS[w])
                      + (f" root={res['root']}" if "root" in res else ""),
                      file=sys.stderr)
    medians = {w: {f: {k: statistics.median(r[k] for r in runs[w][f]) for k, _ in METRICS[w]}
                   for f in faces} for w in workloads}
    ratios = {w: {f"{f}/{faces[0]}": {k: medians[w][f][k] / (medians[w][faces[0]][k] or 1e-12)
                                      for k, _ in METRICS[w]} for f in faces[1:]}
              for w in workloads}
    if not args.json:
        cols = faces + list(ratios[workloads[0]])
        print(f"{'workload':9}{'metric':14}" + "".join(f"{c:>12}" for c in cols))
        for w in workloads:
            for k, higher in METRICS[w]:
                row = [medians[w][f][k] for f in faces] + [r[k] for r in ratios[w].values()]
                print(f"{w:9}{k + (' ^' if higher else ' v'):14}"
                      + "".join(f"{v:12.3f}" if v < 100 else f"{v:12.0f}" for v in row))
        print(f"(^ higher is better, v lower; medians of {args.repeats}; logs in {logs})")
    print(json.dumps({"params": p, "faces": faces, "repeats": args.repeats, "medians": medians,
                      "ratios": ratios, "runs": runs}))


if __name__ == "__main__":
    main()
