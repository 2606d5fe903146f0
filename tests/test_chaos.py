"""`iris chaos`: its judgement of records made by hand (everywhere), and whole runs (as root).

The whole runs start real node processes in network namespaces, cut one group off (or pause
members), heal, and assert that every check of the report passed: they need root and the `ip`
command, and skip with the reason elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from iris.chaos import report as rep
from iris.chaos.records import Records, Tail, agent_group, agent_name, cluster_group, cluster_of

HEAL = 100.0


def ev(agent: str, pub: str, seq: int, sent: float, t: float) -> dict:
    return {"k": "ev", "agent": agent, "pub": pub, "seq": seq, "sent": sent, "t": t}


def req(sent: float, outcome: str = "ok", agent: str = "g0n0", target: str = "chaos-g1") -> dict:
    return {"k": "req", "agent": agent, "id": f"{agent}-{sent}", "target": target, "sent": sent,
            "done": sent + 0.01, "outcome": outcome, "detail": ""}


def status(agent: str, t: float, node: int, leaf: list[int]) -> dict:
    return {"k": "status", "agent": agent, "t": t, "id": f"{node:032x}",
            "leaf": [f"{n:032x}" for n in leaf]}


def test_names_round_trip():
    assert agent_group(agent_name(12, 3)) == 12
    assert cluster_group(cluster_of(7)) == 7


def test_order_violations_are_per_subscriber_and_publisher():
    deliveries = [ev("a", "p", 0, 0, 1), ev("a", "p", 2, 0, 1), ev("a", "p", 1, 0, 1),  # swap
                  ev("a", "q", 5, 0, 1), ev("b", "p", 0, 0, 1), ev("b", "q", 1, 0, 1)]
    assert rep.order_violations(deliveries) == 1
    assert rep.order_violations(deliveries[:2] + deliveries[3:]) == 0  # a gap is no violation


def test_duplicates_count_every_extra_delivery():
    deliveries = [ev("a", "p", 0, 0, 1)] * 3 + [ev("b", "p", 0, 0, 1)]
    assert rep.duplicate_deliveries(deliveries) == 2
    assert rep.order_violations(deliveries) == 0


def test_late_events_excuse_a_stopped_subscriber():
    deliveries = [ev("a", "p", 0, 10.0, 20.5), ev("b", "p", 0, 10.0, 20.5),
                  ev("a", "p", 1, 10.0, 19.9)]
    stopped = {"b": [(12.0, 18.0)]}
    assert rep.late_deliveries(deliveries, stopped) == [pytest.approx(10.5)]
    assert len(rep.late_deliveries(deliveries, {})) == 2


def test_lost_events_after_the_heal():
    publishes = [{"agent": "p", "seq": s, "t": HEAL + s} for s in range(10)]
    subscriptions = [{"agent": "a", "t": 0.0}, {"agent": "b", "t": 0.0},
                     {"agent": "late", "t": HEAL + 4.0}]  # (re)subscribed after a restart
    deliveries = [ev(sub, "p", s, HEAL + s, HEAL + s + 0.1)
                  for sub in ("a", "b") for s in range(10) if (sub, s) != ("b", 7)]
    lost = rep.lost_events(publishes, deliveries, subscriptions, {}, HEAL + 5.0, HEAL + 9.0)
    # b missed 7; "late" missed everything but counts only from 5 s after subscribing
    assert sorted(lost) == [("p", 7, "b"), ("p", 9, "late")]
    assert rep.lost_events(publishes, deliveries, subscriptions, {"b": [(HEAL, HEAL + 7.5)]},
                           HEAL + 5.0, HEAL + 8.0) == []


def test_duplicate_and_late_executions():
    executions = [{"id": "x", "t": 1.0, "sent": 0.0, "timeout": 2.0},
                  {"id": "x", "t": 1.5, "sent": 0.0, "timeout": 2.0},
                  {"id": "y", "t": 2.5, "sent": 0.0, "timeout": 2.0},
                  {"id": "z", "t": 2.0, "sent": 0.0, "timeout": 2.0}]
    assert rep.executed_twice(executions) == 1
    assert rep.executed_after_deadline(executions) == [pytest.approx(0.5)]


def test_recovery_is_from_the_heal_to_the_first_success_after_the_last_failure():
    outcomes = [req(HEAL - 1, "timeout"), req(HEAL + 0.5, "timeout"), req(HEAL + 1.0),
                req(HEAL + 2.0, "error"), req(HEAL + 3.0), req(HEAL + 4.0)]
    assert rep.recovery_time(outcomes, HEAL, HEAL + 10) == pytest.approx(3.0)
    assert rep.recovery_time(outcomes[:4], HEAL, HEAL + 10) is None  # still failing
    assert rep.recovery_time([req(HEAL + 0.25), req(HEAL + 1)], HEAL, HEAL + 10) == 0.25
    assert rep.recovery_time([], HEAL, HEAL + 10) is None


def test_affected_requests():
    network = rep.Fault("partition", 1, (), 0.0, HEAL)
    assert rep.affected(req(0, agent="g0n0", target="chaos-g1"), network)
    assert not rep.affected(req(0, agent="g1n0", target="chaos-g1"), network)
    paused = rep.Fault("pause", 1, ("g1n1",), 0.0, HEAL)
    assert rep.affected(req(0, agent="g1n0", target="chaos-g1"), paused)
    assert rep.affected(req(0, agent="g2n0", target="chaos-g0"), paused)


def test_expected_leaf_set_small_and_large_rings():
    ring = 1 << 128
    small = [1, 2, 3, 4]
    assert rep.expected_leaf_set(1, small, 16) == {2, 3, 4}
    nodes = [i * (ring // 40) for i in range(40)]
    got = rep.expected_leaf_set(nodes[0], nodes, 16)
    assert got == set(nodes[1:9]) | set(nodes[-8:])


def test_leaf_sets_complete_when_every_node_stays_complete():
    statuses = [status("a", HEAL + 1, 1, [2]), status("b", HEAL + 1, 2, []),
                status("b", HEAL + 3, 2, [1]), status("a", HEAL + 4, 1, [2]),
                status("b", HEAL + 5, 2, [1]), status("a", HEAL - 1, 1, [])]
    assert rep.leaf_sets_complete(statuses, HEAL, 16) == pytest.approx(3.0)
    broken = statuses + [status("a", HEAL + 6, 1, [])]
    assert rep.leaf_sets_complete(broken, HEAL, 16) is None
    # a node that reported before the heal only (killed, not back) is not expected
    assert rep.leaf_sets_complete(statuses + [status("c", HEAL - 1, 3, [1, 2])], HEAL,
                                  16) == pytest.approx(3.0)


def test_tunnel_integrity():
    def t(event: str, i: int = 0, agent: str = "m", s: str = "o-1", reason: str = "") -> dict:
        return {"event": event, "i": i, "agent": agent, "s": s, "t": 0.0, "reason": reason}

    good = [t("open"), *(t("rx", i) for i in range(3)), *(t("echo", i) for i in range(2)),
            t("closed", reason="peer failed"), t("open", s="o-2"), t("rx", 0, s="o-2")]
    figures = rep.tunnel_figures(good)
    assert figures["integrity_violations"] == 0
    assert figures["sessions"] == 2 and figures["closures"] == {"peer failed": 1}
    assert rep.tunnel_figures(good + [t("rx", 2, s="o-2")])["integrity_violations"] == 1
    assert rep.tunnel_figures(good + [t("rx", 3, agent="other")])["integrity_violations"] == 1
    assert rep.tunnel_figures(good + [t("echo", 2), t("echo", 3)])["integrity_violations"] == 1


def test_pause_checks_the_failure_ratio_and_every_fault_the_rest():
    records = Records()
    for r in [req(HEAL - 1), req(HEAL + 1), req(HEAL + 2, target="chaos-g0")]:
        records.add(r["agent"], r)
    window = rep.Window(HEAL - 5, HEAL + 20, HEAL + 20)
    paused = rep.Fault("pause", 1, ("g1n1",), HEAL - 2, HEAL)
    figures = rep.figures(records, paused, window, 16)
    assert figures["requests"]["failed_ratio_to_faulted_cluster"] == 0.0
    names = [c["check"] for c in rep.checks(figures, paused)]
    assert "requests failed, to the paused members' cluster" in names
    partition = rep.Fault("partition", 1, (), HEAL - 2, HEAL)
    results = {c["check"]: c["passed"] for c in rep.checks(figures, partition)}
    assert "requests failed, to the paused members' cluster" not in results
    assert results["requests 100% again after the heal (s)"]
    assert not results["leaf sets complete after the heal (s)"]  # no status reported


def test_tail_reads_only_whole_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    records = Records()
    tail = Tail("g0n0", str(path))
    tail.read_into(records)  # no file yet
    path.write_text('{"k":"pub","seq":0,"t":1.0}\n{"k":"pub","se')
    tail.read_into(records)
    with path.open("a") as f:
        f.write('q":1,"t":2.0}\n')
    tail.read_into(records)
    assert [(r["agent"], r["seq"]) for r in records["pub"]] == [("g0n0", 0), ("g0n0", 1)]


# ------------------------------------------------------------------------ whole runs
def _chaos(*args: str, timeout: float) -> tuple[int, dict, str, str]:
    """Run `iris chaos --json ARGS`: its exit status, report, stderr, and the prefix of the
    namespaces it made (its process id: other runs on the machine have theirs)."""
    proc = subprocess.Popen([sys.executable, "-m", "iris.cli", "chaos", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prefix = f"iris-chaos-{proc.pid}-"
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        _stop(proc, prefix)
    report = json.loads(stdout) if stdout.strip() else {}
    return proc.returncode, report, stderr, prefix


def _stop(proc: subprocess.Popen, prefix: str) -> None:
    """End a chaos run a test is done with, also when the test failed: one still going is
    interrupted as a user would (it removes what it made), killed if that takes over 30 s;
    then whatever is left of its namespaces, and of the processes in them, is removed here.
    (Its report is then the test's, not this machine's: nothing outlives the test.)"""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for name in _leftovers(prefix):
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


def _leftovers(prefix: str = "iris-chaos-") -> list[str]:
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in names.splitlines() if line.startswith(prefix)]


needs_namespaces = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None,
    reason="the chaos runs need root and the `ip` command (network namespaces)")


@pytest.mark.slow
@needs_namespaces
@pytest.mark.parametrize("args", [
    ("--fault", "partition", "--groups", "2", "--nodes", "2", "--duration", "12"),
    ("--fault", "pause", "--groups", "2", "--nodes", "3", "--duration", "8"),
], ids=["partition", "pause"])
def test_chaos_run_passes_its_checks(args):
    status, report, stderr, prefix = _chaos(*args, timeout=240)
    assert status in (0, 1), stderr
    failed = [c for c in report["checks"] if not c["passed"]]
    assert not failed and status == 0, json.dumps(
        {"failed": failed, "requests": report["figures"]["requests"]}, indent=1)
    assert report["namespaces"]
    assert _leftovers(prefix) == []  # its namespaces are gone


_UDP_COUNT = 2000
_UDP_RECEIVE = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
s.settimeout(1.5)
print("ready", flush=True)
n = 0
try:
    while True:
        s.recv(64)
        n += 1
except socket.timeout:
    print(n)
"""
_UDP_SEND = f"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range({_UDP_COUNT}):
    s.sendto(b"x", (sys.argv[1], 9999))
    if i % 50 == 0:
        time.sleep(0.002)
"""


def _udp_received(topology, src: int, dest: int) -> int:
    """Datagrams that reached group `dest`'s namespace of `_UDP_COUNT` sent from `src`'s."""
    receiver = subprocess.Popen(topology.command(dest, [sys.executable, "-c", _UDP_RECEIVE]),
                                stdout=subprocess.PIPE, text=True)
    assert receiver.stdout.readline() == "ready\n"
    subprocess.run(topology.command(src, [sys.executable, "-c", _UDP_SEND, topology.host(dest)]),
                   check=True, timeout=30)
    out, _ = receiver.communicate(timeout=30)
    return int(out)


@needs_namespaces
@pytest.mark.skipif(shutil.which("tc") is None, reason="the loss fault needs the `tc` command")
def test_the_loss_fault_drops_that_share_of_the_packets_until_the_heal():
    """`degrade` with a loss: netem where the kernel has it, else the random-drop filter (this
    is what runs `--fault loss` on kernels without netem). 30% of 2,000 datagrams: 600 lost
    on average, 20 the standard deviation; the bounds are five of them away."""
    from iris.chaos.topology import NO_LOSS, NamespaceTopology, SetupError

    topology = NamespaceTopology(2)
    try:
        topology.create()
        try:
            topology.degrade(0, ["loss", "30%"])
        except SetupError as exc:
            if NO_LOSS in str(exc):
                pytest.skip(str(exc))  # neither netem nor HTB with cls_bpf in this kernel
            raise
        lost = _UDP_COUNT - _udp_received(topology, 0, 1)
        assert 500 <= lost <= 700, lost
        topology.heal()
        assert _udp_received(topology, 0, 1) >= _UDP_COUNT * 0.99
    finally:
        topology.heal()
        assert topology.close() == []
    assert not set(_leftovers()) & {topology.router, *topology.names}


def test_partition_without_namespaces_is_a_setup_error(monkeypatch):
    from iris.chaos import harness
    from iris.chaos.topology import SetupError

    monkeypatch.setattr(harness, "namespaces_possible", lambda: False)
    with pytest.raises(SetupError, match="needs root and the `ip` command"):
        harness.check_options(harness.Options(fault="partition"))
    harness.check_options(harness.Options(fault="pause"))
    with pytest.raises(SetupError, match="at least 2 nodes"):
        harness.check_options(harness.Options(fault="kill", nodes=1))


def _poll(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(pid)
        except OSError:
            continue
    return found


@pytest.mark.slow
@needs_namespaces
def test_ctrl_c_removes_every_namespace_and_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "iris.cli", "chaos", "--groups", "2",
                             "--nodes", "1", "--logs", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prefix = f"iris-chaos-{proc.pid}-"
    stderr, namespaces, processes = "", None, None
    try:
        _poll(lambda: (tmp_path / "g1n0.jsonl").exists(), timeout=60)
        assert any(n.startswith(prefix) for n in _leftovers())
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
        # What the run left, read before anything here removes it.
        namespaces = [n for n in _leftovers() if n.startswith(prefix)]
        processes = _processes_mentioning(str(tmp_path))
    finally:
        _stop(proc, prefix)
        for pid in _processes_mentioning(str(tmp_path)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert namespaces == [] and processes == []


def test_the_human_report_marks_each_failed_check():
    records = Records()
    for r in [req(HEAL - 1), req(HEAL + 1, "timeout")]:
        records.add(r["agent"], r)
    fault = rep.Fault("pause", 1, ("g1n1",), HEAL - 2, HEAL)
    figures = rep.figures(records, fault, rep.Window(HEAL - 5, HEAL + 20, HEAL + 20), 16)
    checks = rep.checks(figures, fault)
    text = rep.format_report({
        "fault": "pause", "faulted_group": 1, "duration_s": 2.0, "groups": 2,
        "nodes_per_group": 2, "seed": 1, "network": "loopback only", "figures": figures,
        "checks": checks, "passed": all(c["passed"] for c in checks)})
    assert "FAIL  requests 100% again after the heal (s)" in text  # the last one failed
    assert "never" in text and "VIOLATIONS" in text
    assert "ok    requests executed twice" in text
