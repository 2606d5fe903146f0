"""Watching a scenario run: a progress line, and the time series behind `--csv` and `--plot`.

The command line opens `watching(monitor)` around a scenario; `make_sim` and
`make_messaging_sim` `attach` the monitor to the simulation they create, and the scenarios
mark their phases with `phase`. The monitor is the engine's `observer`: it is shown the
simulation between events, every `period_s` simulated seconds, and only reads it (its own
random walks use their own RNG), so a run watched or not is the same run with the same digest.

What is sampled, at each tick:

- `leaf_exact_ratio`: active nodes whose leaf set is exactly the truth (the live active ring),
  and `leaf_side_exact_ratio`, the same against the truth of the node's own side of a
  partition: while the network is split each side repairs towards its own ring;
- `table_fill_ratio`: routing-table entries that name a reachable live node, over the cells
  that the live ring could fill; `table_unreachable_entries`: entries naming a dead node or one
  across the partition (what repair must purge);
- `routing_correct_ratio`: walks through the routing state to fixed random keys that end at
  the key's true root;
- messages sent and dropped per node per second since the last tick.

Lookups (ring scenarios), requests and broadcast or event deliveries (messaging scenarios)
are counted per tick by the time they were issued, with how each one ended.
"""

from __future__ import annotations

import random
import shutil
import time
from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from iris.core import OK
from overlay.ids import BASE, DIGIT_BITS, ID_BITS
from simulations import checkers
from simulations.engine import Simulation
from simulations.messaging_workload import MessagingWorkload
from simulations.workload import LookupTracker

COLUMNS = (
    "t_s", "phase", "active_nodes", "leaf_exact_ratio", "leaf_side_exact_ratio",
    "table_fill_ratio", "table_unreachable_entries", "routing_correct_ratio",
    "msgs_sent_per_node_s", "msgs_dropped_per_node_s",
    "lookups_issued", "lookups_correct", "lookups_wrong", "lookups_lost",
    "requests_sent", "requests_ok", "flood_deliveries_expected", "flood_deliveries",
)
"""The time series' columns (`--csv`), one row per tick; counts are of what was issued since
the previous tick."""

COLUMN_UNITS = {
    "t_s": "s (simulated)", "phase": "name", "active_nodes": "nodes",
    "leaf_exact_ratio": "fraction (0-1)", "leaf_side_exact_ratio": "fraction (0-1)",
    "table_fill_ratio": "fraction (0-1)", "table_unreachable_entries": "entries",
    "routing_correct_ratio": "fraction (0-1)",
    "msgs_sent_per_node_s": "messages per node per simulated s",
    "msgs_dropped_per_node_s": "messages per node per simulated s",
    "lookups_issued": "lookups", "lookups_correct": "lookups", "lookups_wrong": "lookups",
    "lookups_lost": "lookups", "requests_sent": "requests", "requests_ok": "requests",
    "flood_deliveries_expected": "deliveries", "flood_deliveries": "deliveries",
}

_current: Monitor | None = None


@contextmanager
def watching(monitor: Monitor) -> Iterator[Monitor]:
    """Attach `monitor` to the simulation the scenario run inside this block creates."""
    global _current
    previous, _current = _current, monitor
    try:
        yield monitor
    finally:
        _current = previous
        monitor.close()


def attach(sim: Simulation, work: MessagingWorkload | None = None) -> None:
    """Called by the scenarios' simulation factories: watch `sim` if someone is watching."""
    if _current is not None:
        _current.attach(sim, work)


def phase(sim: Simulation, name: str, until: float | None = None) -> None:
    """A scenario enters phase `name` (expected to last until simulated time `until`)."""
    observer = sim.observer
    if isinstance(observer, Monitor):
        observer.phase(sim, name, until)


@dataclass
class Phase:
    name: str
    start: float
    end: float | None = None
    until: float | None = None


@dataclass
class Timeline:
    """What a monitor recorded over one run."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    lookup_issued: list[float] = field(default_factory=list)  # issue time of each lookup
    lookup_outcome: list[str] = field(default_factory=list)  # "correct", "wrong", "lost"
    hops: list[int] = field(default_factory=list)  # of every lookup's first delivery
    requests: list[tuple[float, bool]] = field(default_factory=list)  # (sent at, answered OK)
    floods: list[tuple[float, int, int]] = field(default_factory=list)  # (sent, expected, got)
    flood_latency: list[float] = field(default_factory=list)  # s, each first delivery

    def rows(self) -> list[dict[str, Any]]:
        """One row per tick, with every column of `COLUMNS`."""
        times = [s["t_s"] for s in self.samples]
        counts = {c: [0] * len(times) for c in COLUMNS[10:]}

        def bucket(t: float) -> int | None:
            i = bisect_left(times, round(t, 3))
            return i if i < len(times) else None

        for t, outcome in zip(self.lookup_issued, self.lookup_outcome, strict=True):
            i = bucket(t)
            if i is not None:
                counts["lookups_issued"][i] += 1
                counts[f"lookups_{outcome}"][i] += 1
        for t, ok in self.requests:
            i = bucket(t)
            if i is not None:
                counts["requests_sent"][i] += 1
                counts["requests_ok"][i] += ok
        for t, expected, got in self.floods:
            i = bucket(t)
            if i is not None:
                counts["flood_deliveries_expected"][i] += expected
                counts["flood_deliveries"][i] += got
        rows = []
        for i, sample in enumerate(self.samples):
            row = dict(sample)
            for column, values in counts.items():
                row[column] = values[i]
            rows.append(row)
        return rows

    def phase_at(self, t: float) -> str:
        name = ""
        for p in self.phases:
            if p.start <= t:
                name = p.name
        return name


class _RecordingLookups(LookupTracker):
    """The lookup tracker, which also tells the monitor when each lookup was issued and how it
    ended. It scores exactly as `LookupTracker` does."""

    def __init__(self, sim: Simulation, timeline: Timeline) -> None:
        self.timeline = timeline
        self._slot: dict[int, int] = {}  # tag -> index in the timeline's lookup lists
        super().__init__(sim)

    def reset(self) -> None:
        self.close()
        super().reset()

    def close(self) -> None:
        """The lookups still pending will not arrive any more."""
        self._slot = {}

    def issue(self) -> None:
        # On the books before it is routed: a lookup for a key the issuer owns is delivered
        # within `issue`.
        tag = self.issued
        timeline = self.timeline
        self._slot[tag] = len(timeline.lookup_issued)
        timeline.lookup_issued.append(self.sim.now)
        timeline.lookup_outcome.append("lost")
        super().issue()
        if self.issued == tag:  # nobody to issue it from
            del self._slot[tag]
            timeline.lookup_issued.pop()
            timeline.lookup_outcome.pop()

    def delivered(self, at: int, key: int, tag: int, hops: int) -> None:
        correct = self.correct
        wrong = self.wrong
        super().delivered(at, key, tag, hops)
        slot = self._slot.pop(tag, None)
        if slot is None:
            return
        if self.correct > correct:
            self.timeline.lookup_outcome[slot] = "correct"
        elif self.wrong > wrong:
            self.timeline.lookup_outcome[slot] = "wrong"
        self.timeline.hops.append(hops)


class Monitor:
    """The engine's observer for one scenario run: records samples every `period_s` simulated
    seconds (with `record`) and keeps `progress` up to date."""

    def __init__(self, record: bool = True, period_s: float = 1.0,
                 progress: Progress | None = None, walks: int = 200) -> None:
        if period_s <= 0:
            raise ValueError("the sampling period must be positive")
        self.record = record
        self.period_s = period_s
        self.progress = progress
        self.walks = walks
        self.timeline = Timeline()
        self.sim: Simulation | None = None
        self.work: MessagingWorkload | None = None
        self.due = float("inf")
        self._last: tuple[float, int, int] | None = None  # (time, sent, dropped)
        self._walk_keys: list[tuple[float, int]] = []
        self._closed = False

    # -- the engine's side ------------------------------------------------------------------
    def attach(self, sim: Simulation, work: MessagingWorkload | None = None) -> None:
        self.sim, self.work = sim, work
        sim.observer = self
        self.due = sim.now
        self._last = (sim.now, sim.messages_sent, sim.messages_dropped)
        if self.record:
            sim.lookups = _RecordingLookups(sim, self.timeline)
            keys = random.Random(f"timeline walks {sim.seed}")
            self._walk_keys = [(keys.random(), keys.getrandbits(ID_BITS))
                               for _ in range(self.walks)]

    def observe(self, sim: Simulation) -> None:
        now = self.due
        if self.record:
            self._sample(sim, now)
        if self.progress is not None:
            self.progress.update(sim, self._phase())
        self.due = now + self.period_s

    def phase(self, sim: Simulation, name: str, until: float | None) -> None:
        phases = self.timeline.phases
        if phases and phases[-1].end is None:
            phases[-1].end = sim.now
        phases.append(Phase(name, sim.now, sim.now if name == "done" else None, until))
        samples = self.timeline.samples
        if name == "done" and self.record and (
                not samples or samples[-1]["t_s"] < round(sim.now, 3)):
            self._sample(sim, sim.now)  # the end of the run, between two ticks
        if self.progress is not None:
            self.progress.update(sim, self._phase(), force=True)

    def _phase(self) -> Phase | None:
        phases = self.timeline.phases
        return phases[-1] if phases else None

    # -- what a tick records ----------------------------------------------------------------
    def _sample(self, sim: Simulation, now: float) -> None:
        ids = list(sim.active)
        groups = sim.net.groups
        exact = _exact_leaves(sim, ids, ids)
        if groups is None:
            side_exact = exact
        else:
            sides: dict[int, list[int]] = {}
            for node in ids:
                sides.setdefault(groups.get(node, 0), []).append(node)
            side_exact = sum(_exact_leaves(sim, side, side) for side in sides.values())
        fill, unreachable = _table_state(sim, ids)
        correct = 0
        if ids:
            for where, key in self._walk_keys:
                end, _ = checkers.walk(sim, ids[int(where * len(ids))], key)
                correct += end is not None and end == checkers.true_root(sim, key)
        last_t, last_sent, last_dropped = self._last or (now, 0, 0)
        span = now - last_t
        live = len(sim.nodes)
        per = span * live
        self._last = (now, sim.messages_sent, sim.messages_dropped)
        phase = self._phase()
        self.timeline.samples.append({
            "t_s": round(now, 3),
            "phase": "" if phase is None else phase.name,
            "active_nodes": len(ids),
            "leaf_exact_ratio": round(exact / len(ids), 4) if ids else 0.0,
            "leaf_side_exact_ratio": round(side_exact / len(ids), 4) if ids else 0.0,
            "table_fill_ratio": round(fill, 4),
            "table_unreachable_entries": unreachable,
            "routing_correct_ratio": (round(correct / len(self._walk_keys), 4)
                                      if self._walk_keys else 0.0),
            "msgs_sent_per_node_s": round((sim.messages_sent - last_sent) / per, 3)
            if per else 0.0,
            "msgs_dropped_per_node_s": round((sim.messages_dropped - last_dropped) / per, 3)
            if per else 0.0,
        })

    # -- the end -----------------------------------------------------------------------------
    def close(self) -> None:
        """The run is over (or was interrupted): collect what was issued and how it ended."""
        if self._closed:
            return
        self._closed = True
        if self.progress is not None:
            self.progress.close()
        sim, work = self.sim, self.work
        if sim is not None and sim.observer is self:
            sim.observer = None
        if work is not None and sim is not None and self.record:
            live = sim.nodes
            self.timeline.requests = [(r.sent_at, r.status == OK)
                                      for r in work.requests.values()]
            floods = []
            for tag, (_, _, audience, sent_at, _) in work.floods.items():
                got = work.received.get(tag, {})
                expected = [n for n in audience if n in live]
                floods.append((sent_at, len(expected), sum(got.get(n, 0) >= 1 for n in expected)))
            self.timeline.floods = floods
            self.timeline.flood_latency = list(work.latency)


def _exact_leaves(sim: Simulation, ring: list[int], nodes: list[int]) -> int:
    """How many of `nodes` have exactly the leaf sets they would have in `ring` (sorted)."""
    n = len(ring)
    half = sim.config.leaf_size // 2
    live = sim.nodes
    exact = 0
    if n <= half or half == 0:  # a ring too small to slice: the checker's own way
        for i, node_id in enumerate(ring):
            node = live[node_id]
            count = min(half, n - 1)
            right = [ring[(i + 1 + k) % n] for k in range(count)]
            left = [ring[(i - 1 - k) % n] for k in range(count)]
            exact += node.leaf.left == left and node.leaf.right == right
        return exact
    ext = ring[-half:] + ring + ring[:half]  # ext[half + i] == ring[i]
    for i, node_id in enumerate(ring):
        leaf = live[node_id].leaf
        if leaf.right == ext[i + half + 1: i + 2 * half + 1]:
            left = ext[i: i + half]
            left.reverse()
            exact += leaf.left == left
    return exact


def _table_state(sim: Simulation, ids: list[int]) -> tuple[float, int]:
    """(entries naming a reachable live node / cells the live ring could fill, entries naming
    a dead or unreachable node)."""
    if not ids:
        return 0.0, 0
    # digits[r][prefix of r digits] = the digits r found after that prefix among live ids
    digits: list[dict[int, set[int]]] = []
    row = 0
    while True:
        shift = ID_BITS - DIGIT_BITS * (row + 1)
        if shift < 0:
            break
        level: dict[int, set[int]] = {}
        for i in ids:
            level.setdefault(i >> (shift + DIGIT_BITS), set()).add((i >> shift) & (BASE - 1))
        digits.append(level)
        if sum(len(d) for d in level.values()) == len(ids):
            break  # every id has a prefix of its own: no deeper row can fill
        row += 1
    rows = len(digits)
    groups = sim.net.groups
    live = sim.nodes
    possible = filled = unreachable = 0
    for node_id in ids:
        for r in range(rows):
            shift = ID_BITS - DIGIT_BITS * (r + 1)
            possible += len(digits[r][node_id >> (shift + DIGIT_BITS)]) - 1
        side = groups.get(node_id, 0) if groups is not None else 0
        for r, _, peer in live[node_id].table.filled():
            if peer not in live or (groups is not None and groups.get(peer, 0) != side):
                unreachable += 1
            elif r < rows:
                filled += 1
    return (filled / possible if possible else 1.0), unreachable


class Progress:
    """One line on a terminal, redrawn in place; or, to a file or pipe, a line every few
    seconds. Silent for the first second: short runs print nothing."""

    def __init__(self, stream: TextIO, label: str, tty: bool | None = None) -> None:
        self.stream = stream
        self.label = label
        self.tty = stream.isatty() if tty is None else tty
        self.start = time.monotonic()
        self.first_after = 1.0 if self.tty else 2.0
        self.interval = 0.2 if self.tty else 5.0
        self.last_shown: float | None = None
        self.events = 0
        self.sim_now = 0.0
        self.phase_name = ""
        self._drawn = False

    def update(self, sim: Simulation, phase: Phase | None, force: bool = False) -> None:
        now = time.monotonic()
        self.events, self.sim_now = sim.events, sim.now
        self.phase_name = phase.name if phase is not None else ""
        if now - self.start < self.first_after:
            return
        if not force and self.last_shown is not None and now - self.last_shown < self.interval:
            return
        if not self.tty and force and self.last_shown is not None and \
                now - self.last_shown < 1.0:
            return
        self.last_shown = now
        self._show(self.line(sim.now, sim.events, phase, now - self.start))

    def line(self, sim_now: float, events: int, phase: Phase | None, wall: float) -> str:
        parts = [self.label]
        if phase is not None:
            if phase.until is not None and phase.until > phase.start:
                done = min(1.0, max(0.0, (sim_now - phase.start) / (phase.until - phase.start)))
                filled = round(20 * done)
                parts.append(f"{phase.name} [{'#' * filled}{'.' * (20 - filled)}] "
                             f"{100 * done:3.0f}%")
            else:
                parts.append(f"{phase.name} for {sim_now - phase.start:.0f} s")
        parts.append(f"simulated {sim_now:.0f} s")
        parts.append(f"{events / 1e6:.2f}M events")
        parts.append(f"{wall:.0f} s elapsed")
        return " | ".join(parts)

    def _show(self, text: str) -> None:
        if self.tty:
            width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
            self.stream.write("\r\x1b[K" + text[:width])
            self._drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty:
            if self._drawn:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._drawn = False
        elif self.last_shown is not None:
            wall = time.monotonic() - self.start
            self.stream.write(f"{self.label} | finished | simulated {self.sim_now:.0f} s | "
                              f"{self.events / 1e6:.2f}M events | {wall:.0f} s elapsed\n")
            self.stream.flush()
