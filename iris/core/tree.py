"""One node's view of one Scribe tree (a cluster's or a topic's).

A node is in a tree when it is a member (local registrations or a subscription) or forwards
for members below it. It knows its parent (None at the root), its children with the capacity
("weight") of each child's subtree, the capacity of the rest of the tree above it, and its
path to the root (to refuse a child that is its own ancestor, which would close a loop).

It also remembers, for a while, the capacity of children it dropped as dead (`lost`): their
members are orphans until they notice and graft again, and a survey counts them as members
that did not answer rather than forget them (`iris.core.survey`).
"""

from __future__ import annotations

from iris.core.messages import MAX_ANCESTORS

MAX_CUT_MS = 3_600_000  # `Subscribe.cut_ms` says no more than an hour


class Attempt:
    """A move up the tree being weighed (`iris.core.reshape`): the parent and the ancestor
    asked, when, and their answers."""

    __slots__ = ("parent", "candidate", "sent", "parent_rtt", "candidate_rtt", "outside",
                 "ancestors")

    def __init__(self, parent: int, candidate: int, sent: float) -> None:
        self.parent = parent
        self.candidate = candidate
        self.sent = sent
        self.parent_rtt: float | None = None
        self.candidate_rtt: float | None = None  # set once the candidate adopted us
        self.outside = 0  # the candidate's TreeAck: capacity outside our subtree, its path
        self.ancestors: tuple[int, ...] = ()


class GroupTree:
    __slots__ = (
        "group", "name", "topic", "parent", "ancestors", "children", "local", "up_weight",
        "parent_heard", "grafting", "graft_sent", "lost", "lost_above", "gained", "busy_at",
        "attempt", "tried", "cut_since", "kept_since",
    )

    def __init__(self, group: int, name: str | None, topic: bool, now: float) -> None:
        self.group = group
        self.name = name  # known where this node is a member; None at pure forwarders
        self.topic = topic
        self.parent: int | None = None
        self.ancestors: tuple[int, ...] = ()
        self.children: dict[int, list[float]] = {}  # child -> [subtree weight, last heard]
        self.local = 0  # capacity of the members on this node
        self.up_weight = 0  # capacity of the tree outside this node's subtree
        self.parent_heard = now
        self.grafting = False  # a Subscribe is on its way and no TreeAck came yet
        self.graft_sent = now
        self.lost: list[list[float]] | None = None  # [until, capacity] of children lost
        self.lost_above: list[float] | None = None  # [until, capacity] beyond a lost parent
        self.gained = 0.0  # capacity grafted to us since the parent last said `up_weight`
        # Reshaping (`iris.core.reshape`): when a broadcast or event last passed this node,
        # the move to an ancestor being weighed, and the index in `ancestors` to try next.
        self.busy_at = now
        self.attempt: Attempt | None = None
        self.tried = 1
        # Since when this node has been without the parent it lost (when it last heard from
        # it); None with a parent, or before the first one (`iris.core.replay`).
        self.cut_since: float | None = None
        # Since when this node has passed every flood of the tree, or asked the node above
        # for them (`Trees._ask_back`).
        self.kept_since = now

    def lose_child(self, child: int, until: float) -> bool:
        """Drop `child` as dead (not pruned by itself): its capacity is remembered as lost
        until `until`. False if it was no child of ours."""
        entry = self.children.pop(child, None)
        if entry is None:
            return False
        if entry[0] > 0:
            if self.lost is None:
                self.lost = []
            self.lost.append([until, entry[0]])
        return True

    def lose_parent(self, until: float) -> None:
        """Our parent is dead: the rest of the tree beyond it (`up_weight`) is orphaned too.
        Should this node end up the root, those members are remembered as lost until they
        graft to it (or `until`); a new parent makes them someone else's business. Members
        that grafted to us since the parent last counted the rest of the tree are in
        `up_weight` still (orphans of the same death that noticed it first): not lost."""
        self.disowned()
        orphans = self.up_weight - self.gained
        if orphans > 0:
            self.lost_above = [until, float(orphans)]

    def disowned(self) -> None:
        """The parent is gone (dead, or it no longer counts us as its child): cut off since
        it was last heard from, until a new parent adopts us."""
        if self.parent is not None:
            self.cut_since = self.parent_heard
        self.parent = None

    def parent_late(self, now: float, after: float) -> bool:
        """A parent we have (not grafting) that was not heard for `after` seconds."""
        return self.parent is not None and not self.grafting and now - self.parent_heard > after

    def became_root(self) -> None:
        """The group's key is ours: no parent, nothing above, nothing to be cut off from."""
        self.parent = None
        self.ancestors = ()
        self.grafting = False
        self.cut_since = None

    def cut_ms(self, now: float) -> int:
        """`Subscribe.cut_ms`: how long this node has been cut off, 0 if it is not."""
        if self.cut_since is None or self.parent is not None:
            return 0
        return min(int((now - self.cut_since) * 1000), MAX_CUT_MS)

    def outside_is(self, weight: int) -> None:
        """The parent counted the rest of the tree: `weight`, with every graft to us so far."""
        self.up_weight = weight
        self.gained = 0.0

    def adopted(self, child: int, weight: float) -> None:
        """`child` grafted with `weight`: a new child perhaps makes up for lost ones, and
        counts as gained until the parent next counts the rest of the tree."""
        if child not in self.children:
            if self.lost or self.lost_above:
                self.regained(weight)
            if self.parent is not None:
                self.gained += weight

    def orphans_above(self, now: float) -> int:
        """Capacity beyond the parent we lost, not grafted back to us (0 with a parent)."""
        above = self.lost_above
        if self.parent is not None or above is None or above[0] <= now:
            return 0
        return max(0, int(above[1]))

    def orphans_reported(self, child_weight: float, orphans: int, until: float) -> None:
        """A child that lost its parent grafted to us, reporting `orphans` beyond it: those
        we do not count already (our subtree less the child's) are lost to us too, unless we
        have a parent, whose side of the tree is someone else's business."""
        if self.parent is not None or orphans <= 0:
            return
        missing = orphans - (self.weight - child_weight)
        if missing > 0 and (self.lost_above is None or self.lost_above[1] < missing):
            self.lost_above = [until, float(missing)]

    def lost_weight(self, now: float) -> int:
        """Capacity of the children lost recently whose members have not grafted back (and,
        at a node without a parent, of the rest of the tree beyond the parent it lost)."""
        total = 0.0
        lost = self.lost
        if lost:
            lost[:] = [entry for entry in lost if entry[0] > now]
            total += sum(entry[1] for entry in lost)
        above = self.lost_above
        if above is not None:
            if above[0] <= now or above[1] <= 0:
                self.lost_above = None
            elif self.parent is None:
                total += above[1]
        return int(total)

    def regained(self, weight: float) -> None:
        """A child grafted with `weight`: likely orphans coming back; lost capacity that
        much smaller."""
        lost = self.lost
        while lost and weight > 0:
            take = min(weight, lost[0][1])
            lost[0][1] -= take
            weight -= take
            if lost[0][1] <= 0:
                lost.pop(0)
        above = self.lost_above
        if above is not None and weight > 0:
            above[1] -= weight

    def set_ancestors(self, ancestors: tuple[int, ...]) -> None:
        """A new path to the root: its ancestors may be worth trying again."""
        if ancestors != self.ancestors:
            self.ancestors = ancestors
            self.tried = 1

    @property
    def weight(self) -> int:
        """Capacity of this node's subtree (itself and everything below)."""
        return self.local + int(sum(c[0] for c in self.children.values()))

    def weight_outside(self, child: int) -> int:
        """Capacity the tree offers `child` through this node (everything but its subtree)."""
        return self.weight - int(self.children[child][0]) + self.up_weight

    def empty(self) -> bool:
        return self.local == 0 and not self.children

    def is_root(self) -> bool:
        return self.parent is None and not self.grafting

    def neighbours(self) -> list[int]:
        out = list(self.children)
        if self.parent is not None:
            out.append(self.parent)
        return out

    def set_parent(self, parent: int, ancestors: tuple[int, ...], now: float) -> None:
        """`parent` adopted us; its count of the rest of the tree follows (`outside_is`)."""
        if parent != self.parent:
            self.tried = 1
        self.parent = parent
        self.set_ancestors((parent, *ancestors)[:MAX_ANCESTORS])
        self.parent_heard = now
        self.grafting = False
        self.lost_above = None
        self.cut_since = None
