"""One node's view of one Scribe tree (a cluster's or a topic's).

A node is in a tree when it is a member (local registrations or a subscription) or forwards
for members below it. It knows its parent (None at the root), its children with the capacity
("weight") of each child's subtree, the capacity of the rest of the tree above it, and its
path to the root (to refuse a child that is its own ancestor, which would close a loop).
"""

from __future__ import annotations

from iris.core.messages import MAX_ANCESTORS


class GroupTree:
    __slots__ = (
        "group", "name", "topic", "parent", "ancestors", "children", "local", "up_weight",
        "parent_heard", "grafting", "graft_sent",
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
        self.parent = parent
        self.ancestors = (parent, *ancestors)[:MAX_ANCESTORS]
        self.parent_heard = now
        self.grafting = False
