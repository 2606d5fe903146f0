"""The chaos run's figures and checks, computed from the agents' records alone.

Every function here is pure (records in, figures out), so each rule can be tested on records
made by hand. Times are wall-clock seconds. The rules:

- a request *failed* unless its caller got the right reply; it *executed twice* when members
  started its id more than once; it *executed after its deadline* when a member started it
  after the caller's send time plus its timeout (the caller had given up by then);
- *recovery* is the time from the heal until the first of the affected requests (`affected`)
  that succeeded with no failure after it was sent: from then on, 100%;
- an *order violation* is a subscriber delivering a publisher's event with a lower sequence
  number than one it already delivered from that publisher; a *duplicate*, one it delivered
  already;
- an event is *late* when delivered more than `LATE_AFTER_S` after it was published, unless the
  subscriber's own node was stopped (paused, killed) in between: a frozen reader is no fault of
  the network;
- an event published `DELIVERED_AFTER_HEAL_S` or more after the heal is *lost* when a
  subscriber that was subscribed at least as long before it never delivered it;
- the *leaf sets are complete* once every node's leaf set is, and stays, the one the live node
  ids call for;
- a tunnel keeps *integrity* when each session's messages arrive, and come back, as an in-order
  prefix of what was sent (closed sessions are counted, not violations).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from iris.chaos.records import Records, agent_group, cluster_group, cluster_of

LATE_AFTER_S = 10.0
DELIVERED_AFTER_HEAL_S = 5.0
RECOVERY_LIMIT_S = 10.0
LEAF_SETS_LIMIT_S = 15.0
FAILED_LIMIT = 0.01  # of the requests to the paused members' cluster
ID_BITS = 128

Record = dict[str, Any]


@dataclass(frozen=True)
class Fault:
    kind: str
    group: int  # the group cut off, degraded, or whose members were stopped
    stopped: tuple[str, ...]  # agents whose own node was paused or killed
    start: float
    heal: float


@dataclass(frozen=True)
class Window:
    """What the run measured: requests sent from `start` to `requests_end` (each had its whole
    time to end), events published from `start` to `events_end` (each had `LATE_AFTER_S` to
    arrive before the agents stopped)."""

    start: float
    requests_end: float
    events_end: float


# ------------------------------------------------------------------------------- requests
def executed_twice(executions: Iterable[Record]) -> int:
    """Request ids that members started more than once."""
    return sum(1 for n in Counter(e["id"] for e in executions).values() if n > 1)


def executed_after_deadline(executions: Iterable[Record]) -> list[float]:
    """By how much each late execution missed its caller's deadline, in seconds."""
    return [e["t"] - (e["sent"] + e["timeout"]) for e in executions
            if e["t"] > e["sent"] + e["timeout"]]


def failure_ratio(outcomes: Sequence[Record]) -> float:
    return sum(1 for o in outcomes if o["outcome"] != "ok") / len(outcomes) if outcomes else 0.0


def recovery_time(outcomes: Iterable[Record], heal: float, until: float) -> float | None:
    """Seconds from `heal` until requests sent succeed without exception up to `until`; None
    if the last one still failed (or none was sent)."""
    after = sorted((o for o in outcomes if heal <= o["sent"] <= until), key=lambda o: o["sent"])
    if not after or after[-1]["outcome"] != "ok":
        return None
    last_failure = max((i for i, o in enumerate(after) if o["outcome"] != "ok"), default=-1)
    recovered: float = after[last_failure + 1]["sent"] - heal
    return recovered


# --------------------------------------------------------------------------------- events
def order_violations(deliveries: Iterable[Record]) -> int:
    highest: dict[tuple[str, str], int] = {}
    violations = 0
    for d in deliveries:
        key = (d["agent"], d["pub"])
        if key in highest and d["seq"] < highest[key]:
            violations += 1
        highest[key] = max(highest.get(key, d["seq"]), d["seq"])
    return violations


def duplicate_deliveries(deliveries: Iterable[Record]) -> int:
    seen = Counter((d["agent"], d["pub"], d["seq"]) for d in deliveries)
    return sum(n - 1 for n in seen.values())


def _stopped_between(stopped: dict[str, list[tuple[float, float]]], agent: str, start: float,
                     end: float) -> bool:
    return any(a < end and start < b for a, b in stopped.get(agent, ()))


def late_deliveries(deliveries: Iterable[Record], stopped: dict[str, list[tuple[float, float]]],
                    late_after: float = LATE_AFTER_S) -> list[float]:
    """The delays of the late deliveries (see the module docstring)."""
    return [d["t"] - d["sent"] for d in deliveries
            if d["t"] - d["sent"] > late_after
            and not _stopped_between(stopped, d["agent"], d["sent"], d["t"])]


def lost_events(publishes: Iterable[Record], deliveries: Iterable[Record],
                subscriptions: Iterable[Record], stopped: dict[str, list[tuple[float, float]]],
                since: float, until: float,
                settle: float = DELIVERED_AFTER_HEAL_S) -> list[tuple[str, int, str]]:
    """(publisher, seq, subscriber) of each event published in [since, until] that a
    subscriber, subscribed `settle` seconds before it and running then, never delivered."""
    got = {(d["agent"], d["pub"], d["seq"]) for d in deliveries}
    subscribed: dict[str, list[float]] = defaultdict(list)
    for s in subscriptions:
        subscribed[s["agent"]].append(s["t"])
    lost = []
    for p in publishes:
        if not since <= p["t"] <= until:
            continue
        for agent, times in subscribed.items():
            latest = max((t for t in times if t <= p["t"]), default=None)
            if (latest is not None and latest <= p["t"] - settle
                    and not _stopped_between(stopped, agent, p["t"] - settle, p["t"])
                    and (agent, p["agent"], p["seq"]) not in got):
                lost.append((p["agent"], p["seq"], agent))
    return lost


# ----------------------------------------------------------------------------- leaf sets
def expected_leaf_set(node: int, nodes: Iterable[int], leaf_size: int) -> set[int]:
    """The L/2 nearest other nodes on each side of `node` on the ring."""
    ring = 1 << ID_BITS
    others = sorted((n for n in set(nodes) if n != node), key=lambda n: (n - node) % ring)
    half = leaf_size // 2
    return set(others[:half]) | set(others[-half:] if half else [])


def leaf_sets_complete(statuses: Iterable[Record], since: float,
                       leaf_size: int) -> float | None:
    """Seconds from `since` until every node that reported after it has, from then on, the
    leaf set its live peers call for; None if one still has not at its last report."""
    reports: dict[str, list[Record]] = defaultdict(list)
    for s in statuses:
        if s["t"] >= since:
            reports[s["agent"]].append(s)
    if not reports:
        return None
    ids = {int(r[-1]["id"], 16) for r in reports.values()}
    complete_at = since
    for agent_reports in reports.values():
        agent_reports.sort(key=lambda s: s["t"])
        first_good: float | None = None
        for s in agent_reports:
            node = int(s["id"], 16)
            if {int(n, 16) for n in s["leaf"]} == expected_leaf_set(node, ids, leaf_size):
                first_good = s["t"] if first_good is None else first_good
            else:
                first_good = None
        if first_good is None:
            return None
        complete_at = max(complete_at, first_good)
    return complete_at - since


# -------------------------------------------------------------------------------- tunnel
def tunnel_figures(records: Iterable[Record]) -> dict[str, Any]:
    """Sessions, closures, messages, and integrity violations: per session, each message
    arriving at the member or back at the opener out of place (a gap, a repeat, a swap), and
    each session that reached more than one member."""
    rx: dict[str, list[int]] = defaultdict(list)
    echo: dict[str, list[int]] = defaultdict(list)
    members: dict[str, set[str]] = defaultdict(set)
    sessions = sent = 0
    closures: Counter[str] = Counter()
    for r in records:
        if r["event"] == "open":
            sessions += 1
        elif r["event"] == "sent":
            sent += 1
        elif r["event"] == "rx":
            rx[r["s"]].append(r["i"])
            members[r["s"]].add(r["agent"])
        elif r["event"] == "echo":
            echo[r["s"]].append(r["i"])
        elif r["event"] == "closed":
            closures[r["reason"]] += 1
    violations = sum(1 for s in members.values() if len(s) > 1)
    for arrived in (*rx.values(), *echo.values()):
        violations += sum(1 for position, i in enumerate(arrived) if i != position)
    violations += sum(1 for s, back in echo.items() if len(back) > len(rx.get(s, ())))
    return {"sessions": sessions, "messages_sent": sent,
            "messages_delivered": sum(map(len, rx.values())),
            "messages_echoed": sum(map(len, echo.values())),
            "closures": dict(closures), "integrity_violations": violations}


# -------------------------------------------------------------------------------- report
def stopped_windows(fault: Fault) -> dict[str, list[tuple[float, float]]]:
    return {agent: [(fault.start, fault.heal)] for agent in fault.stopped}


def affected(outcome: Record, fault: Fault) -> bool:
    """The requests whose recovery is timed: those across groups for a network fault (within
    a group nothing was cut), every request for a process fault (a thawed or restarted node
    may hold any cluster's tree)."""
    return bool(fault.stopped) or agent_group(outcome["agent"]) != cluster_group(outcome["target"])


def figures(records: Records, fault: Fault, window: Window, leaf_size: int) -> dict[str, Any]:
    outcomes = [o for o in records["req"] if window.start <= o["sent"] <= window.requests_end]
    to_faulted = [o for o in outcomes if o["target"] == cluster_of(fault.group)]
    during = [o for o in outcomes if fault.start <= o["sent"] <= fault.heal]
    deliveries = records["ev"]
    stopped = stopped_windows(fault)
    measured = [d for d in deliveries if window.start <= d["sent"] <= window.events_end]
    late = late_deliveries(measured, stopped)
    lost = lost_events(records["pub"], deliveries, records["subscribed"], stopped,
                       fault.heal + DELIVERED_AFTER_HEAL_S, window.events_end)
    after_deadline = executed_after_deadline(records["exec"])
    delays = [d["t"] - d["sent"] for d in measured
              if not _stopped_between(stopped, d["agent"], d["sent"], d["t"])]
    return {
        "requests": {
            "sent": len(outcomes),
            "failed": sum(1 for o in outcomes if o["outcome"] != "ok"),
            "failed_ratio": failure_ratio(outcomes),
            "failed_during_fault": sum(1 for o in during if o["outcome"] != "ok"),
            "sent_during_fault": len(during),
            "to_faulted_cluster": len(to_faulted),
            "failed_to_faulted_cluster": sum(1 for o in to_faulted if o["outcome"] != "ok"),
            "failed_ratio_to_faulted_cluster": failure_ratio(to_faulted),
            "outcomes": dict(Counter(o["outcome"] for o in outcomes)),
            "executions": len(records["exec"]),
            "executed_twice": executed_twice(records["exec"]),
            "executed_after_deadline": len(after_deadline),
            "worst_miss_of_deadline_s": max(after_deadline, default=0.0),
        },
        "recovery_s": recovery_time([o for o in outcomes if affected(o, fault)], fault.heal,
                                    window.requests_end),
        "events": {
            "published": sum(1 for p in records["pub"]
                             if window.start <= p["t"] <= window.events_end),
            "delivered": len(measured),
            "order_violations": order_violations(deliveries),
            "duplicates": duplicate_deliveries(deliveries),
            "late": len(late),
            "max_delay_s": max(delays, default=0.0),
            "lost_after_heal": len({(pub, seq) for pub, seq, _ in lost}),
            "lost_deliveries_after_heal": len(lost),
        },
        "tunnel": tunnel_figures(records["tunnel"]),
        "leaf_sets_complete_s": leaf_sets_complete(records["status"], fault.heal, leaf_size),
    }


def checks(figs: dict[str, Any], fault: Fault) -> list[dict[str, Any]]:
    """Each check: its name, the measured value, the limit, and whether it passed."""
    req, ev = figs["requests"], figs["events"]
    rows: list[tuple[str, Any, str, bool]] = [
        ("requests executed twice", req["executed_twice"], "0", req["executed_twice"] == 0),
        ("requests executed after their deadline", req["executed_after_deadline"], "0",
         req["executed_after_deadline"] == 0),
        ("requests 100% again after the heal (s)", figs["recovery_s"],
         f"<= {RECOVERY_LIMIT_S:g}",
         figs["recovery_s"] is not None and figs["recovery_s"] <= RECOVERY_LIMIT_S),
        ("event order violations", ev["order_violations"], "0", ev["order_violations"] == 0),
        ("events delivered twice", ev["duplicates"], "0", ev["duplicates"] == 0),
        (f"events late (> {LATE_AFTER_S:g} s)", ev["late"], "0", ev["late"] == 0),
        (f"events lost (published >= {DELIVERED_AFTER_HEAL_S:g} s after the heal)",
         ev["lost_after_heal"], "0", ev["lost_after_heal"] == 0),
        ("tunnel integrity violations", figs["tunnel"]["integrity_violations"], "0",
         figs["tunnel"]["integrity_violations"] == 0),
        ("leaf sets complete after the heal (s)", figs["leaf_sets_complete_s"],
         f"<= {LEAF_SETS_LIMIT_S:g}", figs["leaf_sets_complete_s"] is not None
         and figs["leaf_sets_complete_s"] <= LEAF_SETS_LIMIT_S),
    ]
    if fault.kind == "pause":
        ratio = req["failed_ratio_to_faulted_cluster"]
        rows.append(("requests failed, to the paused members' cluster", ratio,
                     f"<= {FAILED_LIMIT:.0%}", ratio <= FAILED_LIMIT))
    return [{"check": name, "value": value, "limit": limit, "passed": passed}
            for name, value, limit, passed in rows]


def format_report(report: dict[str, Any]) -> str:
    """The human form: the run, the main figures, and a table of the checks."""
    req, ev, tun = (report["figures"]["requests"], report["figures"]["events"],
                    report["figures"]["tunnel"])
    lines = [
        f"iris chaos: {report['fault']} of group {report['faulted_group']} for "
        f"{report['duration_s']:g} s; {report['groups']} groups x {report['nodes_per_group']} "
        f"nodes, seed {report['seed']}; {report['network']}",
        f"requests: {req['sent']} sent, {req['failed']} failed "
        f"({req['failed_during_fault']} of {req['sent_during_fault']} sent during the fault); "
        f"to the faulted cluster {req['failed_to_faulted_cluster']}/{req['to_faulted_cluster']}"
        f" failed; {req['executions']} executions",
        f"events: {ev['published']} published, {ev['delivered']} deliveries, "
        f"max delay {ev['max_delay_s']:.2f} s",
        f"tunnel: {tun['sessions']} sessions, {tun['messages_delivered']} messages delivered, "
        f"{tun['messages_echoed']} echoed, closures {tun['closures'] or 'none'}",
        "",
    ]
    width = max(len(c["check"]) for c in report["checks"])
    for c in report["checks"]:
        value = c["value"]
        shown = ("never" if value is None else f"{value:.1%}" if "failed" in c["check"]
                 else f"{value:.2f}" if isinstance(value, float) else str(value))
        lines.append(f"{'ok  ' if c['passed'] else 'FAIL'}  {c['check']:<{width}}  "
                     f"{shown:>8}  (limit {c['limit']})")
    lines.append("")
    lines.append("all checks passed" if report["passed"] else "VIOLATIONS: see FAIL above")
    return "\n".join(lines)
