"""Tree reshaping: a tree node moves up to an ancestor that is not much farther than its parent.

A Scribe tree follows the routes its members' grafts took, and above the first hop (which
proximity neighbour selection keeps short) a route's hops go to nodes chosen among a handful,
anywhere on the network: an event crossing the tree goes up to a common ancestor and down again
through them. A tree node that measures its parent and an ancestor further up moves to the
ancestor when the ancestor's round trip is at most `reshape_reach` times its parent's: every
path between its subtree and the tree above the parent then loses the parent's hop and the way
from the parent up to the ancestor (by the triangle inequality the direct edge is no longer
than that way), and only the paths to the parent's other branches get longer, by a bounded
amount (Scribe's tree maintenance with proximity; measured at 1,000 nodes in
docs/BENCHMARKS.md). The node then tries the next ancestor, and so on up to the root; it tries
them again when its parent or its path to the root changes.

The protocol: the node sends a `Subscribe` straight to its parent and to one ancestor (not
routed). A tree node answers a child's with `TreeAck` (a round trip measured); another node's
it answers with `TreeAck` too, adopting it at capacity 0 (so no walk and no survey counts it
twice), if it is in the tree, the asker is not one of its own ancestors (no loop), and no
broadcast or event passed it for `reshape_quiet_s`; otherwise `Prune`: refused. With both
answers in, the node moves if the ancestor is near enough: it takes the ancestor as parent,
leaves the old one with `Moved`, not `Prune` (its subtree stays in the tree: the old parent
counts it outside its own subtree from then on, not only after its own parent's next beat; a
survey that reached the old parent while that parent's parent was dead counted the members
that had moved up as if they had left), and reports its capacity to the new one (`TreeUp`);
else it prunes the ancestor. A pure forwarder whose only child moved away prunes itself, as always.

Why the quiet period: a move shortens the way between the ancestor and the node, so an event
sent down the new edge could overtake an older one still on the old way through the parent;
the member would then drop the older one (per-publisher order is kept by dropping, `flood`),
a lost event. An event on the old way would have passed the ancestor (from above) or the node
(from below) shortly before. So the ancestor adopts only if nothing passed it for
`reshape_quiet_s`, the node moves only if nothing passed it for as long, and an event the
ancestor forwards to its new child before the move makes the node busy, so it does not move:
every event then either arrived the old way before the move, or is sent after it along ways
that carry it in order. Events entering between the ancestor and the node take a longer way
after the move, so they do not overtake either. A survey makes a node busy too: its question,
spread over a tree that changed under it, went both ways over an edge (`iris.core.survey`).
A tree under steady traffic is not reshaped.
Nor is one at a node that met trouble lately (`reshape_calm_s`: a peer declared failed, a tree
neighbour lost, a root moved): a partition holds events on stalled connections for as long as
it lasts, far beyond the quiet period (measured: `messaging-partition` at 1,000 nodes, seed 1,
dropped 108 events as out of order without this, 4 with it).
"""

from __future__ import annotations

from iris.core.messages import MAX_ANCESTORS, Moved, Prune, Subscribe, TreeAck, TreeUp
from iris.core.state import CoreState
from iris.core.tree import Attempt, GroupTree


class Reshaping:
    __slots__ = ("state",)

    def __init__(self, state: CoreState) -> None:
        self.state = state

    def quiet(self, tree: GroupTree) -> bool:
        """No event can be on an old way that a move would shorten (the module's reasons)."""
        state = self.state
        cfg = state.config
        return (state.now - tree.busy_at >= cfg.reshape_quiet_s
                and state.now - state.trouble_at >= cfg.reshape_calm_s)

    def start(self, tree: GroupTree) -> None:
        """Weigh a move to the next ancestor not tried since the parent or the path changed."""
        state = self.state
        parent = tree.parent
        if (tree.attempt is not None or parent is None or tree.grafting
                or tree.tried >= len(tree.ancestors) or not self.quiet(tree)):
            return
        candidate = tree.ancestors[tree.tried]
        tree.tried += 1
        tree.attempt = Attempt(parent, candidate, state.now)
        ask = Subscribe(tree.group, state.node.id, tree.weight, 0)
        state.node.send(parent, ask)
        state.node.send(candidate, ask)

    def asked(self, src: int, msg: Subscribe) -> None:
        """A tree node's `Subscribe` sent straight to us: a child measuring us, or a descendant
        asking us to adopt it."""
        state = self.state
        tree = state.trees.get(msg.group)
        if tree is None or src not in tree.children and (
                tree.grafting or src in tree.ancestors or src == tree.parent
                or not self.quiet(tree)):
            state.node.send(src, Prune(msg.group))
            return
        tree.children.setdefault(src, [0, state.now])
        state.node.send(src, TreeAck(tree.group, tree.weight_outside(src),
                                     tree.ancestors[: MAX_ANCESTORS - 1]))

    def on_ack(self, tree: GroupTree, src: int, msg: TreeAck) -> bool:
        """A `TreeAck` for the move being weighed (True: handled here)."""
        attempt = tree.attempt
        if attempt is None:
            return False
        rtt = self.state.now - attempt.sent
        if src == attempt.candidate and attempt.candidate_rtt is None:
            attempt.candidate_rtt = rtt
            attempt.outside, attempt.ancestors = msg.outside, msg.ancestors
        elif src == attempt.parent and attempt.parent_rtt is None:
            attempt.parent_rtt = rtt
            return False  # our parent's answer also refreshes what it told us
        else:
            return False
        self._decide(tree)
        return True

    def on_refusal(self, tree: GroupTree, src: int) -> bool:
        """A `Prune` from the ancestor asked: it does not adopt us (True: handled here)."""
        attempt = tree.attempt
        if attempt is None or src != attempt.candidate:
            return False
        tree.attempt = None
        return True

    def after_parent_ack(self, tree: GroupTree) -> None:
        if tree.attempt is not None:
            self._decide(tree)

    def _decide(self, tree: GroupTree) -> None:
        attempt = tree.attempt
        assert attempt is not None
        if attempt.parent_rtt is None or attempt.candidate_rtt is None:
            return
        state = self.state
        tree.attempt = None
        if (tree.parent == attempt.parent and not tree.grafting and self.quiet(tree)
                and attempt.candidate_rtt <= state.config.reshape_reach * attempt.parent_rtt):
            old = attempt.parent
            tree.set_parent(attempt.candidate, attempt.ancestors, state.now)
            tree.outside_is(attempt.outside)
            state.node.send(old, Moved(tree.group))
            state.node.send(attempt.candidate, TreeUp(((tree.group, tree.weight),)))
            state.count("tree_moves")
        else:
            state.node.send(attempt.candidate, Prune(tree.group))
        self.start(tree)

    def abandon(self, tree: GroupTree) -> None:
        """Give the move up (the tree changed under it, or an answer is overdue)."""
        attempt = tree.attempt
        if attempt is None:
            return
        tree.attempt = None
        if attempt.candidate_rtt is not None:
            self.state.node.send(attempt.candidate, Prune(tree.group))

    def overdue(self, tree: GroupTree) -> bool:
        attempt = tree.attempt
        return (attempt is not None
                and self.state.now - attempt.sent >= self.state.config.graft_retry_s)
