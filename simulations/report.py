"""What a scenario's report says: its checks (which failed, with what figure against what
threshold), the unit of every figure, and the readable text form.

A scenario lists its checks as `Check`s over figures already in its result and calls `judge`,
which sets `checks_passed` and `failed_checks`; the report and the exit status follow from
them. The checks are the single statement of what "passed" means for each scenario.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SIMULATED_S = "s (simulated)"
WALL_S = "s (wall clock)"
FRACTION = "fraction (0-1)"

# The unit of every figure a scenario reports; keys not listed are read by `unit_of`'s rules.
UNITS: dict[str, str] = {
    "nodes": "nodes",
    "join_msgs_per_join": "messages per joining node",
    "maintenance_msgs_per_node_s": "messages per node per simulated s",
    "join_msgs_per_node_s": "messages per node per simulated s",
    "lookups": "lookups",
    "lost": "lookups",
    "wrong_root": "lookups",
    "duplicates": "lookups delivered twice",
    "mean_hops": "hops",
    "mean_hops_before": "hops",
    "mean_hops_during_repair": "hops",
    "mean_hops_after": "hops",
    "max_hops": "hops",
    "failed": "nodes",
    "replaced": "nodes",
    "groups": "nodes per group",
    "leaf_sets_checked": "nodes",
    "leaf_sets_wrong": "nodes",
    "table_dead_entries": "routing-table entries",
    "table_misplaced_entries": "routing-table entries",
    "routing_walks": "walks",
    "routing_walks_wrong": "walks",
    "events": "events",
    "events_per_wall_s": "events per wall-clock s",
    "messages_sent": "messages",
    "messages_dropped": "messages",
    "clusters": "clusters",
    "topics": "topics",
    "requests": "requests",
    "request_errors": "requests",
    "request_timeouts": "requests",
    "request_unresolved": "requests",
    "request_duplicates": "requests handled twice",
    "request_misdelivered": "requests",
    "request_late_executions": "requests",
    "split_requests": "requests",
    "split_unreachable": "requests",
    "split_unreachable_failed": "requests",
    "balance_max_over_mean": "most requests one member handled / mean",
    "balance_dispersion": "variance / mean of the requests members handled",
    "broadcasts": "broadcasts",
    "broadcast_duplicates": "deliveries",
    "publishes": "events",
    "publish_duplicates": "deliveries",
    "publish_order_violations": "deliveries",
    "publish_delay_stretch": "delivery delay / direct delay",
    "publish_delay_stretch_expected": "delivery delay / expected direct delay",
    "publish_delay_stretch_of_means": "total delivery delay / total expected direct delay",
    "publish_delay_stretch_to_tree": "... of which, through the tree, the way to it / direct delay",
    "publish_delay_stretch_in_tree": "... of which, through the tree, the way in it / direct delay",
    "publish_delay_stretch_direct": "... of which, from the direct copy / direct delay",
    "publish_direct_share": "fraction (0-1) of first arrivals from the direct copy",
    "broadcast_delay_stretch": "delivery delay / direct delay",
    "broadcast_delay_stretch_expected": "delivery delay / expected direct delay",
    "broadcast_delay_stretch_of_means": "total delivery delay / total expected direct delay",
    "lookup_delay_stretch": "route delay / direct delay",
    "lookup_delay_stretch_expected": "route delay / expected direct delay",
    "lookup_delay_stretch_of_means": "total route delay / total expected direct delay",
    "floods_late": "deliveries",
    "floods_dropped_out_of_order": "deliveries",
    "max_children": "children of one tree node",
    "tunnel_messages": "messages",
    "tunnel_max_buffered": "bytes",
    "tunnel_window": "bytes",
    "cluster_members": "nodes",
    "paused": "nodes",
    "checks_run": "checks",
    "correct_ratio_during_repair": FRACTION,
    "publish_delivery_ratio_after_heal": FRACTION,
    "links_dials": "connections",
    "links_dials_failed": "connections",
    "links_user_timeouts": "connections",
    "links_keepalives_failed": "connections",
    "links_closed_peer_gone": "connections",
    "links_reset_stalled_hop": "connections",
    "links_resets": "connections",
    "links_lost_to_resets": "messages",
    "links_stalled_delivered": "messages",
}

NO_UNIT = {"scenario", "seed", "digest", "links", "checks_passed", "failed_checks", "units"}


def unit_of(key: str, value: Any) -> str | None:
    """The unit of the figure `key` (None for names, flags and the digest)."""
    if key in NO_UNIT or isinstance(value, bool | str | list | dict) and key not in UNITS:
        return None
    if key in UNITS:
        return UNITS[key]
    if key.endswith("_ratio"):
        return FRACTION
    if key.endswith("wall_s"):
        return WALL_S
    if key.endswith("_per_node_s"):
        return "messages per node per simulated s"
    if key.endswith("_s"):
        return SIMULATED_S
    if isinstance(value, int | float):
        return "count"
    return None  # a flag that is not set (None)


def units_of(result: dict[str, Any]) -> dict[str, str]:
    """`{key: unit}` for every figure in `result` that has one (the JSON report's `units`)."""
    units = {}
    for key, value in result.items():
        unit = unit_of(key, value)
        if unit is not None:
            units[key] = unit
    return units


@dataclass(frozen=True)
class Check:
    """One condition on one figure of the result: `result[key] <op> want`.

    `op` is one of "==", "<=", ">=", or "true" (the figure must be truthy; `want` unused).
    A figure that is None fails, unless `none_passes`. A failure also shows the figures named
    in `context` (what the failed figure is made of).
    """

    key: str
    op: str
    want: Any = None
    what: str = ""
    none_passes: bool = False
    context: tuple[str, ...] = ()

    def holds(self, value: Any) -> bool:
        if value is None:
            return self.none_passes
        if self.op == "true":
            return bool(value)
        if self.op == "==":
            return bool(value == self.want)
        if self.op == "<=":
            return bool(value <= self.want)
        if self.op == ">=":
            return bool(value >= self.want)
        raise ValueError(f"unknown check operator {self.op!r}")

    def wanted(self) -> str:
        return "true" if self.op == "true" else f"{self.op} {_fmt(self.want)}"

    def outcome(self, result: dict[str, Any]) -> dict[str, Any]:
        value = result.get(self.key)
        outcome = {"check": self.key, "value": value, "op": self.op,
                   "threshold": None if self.op == "true" else self.want,
                   "passed": self.holds(value), "what": self.what}
        if self.context:
            outcome["context"] = {k: result.get(k) for k in self.context}
        return outcome


def judge(result: dict[str, Any], checks: Iterable[Check]) -> bool:
    """Score `result` against `checks`: sets `checks_passed` and `failed_checks` (each
    failure with its figure, the threshold and what the figure measures)."""
    outcomes = [c.outcome(result) for c in checks]
    failed = [o for o in outcomes if not o["passed"]]
    for o in failed:
        del o["passed"]
    result["checks_passed"] = not failed
    result["checks_run"] = len(outcomes)
    result["failed_checks"] = failed
    return not failed


def describe_failure(failure: dict[str, Any]) -> str:
    """One line: `correct_ratio = 0.9975, wanted == 1 (lookups delivered at the true root)`."""
    wanted = "true" if failure["op"] == "true" else f"{failure['op']} {_fmt(failure['threshold'])}"
    what = f" ({failure['what']})" if failure.get("what") else ""
    context = failure.get("context")
    more = ("; " + ", ".join(f"{k} {_fmt(v)}" for k, v in context.items())) if context else ""
    return f"{failure['check']} = {_fmt(failure['value'])}, wanted {wanted}{what}{more}"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def format_report(result: dict[str, Any]) -> str:
    """The readable report: one figure a line with its unit, then the verdict."""
    skip = {"scenario", "nodes", "seed", "failed_checks", "checks_run", "units"}
    shown = [k for k in result if k not in skip]
    width = max((len(k) for k in shown), default=0)
    lines = [f"scenario {result['scenario']}: {result['nodes']} nodes, seed {result['seed']}"]
    for key in shown:
        value = result[key]
        text = _fmt(value)
        unit = unit_of(key, value)
        if unit is not None and value is not None:
            text = f"{text:<10} {unit}"
        lines.append(f"  {key:<{width}}  {text}".rstrip())
    failed = result.get("failed_checks")
    runs = result.get("checks_run")
    if failed:
        lines.append(f"FAILED {len(failed)} of {runs} checks:")
        lines.extend(f"  {describe_failure(f)}" for f in failed)
    elif runs is not None:
        lines.append(f"passed all {runs} checks")
    return "\n".join(lines)
