"""Tunable constants of the overlay, with the reasoning behind each default.

Budget: in a stable ring a node sends a heartbeat to its left neighbour every `heartbeat_s` and one
to its right neighbour every `right_beat_periods` of them, (1 + 1/4)/5 = 0.25 messages per node
per second, plus at most one table probe and its answer, and one candidate probe and its answer,
per `table_probe_s` (0.27 more); but a node that sees no failures probes its table less and less
often (`table_probe_max_s`), under the 1/s ceiling we hold ourselves to (MSPastry stayed under
0.5). A crashed node is noticed by its left neighbour after `missed_heartbeats` silent periods
plus `probe_attempts` unanswered probes (10.5 + 2 x 1.0 = 12.5 s), and the rest of its leaf-set
holders, told by it, drop it after one more verifying probe: within 15 s. (On a lossy network
each verdict takes more probes, `probe_false_alarm`, and so longer.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OverlayConfig:
    leaf_size: int = 16
    """L: L/2 nodes kept on each side (Pastry: 16 or 32; FreePastry used 24)."""

    heartbeat_s: float = 5.0
    """Period of the heartbeat each node sends to its left neighbour, which watches its right
    neighbour by them (MSPastry's leaf-set heartbeats). (7.5 s with a probe after 1.4 silent
    periods, the same 10.5 s, cost fewer messages too; but the last heartbeat before a cut is
    then older, so a short partition is declared more often, and `iris chaos --fault
    partition` (12 s, 2 x 2 nodes) lost events published after the heal in 3 of 6 runs,
    against 0 of 5 at 5 s.)"""

    right_beat_periods: int = 4
    """The right neighbour gets a heartbeat only every this many periods, and watches its left
    neighbour at that pace (silence of `missed_heartbeats` such periods). A crash is found by
    the dead node's left neighbour, whose notice reaches every other holder (`Departed`), so
    the slow side only matters when nobody watches a node at the fast pace: across a cut, a
    node whose left neighbour and that one's own left neighbour are both on the other side.
    Symmetric heartbeats (1) cost a stable ring of 1,000 0.4 of its 0.63 maintenance messages
    per node per second."""

    missed_heartbeats: float = 2.1
    """Silence, in heartbeat periods, after which a neighbour is probed directly."""

    probe_timeout_s: float = 1.0
    """How long a probe waits for its answer."""

    probe_attempts: int = 2
    """Unanswered probes in a row after which a peer is declared failed (on a lossy network,
    more: `probe_false_alarm`)."""

    probe_false_alarm: float = 1e-5
    """Under loss a node sends as many probes as make a live peer miss them all this rarely,
    by the loss it measures (`overlay.probe_loss`)... A ring checks peers thousands of times
    a run: at 1e-4, `iris sim join --nodes 1000 --loss 0.05 --duplicate 0.01 --wire` (seed 1)
    had a live root lose four probe exchanges in a row, declared failed, and three lookups
    delivered beside it. At 1e-5 seeds 1-10 put every lookup at its root, for one probe more
    only after as many lost in a row; a crash under 2% loss is dropped by every leaf-set
    holder 1-4 s later (20-24 s against 17-21 s), and a loss-free network is not affected."""

    max_probe_attempts: int = 5
    """...but never more than this many."""

    table_probe_s: float = 15.0
    """One routing-table entry is probed (liveness and round trip) every this many seconds,
    and asked for its row (proximity maintenance and filling: `overlay.proximity`). It was
    10 s before the proximity maintenance, whose candidate probes cost about as much again:
    the longer period pays for part of them (a ring of 1,000 in the minute after it formed:
    0.63 -> 0.71 messages per node per second; at 10 s, 0.77)."""

    table_probe_max_s: float = 120.0
    """...but at first only: the period is the time the ring has looked calm so far, up to
    `table_probe_max_s` (each nearer node a probe's answer finds halves it). A failure seen
    has the whole table swept instead (`sweep_max_wait_s`); holding the period at its base
    for five minutes after each, as it once did, cost 0.14 messages per node per second under
    churn at 1,000 nodes, where the sweeps probe every entry a minute or two apart anyway."""

    proximity_probes: int = 1
    proximity_margin: float = 0.7
    """A table probe's answer carries the probed entry's row (`overlay.proximity`); of the
    nodes in it that the entry measured nearer than `proximity_margin` times our round trip
    to our own entry for their cell (or that would fill an empty cell), at most
    `proximity_probes` are probed, the likeliest first (each probe 2 messages; a nearer node
    found is told, 1 more). Probing every candidate measured nearer than ours (margin 1, up
    to 3 a probe) cost more and found no shorter routes (`docs/ARCHITECTURE.md`)."""

    proximity_join_rounds: int = 3
    proximity_join_probes: int = 16
    """Right after a join each row with a choice is searched: its nearest entry asked for
    its row, then the node that answer made nearest, `proximity_join_rounds` exchanges at
    most, probing up to `proximity_join_probes` likely nearer nodes from each answer (Castro
    et al.'s second join phase). Before the joiner found a near node to join through
    (`discovery_s`), fewer probes here lengthened routes (3,000 nodes, seeds 1-3: lookup
    stretch 1.90 with 8, 1.87 with 16); with it, 8 probes at 10,000 nodes (seeds 1-2) gave the
    same stretch (1.80-1.82) and saved under 1% of the events."""

    proximity_growth_rounds: int = 2
    proximity_growth_probes: int = 4
    """The same search runs again whenever the ring has grown `proximity.GROWTH` times since
    the last, lighter: the table it starts from was searched already, so of each answer only
    the few likeliest nearer nodes are worth a probe. With the join's settings instead,
    `iris sim join --nodes 10000` (seeds 1-2) made 8-9% more events for a lookup stretch of
    2.23-2.25 against 2.25-2.29; at 1,000 nodes (seeds 1-3) 1.69-1.73 against 1.70."""

    sweep_gap_s: float = 0.1
    """Pace of a table sweep (`sweep_max_wait_s`): every entry is probed within a few
    seconds (at 0.25 s, a table of 30 took 7.5 s, most of the margin the sweep in the quiet
    after a churn has)."""

    sweep_min_interval_s: float = 30.0
    """At most one table sweep per this many seconds (one due sooner waits for it): the
    second sweep after the failures stop comes this long after the first."""
    sweep_quiet_s: float = 20.0
    sweep_max_wait_s: float = 100.0
    """A sweep owed to the failures seen runs at once after a calm (no sweep for
    `sweep_max_wait_s`), else once none has been seen for `sweep_quiet_s`, but no later
    than `sweep_max_wait_s` after the last sweep (`OverlayNode._sweep_due_at`). Under churn
    the sweeps come `sweep_max_wait_s` apart, and that sets how many table entries are dead
    at any time, each a hop timeout for a lookup that meets it: at 1,000 nodes with
    10-minute sessions (600 s of churn, seeds 1-2), 4.0-4.2% of them at 60 s and 5.6-5.8% at
    100 s, for 1.69-1.70 and 1.42-1.43 maintenance messages per node per second (seeds 1-6:
    1.64-1.76 and 1.42-1.48; at 90 s, 1.47-1.52, not always under the 1.5 we hold to), and a
    lookup delay stretch of 4.7 and 4.9-5.2. MSPastry tunes its probing to about 5% dead
    entries. The sweeps in the quiet after the churn clear the tables as fast either way
    (34-52 s); a burst of failures after a calm is swept at once either way."""
    lone_calm_s: float = 300.0
    """A failure after this long without one (seen, heard of, or in a neighbour's heartbeat),
    seen by a node active and its table settled as long, is a lone one (a crash now and then)
    until another node's follows: it owes no sweep, and its holders tell one another instead
    (`OverlayNode._failure_noticed`, `_tell_holders`). At `sweep_max_wait_s` (100 s),
    1-hour sessions at 1,000 nodes, where a node hears of a failure about once a minute, had
    many such lone ones, and tables still held dead entries 600 s after the churn; under
    daily restarts a node hears of one about every 7 minutes."""

    sweep_fresh_s: float = 20.0
    """A sweep passes over the entries that spoke to us within this long (they are alive),
    and looks at them again this long after. At 30 s, an entry that spoke just before it
    crashed was looked at again only that much later: under churn at 1,000 nodes the last
    dead entries went 44-60 s after the churn stopped (34-50 s at 20 s, for 0.05 more
    messages per node per second; measured with second looks under churn too)."""

    route_ack_timeout_s: float = 0.6
    """A routed message not acknowledged by the next hop within this is sent another way."""

    route_attempts: int = 5
    """Next hops tried for one routed message before it is dropped. A lookup is lost when
    every try's `Route` is lost: at 5% loss, 0.05^4 per hop with 4 tries, which lost one lookup
    in 10,000 on some seeds (`iris sim join --nodes 1000 --loss 0.05 --duplicate 0.01 --wire`,
    seed 4); 0.05^5 with 5."""

    max_pending_routes: int = 4096
    """Routed messages awaiting a hop acknowledgement; beyond it, new ones go unacknowledged."""

    max_pending_pings: int = 256
    """Probes in flight; candidates beyond it are not probed (they come round again)."""

    join_timeout_s: float = 4.0
    """A join that got no answer from the root within this is retried (next seed)."""

    discovery_s: float = 4.0
    """Before joining, a node looks for a node near it to join through (`overlay.discovery`),
    for at most this long (an answer lost leaves it waiting until then); 0: join through the
    seed as given."""

    heal_first_retry_s: float = 2.0
    """First retry of a peer lost to failure; each later retry waits twice as long..."""

    heal_max_retry_s: float = 60.0
    """...up to this, so a partition of any length heals within about a minute of its end."""

    heal_burst: int = 3
    heal_burst_window_s: float = 10.0
    """This many peers lost within this window look like a partition: a sweep starts..."""

    heal_sweep_s: float = 5.0
    heal_sweep_for_s: float = 600.0
    """...probing one more lost peer every `heal_sweep_s` for `heal_sweep_for_s`, so the end
    of a partition is noticed within seconds (`overlay.lost_peers`)."""

    heal_forget_s: float = 3600.0
    """A lost peer that stays silent this long is forgotten."""

    heal_record_size: int = 16
    """Lost peers remembered for healing (oldest forgotten first)."""

    gossip_hint_s: float = 60.0
    """For this long after dropping a dead peer, a node tells neighbours that still list it."""

    merge_lookup_gap_s: float = 5.0
    """At most one ring-merge lookup per this many seconds."""

    greeting_gap_s: float = 60.0
    """At most one `Hello` to the whole leaf set per this many seconds, when a lost peer is
    back (`OverlayNode._merge_via`). Once per merge lookup, halves of 1,000 nodes sent 1.06
    maintenance messages per node per second in the minute after the heal, 0.36 of them
    `Hello`s."""

    def __post_init__(self) -> None:
        if self.leaf_size < 2 or self.leaf_size % 2 or self.leaf_size > 32:
            raise ValueError("leaf_size must be even, between 2 and 32")
        for name in ("heartbeat_s", "probe_timeout_s", "table_probe_s", "route_ack_timeout_s",
                     "heal_sweep_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if min(self.probe_attempts, self.route_attempts, self.right_beat_periods,
               self.proximity_join_rounds, self.proximity_growth_rounds) < 1:
            raise ValueError("attempt, period and round counts must be at least 1")
        if self.table_probe_max_s < self.table_probe_s:
            raise ValueError("table_probe_max_s must be at least table_probe_s")
        if self.max_probe_attempts < self.probe_attempts:
            raise ValueError("max_probe_attempts must be at least probe_attempts")
        if not 0.0 < self.probe_false_alarm < 1.0:
            raise ValueError("probe_false_alarm must be between 0 and 1")

    @property
    def silence_s(self) -> float:
        """The silence after which the right neighbour (heartbeats every period) is probed."""
        return self.heartbeat_s * self.missed_heartbeats
