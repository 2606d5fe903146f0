"""Where the chaos nodes live, and how the network between their groups fails.

`NamespaceTopology` gives each group its own network namespace, joined to a router namespace by
a veth pair, on a /24 of a private subnet that exists only inside these namespaces: nothing is
routed to or from the machine's own network. A cut is what a real partition looks like to TCP:
two `ip rule ... blackhole` in the router drop every packet from or to the group silently (no
RST, no ICMP, no link change at either end); the heal deletes them. `loss` and `delay` put a
netem qdisc on both ends of the group's link, where the kernel has netem. Where it has not,
loss is still possible (`_random_drop`): a classic BPF filter sends that share of the packets,
at random, to a class whose queue takes none (delay has no such stand-in).

`LoopbackTopology` is for runs without root or `ip`: every node on 127.0.0.1, groups are only
labels, and only process faults (pause, kill) are possible.

Namespaces carry the run's process id in their names, so parallel runs and leftovers of a
killed run never collide, and `close` deletes exactly the ones this run created (their veths go
with them).
"""

from __future__ import annotations

import os
import shutil
import subprocess

SUBNET = "10.213"  # group g: 10.213.g.0/24, its nodes on .1, the router on .254
MAX_GROUPS = 200
NETWORK_FAULTS = ("partition", "loss", "delay")
PROCESS_FAULTS = ("pause", "kill")


class SetupError(Exception):
    """Something the run needs is missing or failed to set up; the message is one line."""


NO_LOSS = "the kernel cannot drop packets at random"


def _run(argv: list[str], check: bool = True) -> None:
    try:
        subprocess.run(argv, check=check, capture_output=True, text=True, timeout=15)
    except subprocess.CalledProcessError as exc:
        raise SetupError(f"`{' '.join(argv)}` failed: {exc.stderr.strip()}") from None
    except subprocess.TimeoutExpired:
        raise SetupError(f"`{' '.join(argv)}` did not finish in 15 s") from None


def _random_drop(namespace: str, device: str, share: float) -> None:
    """Drop `share` of the IP packets leaving `device`, at random, without netem: an HTB root
    whose class 1:2 queues nothing (pfifo, limit 0), and a classic BPF classifier that sends a
    packet there when a random number falls below the share (other packets, and ARP, go to
    the default class 1:1, at a rate no test reaches). Only the classifier and HTB are needed,
    which kernels without netem's module (nor the gact action's) still have."""
    tc = ["tc", "-n", namespace]
    threshold = min(int(share * 2**32), 2**32 - 1)
    # ld rand (SKF_AD_OFF + SKF_AD_RANDOM); if A >= threshold skip one; ret 1:2; ret 0 (no
    # match: the default class).
    program = f"4,32 0 0 {2**32 - 0x1000 + 56},53 1 0 {threshold},6 0 0 {0x10002},6 0 0 0"
    _run([*tc, "qdisc", "add", "dev", device, "root", "handle", "1:", "htb", "default", "1",
          "r2q", "100000"])
    for leaf in ("1:1", "1:2"):
        _run([*tc, "class", "add", "dev", device, "parent", "1:", "classid", leaf, "htb",
              "rate", "10gbit"])
    _run([*tc, "qdisc", "add", "dev", device, "parent", "1:2", "pfifo", "limit", "0"])
    _run([*tc, "filter", "add", "dev", device, "parent", "1:", "protocol", "ip", "bpf",
          "bytecode", program, "classid", "1:2"])


def namespaces_possible() -> bool:
    """Root and the `ip` command: what creating namespaces and routes takes."""
    return os.geteuid() == 0 and shutil.which("ip") is not None


class LoopbackTopology:
    """Every group on 127.0.0.1 of this machine's own namespace."""

    faults = PROCESS_FAULTS
    isolated = False

    def host(self, group: int) -> str:
        return "127.0.0.1"

    def command(self, group: int, argv: list[str]) -> list[str]:
        return argv

    def close(self) -> list[str]:
        return []


class NamespaceTopology:
    """A router namespace and one namespace per group (see the module docstring)."""

    faults = PROCESS_FAULTS + NETWORK_FAULTS
    isolated = True

    def __init__(self, groups: int) -> None:
        if not 1 <= groups <= MAX_GROUPS:
            raise SetupError(f"between 1 and {MAX_GROUPS} groups")
        self.groups = groups
        prefix = f"iris-chaos-{os.getpid()}"
        self.router = f"{prefix}-r"
        self.names = [f"{prefix}-g{g}" for g in range(groups)]
        self.created: list[str] = []
        self._rules: list[list[str]] = []  # ip rule arguments in force (cuts)
        self._qdiscs: list[tuple[str, str]] = []  # (namespace, device) with a netem qdisc

    def create(self) -> None:
        """Build the namespaces; what was created before a failure is still deleted by
        `close`."""
        for name in (self.router, *self.names):
            _run(["ip", "netns", "add", name])
            self.created.append(name)
        _run(["ip", "netns", "exec", self.router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for g, name in enumerate(self.names):
            _run(["ip", "link", "add", f"g{g}", "netns", self.router, "type", "veth",
                  "peer", "name", "eth0", "netns", name])
            _run(["ip", "-n", self.router, "addr", "add", f"{SUBNET}.{g}.254/24", "dev", f"g{g}"])
            _run(["ip", "-n", self.router, "link", "set", f"g{g}", "up"])
            _run(["ip", "-n", name, "addr", "add", f"{self.host(g)}/24", "dev", "eth0"])
            _run(["ip", "-n", name, "link", "set", "eth0", "up"])
            _run(["ip", "-n", name, "link", "set", "lo", "up"])
            _run(["ip", "-n", name, "route", "add", "default", "via", f"{SUBNET}.{g}.254"])

    def host(self, group: int) -> str:
        return f"{SUBNET}.{group}.1"

    def command(self, group: int, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.names[group], *argv]

    # ------------------------------------------------------------------- faults
    def cut(self, group: int) -> None:
        """Drop every packet from or to `group` at the router, silently."""
        for rule in (["from", f"{SUBNET}.{group}.0/24"], ["to", f"{SUBNET}.{group}.0/24"]):
            _run(["ip", "-n", self.router, "rule", "add", *rule, "blackhole"])
            self._rules.append(rule)

    def degrade(self, group: int, netem: list[str]) -> None:
        """`netem` (e.g. ["loss", "30%"]) on both ends of the group's link; a loss without
        netem by `_random_drop`."""
        for namespace, device in ((self.router, f"g{group}"), (self.names[group], "eth0")):
            try:
                _run(["tc", "-n", namespace, "qdisc", "add", "dev", device, "root", "netem",
                      *netem])
            except SetupError as exc:
                if netem[0] != "loss":
                    raise SetupError(f"the kernel has no usable netem qdisc ({exc})") from None
                try:
                    _random_drop(namespace, device, float(netem[1].rstrip("%")) / 100)
                except SetupError as why:
                    _run(["tc", "-n", namespace, "qdisc", "del", "dev", device, "root"],
                         check=False)
                    raise SetupError(f"{NO_LOSS}: no netem qdisc ({exc}), and no HTB with a "
                                     f"BPF classifier ({why})") from None
            self._qdiscs.append((namespace, device))

    def heal(self) -> None:
        """Undo every cut and netem qdisc."""
        while self._rules:
            _run(["ip", "-n", self.router, "rule", "del", *self._rules[-1], "blackhole"])
            self._rules.pop()
        while self._qdiscs:
            namespace, device = self._qdiscs[-1]
            _run(["tc", "-n", namespace, "qdisc", "del", "dev", device, "root"])
            self._qdiscs.pop()

    def close(self) -> list[str]:
        """Delete the namespaces this run created; returns what could not be deleted."""
        left = []
        while self.created:
            name = self.created.pop()
            try:
                _run(["ip", "netns", "del", name])
            except SetupError as exc:
                left.append(str(exc))
        return left
