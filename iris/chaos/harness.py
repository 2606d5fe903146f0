"""The chaos run's schedule: set up, wait for a steady state, inject the fault, heal, measure.

1. Groups of `iris node` processes (each group in its own network namespace when the machine
   allows it), all joined into one ring, and one workload agent beside each node: every agent
   serves its group's cluster and delivers the events topic; the first agent of each group
   also sends requests to every group's cluster and publishes sequence-numbered events; one
   agent keeps a tunnel open to the faulted group's cluster.
2. The run waits (with a deadline) until every request succeeds, every subscriber gets every
   publisher's events, the tunnel echoes and the leaf sets are complete: only then is there a
   baseline to compare with.
3. After `BASELINE_S` the fault, for its duration, then the heal; the run goes on until
   requests are 100% again and the leaf sets complete (at least `MIN_TAIL_S`, which leaves
   events published 5 s after the heal time to arrive, at most `MAX_TAIL_S`).
4. The agents stop, and `iris.chaos.report` judges their records.

Everything this run creates (processes, namespaces, its temporary directory) is removed in a
`finally` that SIGTERM, SIGHUP and Ctrl-C reach too, and the whole run has a hard time limit.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import iris
from iris.chaos import report as rep
from iris.chaos.processes import Processes
from iris.chaos.records import Records, Tail, agent_name, cluster_of
from iris.chaos.topology import (
    NETWORK_FAULTS,
    LoopbackTopology,
    NamespaceTopology,
    SetupError,
    namespaces_possible,
)
from overlay.config import OverlayConfig

FAULTS = ("partition", "pause", "kill", "loss", "delay")
DEFAULT_DURATION_S = {"partition": 45.0, "pause": 15.0, "kill": 15.0, "loss": 30.0,
                      "delay": 30.0}
BASELINE_S = 5.0
STEADY_S = 3.0  # the steady state: this long with every request and event through
MIN_TAIL_S = 20.0
MAX_TAIL_S = 45.0
POLL_S = 0.5
NODE_PORT, RELAY_PORT = 7001, 56001  # + the node's index in its group (namespaces)
NODE_READY = "relay listening on port"


@dataclass
class Options:
    fault: str = "partition"
    groups: int = 3
    nodes: int = 3
    duration: float | None = None  # None: DEFAULT_DURATION_S of the fault
    seed: int = 1
    request_rate: float = 4.0  # per requester and target cluster, per second
    request_timeout: float = 2.0
    event_rate: float = 10.0  # per publisher, per second
    loss_percent: float = 30.0
    delay_ms: float = 300.0
    logs: str | None = None  # keep node logs and agent records here
    setup_limit: float = 90.0

    @property
    def fault_duration(self) -> float:
        return DEFAULT_DURATION_S[self.fault] if self.duration is None else self.duration

    @property
    def time_limit(self) -> float:
        return self.setup_limit + BASELINE_S + self.fault_duration + MAX_TAIL_S + 60.0


class Interrupted(Exception):
    """SIGTERM or SIGHUP: end the run as Ctrl-C does, cleaning up."""


@contextmanager
def signals_raise() -> Iterator[None]:
    def interrupt(signum: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def signals_held() -> Iterator[None]:
    """Cleanup is not cut short by a second Ctrl-C; a signal that came waits until it is done."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)


def run(options: Options) -> dict[str, Any]:
    """One chaos run; the report (`iris.chaos.report`). SetupError when it cannot run."""
    check_options(options)
    with signals_raise():
        chaos = ChaosRun(options)
        try:
            return chaos.execute()
        finally:
            with signals_held():
                chaos.cleanup()


def check_options(options: Options) -> None:
    if options.fault not in FAULTS:
        raise SetupError(f"unknown fault {options.fault!r} (one of {', '.join(FAULTS)})")
    if options.groups < 2:
        raise SetupError("at least 2 groups")
    if options.nodes < 1 or (options.fault in ("pause", "kill") and options.nodes < 2):
        raise SetupError("pause and kill stop all but one node of a group: at least 2 nodes")
    if options.fault_duration <= 0:
        raise SetupError("the fault needs a positive duration")
    if options.fault in NETWORK_FAULTS and not namespaces_possible():
        raise SetupError(f"--fault {options.fault} needs root and the `ip` command (network "
                         "namespaces); run as root or choose --fault pause|kill")
    if options.fault in ("loss", "delay") and shutil.which("tc") is None:
        raise SetupError(f"--fault {options.fault} needs the `tc` command (netem)")


def _fresh_dir(path: str | None) -> tuple[str, str | None]:
    """The directory for the run's files, and the temporary one to delete afterwards. A kept
    one must be new or empty: records appended to an earlier run's would be judged with it."""
    if path is None:
        temp = tempfile.mkdtemp(prefix="iris-chaos-")
        return temp, temp
    if os.path.isdir(path) and os.listdir(path):
        raise SetupError(f"--logs {path}: not empty (the records of a run go to a new or empty "
                         "directory)")
    os.makedirs(path, exist_ok=True)
    return path, None


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class ChaosRun:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.deadline = time.time() + options.time_limit
        self.topology: NamespaceTopology | LoopbackTopology = (
            NamespaceTopology(options.groups) if namespaces_possible() else LoopbackTopology())
        self.dir, self.temp_dir = _fresh_dir(options.logs)
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH"))
                                            if p)
        self.processes = Processes(env)
        self.records = Records()
        self.tails: list[Tail] = []
        rng = random.Random(options.seed)
        self.faulted_group = rng.randrange(options.groups)
        g = self.faulted_group
        self.stopped = ([agent_name(g, i) for i in range(1, options.nodes)]
                        if options.fault in ("pause", "kill") else [])
        self.names = [agent_name(group, i) for group in range(options.groups)
                      for i in range(options.nodes)]
        self.requesters = [agent_name(group, 0) for group in range(options.groups)]
        self.tunnel_opener = agent_name((g + 1) % options.groups, 0)
        self.leaf_size = OverlayConfig().leaf_size
        self.addresses: dict[str, tuple[str, int, int]] = {}  # node: (host, port, relay port)
        self.network = ""

    # ------------------------------------------------------------------------ the run
    def execute(self) -> dict[str, Any]:
        o = self.options
        started = time.time()
        self.set_up()
        self.wait_for("a steady state", self.steady, self.deadline_in(o.setup_limit, started))
        steady = time.time()
        self.sleep_until(steady + BASELINE_S)
        fault_at = time.time()
        self.inject()
        self.sleep_until(fault_at + o.fault_duration)
        heal_at = time.time()
        self.heal()
        fault = rep.Fault(o.fault, self.faulted_group, tuple(self.stopped), fault_at, heal_at)
        self.wait_for("the heal", lambda: self.healed(fault), heal_at + MAX_TAIL_S,
                      minimum=heal_at + MIN_TAIL_S, required=False)
        stop_at = time.time()
        self.processes.stop(self.names_of("agent"), grace=3.0)
        self.read_records()
        window = rep.Window(steady, stop_at - (o.request_timeout + 2.5),
                            stop_at - rep.LATE_AFTER_S)
        figures = rep.figures(self.records, fault, window, self.leaf_size)
        checks = rep.checks(figures, fault)
        return {
            "fault": o.fault, "faulted_group": self.faulted_group,
            "stopped_nodes": self.stopped, "duration_s": o.fault_duration,
            "groups": o.groups, "nodes_per_group": o.nodes, "seed": o.seed,
            "network": self.network, "namespaces": self.topology.isolated,
            "timeline_s": {"setup": round(steady - started, 2),
                           "fault": round(fault_at - steady, 2),
                           "heal": round(heal_at - steady, 2),
                           "end": round(stop_at - steady, 2)},
            "logs": o.logs, "figures": figures, "checks": checks,
            "passed": all(c["passed"] for c in checks),
        }

    def deadline_in(self, seconds: float, since: float) -> float:
        return min(self.deadline, since + seconds)

    def set_up(self) -> None:
        o = self.options
        if isinstance(self.topology, NamespaceTopology):
            self.topology.create()
            if o.fault in ("loss", "delay"):  # find out now, not at the fault
                self.topology.degrade(0, ["loss", "0%"] if o.fault == "loss" else ["delay", "1ms"])
                self.topology.heal()
            self.network = f"{o.groups} network namespaces and a router, on a private subnet"
        else:
            self.network = ("loopback only (no root or no `ip`): no namespaces, so only the "
                            "pause and kill faults")
        key_file = os.path.join(self.dir, "network.key")
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(iris.generate_network_key())
        ports = _free_ports(2 * len(self.names)) if not self.topology.isolated else []
        for n, name in enumerate(self.names):
            g, i = divmod(n, o.nodes)
            if self.topology.isolated:
                self.addresses[name] = (self.topology.host(g), NODE_PORT + i, RELAY_PORT + i)
            else:
                self.addresses[name] = ("127.0.0.1", ports[2 * n], ports[2 * n + 1])
        seed_host, seed_port, _ = self.addresses[self.names[0]]
        for n, name in enumerate(self.names):
            host, port, relay = self.addresses[name]
            argv = [sys.executable, "-m", "iris.cli", "node", "--listen", f"{host}:{port}",
                    "--relay-port", str(relay), "--network-key-file", key_file,
                    "--busy-poll-us", "0"]
            if n:
                argv += ["--seed", f"{seed_host}:{seed_port}"]
            self.processes.start(f"node-{name}",
                                 self.topology.command(n // o.nodes, argv),
                                 os.path.join(self.dir, f"node-{name}.log"))
            if n == 0:  # the others join through it
                self.wait_for("the first node", lambda: self.node_ready(self.names[0]),
                              self.deadline_in(30.0, time.time()))
        self.wait_for("the nodes to join", lambda: all(map(self.node_ready, self.names)),
                      self.deadline_in(o.setup_limit, time.time()))
        for n, name in enumerate(self.names):
            self.start_agent(name, n // o.nodes)

    def start_agent(self, name: str, group: int) -> None:
        o = self.options
        out = os.path.join(self.dir, f"{name}.jsonl")
        argv = [sys.executable, "-m", "iris.chaos.agent", "--relay-port",
                str(self.addresses[name][2]), "--name", name, "--cluster", cluster_of(group),
                "--out", out, "--until", f"{self.deadline + 5:.3f}",
                "--request-timeout", str(o.request_timeout)]
        if name in self.requesters:
            argv += ["--targets", ",".join(cluster_of(g) for g in range(o.groups)),
                     "--request-rate", str(o.request_rate), "--publish-rate", str(o.event_rate)]
        if name == self.tunnel_opener:
            argv += ["--tunnel-to", cluster_of(self.faulted_group)]
        self.processes.start(f"agent-{name}", self.topology.command(group, argv),
                             os.path.join(self.dir, f"agent-{name}.log"))
        self.tails.append(Tail(name, out))

    def names_of(self, kind: str) -> list[str]:
        return [f"{kind}-{name}" for name in self.names]

    # ------------------------------------------------------------------------- faults
    def inject(self) -> None:
        o, g = self.options, self.faulted_group
        if o.fault == "partition":
            assert isinstance(self.topology, NamespaceTopology)
            self.topology.cut(g)
        elif o.fault in ("loss", "delay"):
            assert isinstance(self.topology, NamespaceTopology)
            netem = (["loss", f"{o.loss_percent:g}%"] if o.fault == "loss"
                     else ["delay", f"{o.delay_ms:g}ms"])
            self.topology.degrade(g, netem)
        for name in self.stopped:
            if o.fault == "pause":
                self.processes.pause(f"node-{name}")
            else:
                self.processes.kill(f"node-{name}")

    def heal(self) -> None:
        if isinstance(self.topology, NamespaceTopology):
            self.topology.heal()
        for name in self.stopped:
            if self.options.fault == "pause":
                self.processes.resume(f"node-{name}")
            else:
                self.processes.restart(f"node-{name}")

    # ---------------------------------------------------------------------- conditions
    def node_ready(self, name: str) -> bool:
        proc = self.processes.all[f"node-{name}"]
        if not proc.running:
            raise SetupError(f"node {name} exited during setup: "
                             f"{proc.log_tail(3).strip() or 'no output'}")
        with open(proc.log_path, errors="replace") as f:
            return NODE_READY in f.read()

    def read_records(self) -> None:
        for tail in self.tails:
            tail.read_into(self.records)

    def steady(self) -> bool:
        """Every request of the last STEADY_S succeeded (each requester reaching every
        cluster), every agent got every publisher's events, the tunnel echoes, and every leaf
        set is complete."""
        self.read_records()
        now, recent = time.time(), time.time() - STEADY_S
        outcomes = [r for r in self.records["req"] if r["done"] >= recent]
        pairs = {(r["agent"], r["target"]) for r in outcomes if r["outcome"] == "ok"}
        events = {(r["agent"], r["pub"]) for r in self.records["ev"] if r["t"] >= recent}
        echoes = [r for r in self.records["tunnel"] if r["event"] == "echo" and r["t"] >= recent]
        statuses = [r for r in self.records["status"] if r["t"] >= now - 1.5]
        return (all(r["outcome"] == "ok" for r in outcomes)
                and len(pairs) == len(self.requesters) * self.options.groups
                and len(events) == len(self.names) * len(self.requesters)
                and bool(echoes)
                and len({r["agent"] for r in statuses}) == len(self.names)
                and rep.leaf_sets_complete(statuses, now - 1.5, self.leaf_size) is not None)

    def healed(self, fault: rep.Fault) -> bool:
        """Affected requests 100% for STEADY_S, and the leaf sets complete."""
        self.read_records()
        settled = time.time() - self.options.request_timeout - 2.5
        affected = [r for r in self.records["req"] if rep.affected(r, fault)]
        recovered = rep.recovery_time(affected, fault.heal, settled)
        return (recovered is not None and settled - (fault.heal + recovered) >= STEADY_S
                and rep.leaf_sets_complete(self.records["status"], fault.heal,
                                           self.leaf_size) is not None)

    def wait_for(self, what: str, condition: Callable[[], bool], deadline: float,
                 minimum: float = 0.0, required: bool = True) -> None:
        """Poll `condition` until it holds (and `minimum` passed) or `deadline`; a setup
        wait that times out is a SetupError, a measuring one just ends."""
        while True:
            done = condition() and time.time() >= minimum
            if done or time.time() >= deadline:
                break
            self.check_processes()
            time.sleep(POLL_S)
        if not done and required:
            raise SetupError(f"no {what} within the time allowed (logs: "
                             f"{self.options.logs or 'pass --logs DIR to keep them'})")

    def sleep_until(self, when: float) -> None:
        while time.time() < when:
            self.check_processes()
            time.sleep(min(POLL_S, max(0.0, when - time.time())))

    def check_processes(self) -> None:
        if time.time() > self.deadline:
            raise SetupError("the run's hard time limit passed")
        for proc in self.processes.all.values():
            stopped_on_purpose = proc.name.removeprefix("node-") in self.stopped
            if not proc.running and not stopped_on_purpose:
                raise SetupError(f"{proc.name} exited: "
                                 f"{proc.log_tail(3).strip() or 'no output'}")

    # ------------------------------------------------------------------------ cleanup
    def cleanup(self) -> None:
        self.processes.stop(self.names_of("agent"), grace=3.0)
        self.processes.stop(self.names_of("node"), grace=3.0)
        left = self.topology.close()
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
        for problem in left:
            print(f"iris chaos: cleanup: {problem}", file=sys.stderr)
