"""`--plot FILE`: one figure of what happened over a run (needs matplotlib, the `plot` extra).

Four panels over simulated time, the scenario's phases shaded behind them:

- leaf sets exactly right (against the whole ring, and against the node's own side of a
  partition) and walks through the routing state that end at the true root;
- the routing tables' repair: how full they are with reachable nodes, and how many entries
  still name a dead or unreachable node;
- delivery: of the lookups, requests, broadcasts and events issued at each moment, the
  fraction that arrived, and the messages sent and dropped per node per second;
- the histogram of lookup hop counts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from simulations.timeline import Timeline

INSTALL_HINT = "pip install 'iris-overlay[plot]'"

# The moments repair starts, drawn as lines.
MOMENTS = {"healing": "heal", "failure": "crash", "resumed": "thaw"}

# Phases worth shading, and how.
PHASE_STYLE = {
    "joining": ("#9e9e9e", "joining"),
    "partitioned": ("#d62728", "partitioned"),
    "healing": ("#2ca02c", "healed, repairing"),
    "repairing": ("#2ca02c", "repairing"),
    "failure": ("#d62728", "crash"),
    "churning": ("#ff7f0e", "churn"),
    "paused": ("#9467bd", "paused"),
}


def unavailable() -> str | None:
    """Why `--plot` cannot work here, in one line; None when it can."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"--plot needs matplotlib, which is not installed: {INSTALL_HINT}"
    return None


def _nan_ratio(num: list[int], den: list[int]) -> list[float]:
    return [n / d if d else math.nan for n, d in zip(num, den, strict=True)]


def write_plot(path: Path, tl: Timeline, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = tl.rows()
    t = [r["t_s"] for r in rows]
    col = {c: [r[c] for r in rows] for c in rows[0]} if rows else {}

    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5), dpi=110,
                             gridspec_kw={"width_ratios": [2.2, 1]})
    (ax_leaf, ax_hops), (ax_deliver, ax_table) = axes
    time_axes = (ax_leaf, ax_deliver, ax_table)

    shaded: dict[str, str] = {}
    for ax in time_axes:
        for p in tl.phases:
            style = PHASE_STYLE.get(p.name)
            if style is None or p.end is None or p.end <= p.start:
                continue
            ax.axvspan(p.start, p.end, color=style[0], alpha=0.10, lw=0)
            shaded[style[1]] = style[0]
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("simulated time (s)")
        if t:
            ax.set_xlim(0, t[-1])
    for p in tl.phases:  # the heal and the crash as lines: the moment repair starts
        if p.name in MOMENTS:
            for ax in time_axes:
                ax.axvline(p.start, color="#333333", lw=0.8, ls="--", label="_moment")
            ax_leaf.annotate(MOMENTS[p.name], (p.start, 1.0), xytext=(3, 4),
                             textcoords="offset points", fontsize=8, va="bottom")

    # -- leaf sets and routing --------------------------------------------------------------
    if t:
        ax_leaf.plot(t, col["leaf_exact_ratio"], color="#1f77b4", lw=2,
                     label="leaf sets exact (whole ring)")
        if col["leaf_side_exact_ratio"] != col["leaf_exact_ratio"]:
            ax_leaf.plot(t, col["leaf_side_exact_ratio"], color="#1f77b4", lw=1.3, ls="--",
                         label="leaf sets exact (own side of the partition)")
        ax_leaf.plot(t, col["routing_correct_ratio"], color="#9467bd", lw=1.3,
                     label="routing-state walks ending at the true root")
    ax_leaf.set_ylim(-0.02, 1.05)
    ax_leaf.set_ylabel("fraction of nodes / walks")
    ax_leaf.set_title("Leaf-set correctness and routing consistency", loc="left", fontsize=11)
    handles, labels = ax_leaf.get_legend_handles_labels()
    handles += [Patch(color=c, alpha=0.25) for c in shaded.values()]
    labels += list(shaded)
    ax_leaf.legend(handles, labels, loc="lower right", fontsize=8, framealpha=0.9)

    # -- routing tables -----------------------------------------------------------------------
    if t:
        ax_table.plot(t, col["table_fill_ratio"], color="#2ca02c", lw=1.8,
                      label="table fill (reachable entries / possible)")
        ax_table.set_ylim(-0.02, 1.05)
        ax_unreach = ax_table.twinx()
        ax_unreach.plot(t, col["table_unreachable_entries"], color="#d62728", lw=1.2,
                        label="entries naming dead or cut-off nodes")
        ax_unreach.set_ylabel("entries", color="#d62728")
        ax_unreach.set_ylim(bottom=0)
        lines = _labelled(ax_table.get_lines() + ax_unreach.get_lines())
        ax_table.legend(lines, [str(ln.get_label()) for ln in lines], loc="lower right",
                        fontsize=8, framealpha=0.9)
    ax_table.set_ylabel("fraction")
    ax_table.set_title("Routing-table repair", loc="left", fontsize=11)

    # -- delivery -------------------------------------------------------------------------------
    if t:
        ax_msgs = ax_deliver.twinx()
        ax_msgs.fill_between(t, col["msgs_sent_per_node_s"], color="#7f7f7f", alpha=0.18,
                             lw=0, label="messages sent per node per s")
        ax_msgs.plot(t, col["msgs_dropped_per_node_s"], color="#d62728", lw=1, alpha=0.8,
                     label="messages dropped per node per s")
        ax_msgs.set_ylabel("messages per node per s")
        ax_msgs.set_ylim(bottom=0)
        for issued, arrived, label, color in (
            ("lookups_issued", "lookups_correct", "lookups at the true root", "#1f77b4"),
            ("requests_sent", "requests_ok", "requests answered", "#ff7f0e"),
            ("flood_deliveries_expected", "flood_deliveries",
             "broadcast and event deliveries", "#2ca02c"),
        ):
            if any(col[issued]):
                ax_deliver.plot(t, _nan_ratio(col[arrived], col[issued]), color=color, lw=1.6,
                                marker=".", ms=3, label=f"{label} (by time sent)")
        ax_deliver.set_zorder(ax_msgs.get_zorder() + 1)
        ax_deliver.patch.set_visible(False)
        lines = _labelled(ax_deliver.get_lines() + ax_msgs.get_lines())
        labels = [str(ln.get_label()) for ln in lines]
        artists: list[Any] = [Patch(color="#7f7f7f", alpha=0.3), *lines]
        labels.insert(0, "messages sent per node per s")
        ax_deliver.legend(artists, labels, loc="best", fontsize=8, framealpha=0.9)
    ax_deliver.set_ylim(-0.02, 1.05)
    ax_deliver.set_ylabel("fraction delivered")
    ax_deliver.set_title("Delivery and traffic", loc="left", fontsize=11)

    # -- hop counts -----------------------------------------------------------------------------
    hops = tl.hops
    if hops:
        top = max(hops)
        counts = [0] * (top + 1)
        for h in hops:
            counts[h] += 1
        ax_hops.bar(range(top + 1), counts, color="#1f77b4", width=0.8)
        mean = sum(hops) / len(hops)
        ax_hops.axvline(mean, color="#333333", ls="--", lw=1)
        ax_hops.text(0.02, 0.97, f"mean {mean:.2f} hops\nmax {top} hops", va="top",
                     fontsize=9, transform=ax_hops.transAxes)
        ax_hops.set_xticks(range(top + 1))
        ax_hops.set_title(f"Hops per lookup ({len(hops):,} lookups)", loc="left", fontsize=11)
        ax_hops.set_xlabel("hops")
        ax_hops.set_ylabel("lookups")
    elif tl.flood_latency:  # the messaging scenarios route no lookups: how fast floods went
        ms = sorted(1000 * x for x in tl.flood_latency)
        ax_hops.hist(ms, bins=50, color="#2ca02c")
        p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        ax_hops.text(0.97, 0.97, f"p50 {p50:.0f} ms\np99 {p99:.0f} ms\nmax {ms[-1]:.0f} ms",
                     va="top", ha="right", fontsize=9, transform=ax_hops.transAxes)
        ax_hops.set_yscale("log")
        ax_hops.set_title(f"Flood delivery delay ({len(ms):,} deliveries)",
                          loc="left", fontsize=11)
        ax_hops.set_xlabel("delay from sending to first delivery (ms)")
        ax_hops.set_ylabel("deliveries")
    else:
        ax_hops.text(0.5, 0.5, "no routed lookups in this scenario", ha="center",
                     va="center", transform=ax_hops.transAxes)
        ax_hops.set_title("Hops per lookup", loc="left", fontsize=11)
    ax_hops.grid(True, axis="y", alpha=0.3)

    fig.suptitle(_title(result), x=0.01, ha="left", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path)
    plt.close(fig)


def _labelled(lines: list[Any]) -> list[Any]:
    return [ln for ln in lines if not str(ln.get_label()).startswith("_")]


def _title(result: dict[str, Any]) -> str:
    head = (f"iris sim {result.get('scenario')}: {result.get('nodes')} nodes, "
            f"seed {result.get('seed')}")
    if result.get("groups"):
        head += ", groups " + " + ".join(str(g) for g in result["groups"])
    facts = []
    for key, fmt in (("repair_s", "repaired in {:.1f} s"), ("recovery_s", "recovered in {:.1f} s"),
                     ("correct_ratio", "{:.2%} of lookups at the right root"),
                     ("request_success_ratio", "{:.2%} of requests answered")):
        value = result.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            facts.append(fmt.format(value))
    failed = result.get("failed_checks") or []
    facts.append("all checks passed" if result.get("checks_passed")
                 else "FAILED: " + ", ".join(f["check"] for f in failed))
    facts.append(f"digest {result.get('digest')}")
    return head + "\n" + "; ".join(facts)
