"""Scribe trees: one per cluster and per topic, rooted at the live node closest to the group.

A member routes a `Subscribe`; the first tree node on the route adopts it (`TreeAck`), and a
node not in the tree yet adopts it and grafts itself (the reverse-path tree). A node refuses to
adopt one of its own ancestors, which keeps re-grafts from closing loops. Tree neighbours
exchange one aggregated beat per `tree_beat_s`: capacities up (`TreeUp`), capacity outside
the subtree and the path to the root down (`TreeDown`). A parent late by `tree_late_beats`
(checked at each beat and half a beat after) gets the child's beat acknowledged, and the child
grafts again if it is not; so does a silent parent (3 beats) or one the overlay declares
failed. The graft of a child cut off so says for how long, and the two ends send each other
what the tree carried meanwhile (`iris.core.replay`). Silent children are pruned; a node whose
subtree empties prunes itself. A root that is no longer the closest node to its group (a node
joined, a partition healed) grafts into the new root's tree, which merges split trees. While
no event passes, a tree node moves up to an ancestor not much farther than its parent
(`iris.core.reshape`), which cuts the detours the grafts' routes took.
"""

from __future__ import annotations

from iris.core import events as ev
from iris.core.messages import (
    MAX_ANCESTORS,
    MAX_TREE_ENTRIES,
    Moved,
    Prune,
    Subscribe,
    TreeAck,
    TreeDown,
    TreeUp,
)
from iris.core.reshape import Reshaping
from iris.core.state import CoreState
from iris.core.tree import GroupTree
from overlay.wire import Message


class Trees:
    __slots__ = ("state", "reshaping")

    def __init__(self, state: CoreState) -> None:
        self.state = state
        self.reshaping = Reshaping(state)

    # ------------------------------------------------------------------- local membership
    def join(self, group: int, name: str, topic: bool) -> None:
        """One more member of `group` on this node: graft, or count it in the tree we are in."""
        state = self.state
        tree = state.trees.get(group)
        if tree is None:
            tree = state.trees[group] = GroupTree(group, name, topic, state.now)
            tree.local = 1
            self.graft(tree)
        else:
            tree.name = name
            tree.topic = topic
            tree.local += 1
            if not tree.grafting:
                state.events.append(ev.Joined(name, topic))
            self.after_weight_change(tree)
        state.ensure_tick()

    def leave(self, group: int) -> None:
        tree = self.state.trees.get(group)
        if tree is None:
            return
        tree.local = max(0, tree.local - 1)
        if tree.local == 0:
            tree.name = None
        self.after_weight_change(tree)

    # ------------------------------------------------------------------------- grafting
    def graft(self, tree: GroupTree) -> None:
        """Route a Subscribe toward the group: the first tree node on the way adopts us."""
        state = self.state
        self.reshaping.abandon(tree)
        tree.grafting = True
        tree.graft_sent = state.now
        state.node.route(tree.group, Subscribe(tree.group, state.node.id, tree.weight,
                                              tree.orphans_above(state.now),
                                              tree.cut_ms(state.now)))

    def _adopt(self, tree: GroupTree, msg: Subscribe) -> None:
        child, weight = msg.subscriber, msg.weight
        tree.adopted(child, weight)
        tree.children[child] = [weight, self.state.now]
        if msg.orphans:
            tree.orphans_reported(weight, msg.orphans, self._lost_until())
        self.state.node.send(child, TreeAck(tree.group, tree.weight_outside(child),
                                            tree.ancestors[: MAX_ANCESTORS - 1]))
        if msg.cut_ms:
            self._ask_back(tree, msg.cut_ms)
            self._replay(tree, child, msg.cut_ms)

    def _ask_back(self, tree: GroupTree, cut_ms: int) -> None:
        """A child cut off for `cut_ms` needs floods from before this node passed any (it
        joined the tree lately, often only to adopt another orphan of the same death): ask
        the node above for them as if cut off that long ourselves. They come as `Replayed`
        and spread down to the child like any flood. The parent, if we have one, gets the
        ask straight (`asked`); a graft still on its way goes again, saying the cut."""
        state = self.state
        since = state.now - cut_ms / 1000
        if since >= tree.kept_since or tree.is_root():
            return
        tree.kept_since = since
        state.count("replays_asked")
        if tree.parent is not None:
            state.node.send(tree.parent, Subscribe(tree.group, state.node.id, tree.weight, 0,
                                                   cut_ms))
            return
        tree.cut_since = since if tree.cut_since is None else min(tree.cut_since, since)
        self.graft(tree)

    def asked(self, src: int, msg: Subscribe) -> None:
        """A `Subscribe` sent straight to us. With a cut, from a child: it asks back for the
        floods of that time (`_ask_back`). Otherwise a tree node weighing a move up the tree
        (`iris.core.reshape`)."""
        tree = self.state.trees.get(msg.group)
        if msg.cut_ms and tree is not None and src in tree.children:
            self._ask_back(tree, msg.cut_ms)
            self._replay(tree, src, msg.cut_ms)
            return
        self.reshaping.asked(src, msg)

    def _replay(self, tree: GroupTree, peer: int, cut_ms: int) -> None:
        """Send `peer`, a tree neighbour that was cut off from the tree for `cut_ms`, the floods
        of the tree this node passed meanwhile (`iris.core.replay`)."""
        state = self.state
        floods = state.history.replay(tree.group, peer, cut_ms, state.now)
        for flood in floods:
            state.node.send(peer, flood)
        if floods:
            state.count("floods_replayed", len(floods))

    def subscribe_passing(self, msg: Subscribe) -> Message | None:
        """A graft on its way through us: adopt it (joining the tree if need be) or let it on."""
        state = self.state
        child = msg.subscriber
        if child == state.node.id:
            return msg  # our own graft leaving us
        tree = state.trees.get(msg.group)
        if tree is not None:
            if child in tree.ancestors:
                return msg  # adopting our own ancestor would close a loop: let it pass
            before = tree.weight
            self._adopt(tree, msg)
            if tree.weight != before:
                self._send_up(tree)
            return None
        if len(state.trees) >= state.config.max_trees:
            state.count("grafts_refused")
            return None  # the subscriber's graft times out and is retried
        # Not in the tree yet: become a forwarder, adopt the child, and graft ourselves.
        tree = state.trees[msg.group] = GroupTree(msg.group, None, False, state.now)
        self._adopt(tree, msg)
        tree.grafting = True
        tree.graft_sent = state.now
        if msg.cut_ms:
            # The child was cut off, and so is its subtree's way through us: our adopter
            # sends us what it missed, and we pass it on.
            tree.cut_since = tree.kept_since = state.now - msg.cut_ms / 1000
        state.ensure_tick()
        return Subscribe(msg.group, state.node.id, tree.weight, tree.orphans_above(state.now),
                         tree.cut_ms(state.now))

    def subscribe_at_root(self, msg: Subscribe) -> None:
        """A graft reached the group's root, which is us; or it was delivered here because
        the way to the root failed, and the root is known again since (after a heal: peers
        given up and dropped come back). Then we are not the root: a graft of ours in flight
        stays in flight (it returned: it goes again now, not at the next beat, 5 s later,
        with every event of the tree lost meanwhile), and a child is adopted as by any tree
        node on the way."""
        state = self.state
        tree = state.trees.get(msg.group)
        root_here = state.node.is_root(msg.group)
        if msg.subscriber == state.node.id:
            if tree is not None and tree.grafting:
                if not root_here and tree.graft_sent < state.now:
                    self.graft(tree)
                    return
                tree.became_root()
                self._grafted(tree)
            return
        if tree is None:
            if len(state.trees) >= state.config.max_trees:
                state.count("grafts_refused")
                return
            tree = state.trees[msg.group] = GroupTree(msg.group, None, False, state.now)
            state.ensure_tick()
        elif tree.grafting and root_here:
            # We are the closest node after all: stop grafting, we are the root.
            tree.became_root()
        if msg.subscriber in tree.ancestors:
            return
        self._adopt(tree, msg)

    def _grafted(self, tree: GroupTree) -> None:
        if tree.name is not None:
            self.state.events.append(ev.Joined(tree.name, tree.topic))

    # --------------------------------------------------------------- tree neighbours' news
    def on_tree_ack(self, src: int, msg: TreeAck) -> None:
        state = self.state
        tree = state.trees.get(msg.group)
        if tree is None:
            state.node.send(src, Prune(msg.group))
            return
        if self.reshaping.on_ack(tree, src, msg):
            return
        if tree.parent is not None and tree.parent != src and not tree.grafting:
            state.node.send(src, Prune(msg.group))  # a late answer to an older graft
            return
        was_grafting = tree.grafting
        cut_ms = tree.cut_ms(state.now)
        tree.set_parent(src, msg.ancestors, state.now)
        tree.outside_is(msg.outside)
        if cut_ms:
            self._replay(tree, src, cut_ms)  # what our subtree sent while it was cut off
        if was_grafting:
            self._grafted(tree)
        else:
            self.reshaping.after_parent_ack(tree)

    def on_prune(self, src: int, msg: Prune) -> None:
        tree = self.state.trees.get(msg.group)
        if tree is None or self.reshaping.on_refusal(tree, src):
            return
        if tree.children.pop(src, None) is not None:
            self.after_weight_change(tree)
        elif tree.parent == src:
            tree.disowned()  # our parent disowns us: graft again
            self.graft(tree)

    def on_moved(self, src: int, msg: Moved) -> None:
        """A child moved up to one of our ancestors (`iris.core.reshape`): its subtree left
        ours but not the tree, so it counts outside ours now."""
        tree = self.state.trees.get(msg.group)
        if tree is None:
            return
        entry = tree.children.pop(src, None)
        if entry is None:
            return
        if tree.parent is not None:
            tree.up_weight += int(entry[0])
        self.after_weight_change(tree)

    def on_tree_up(self, src: int, msg: TreeUp) -> None:
        state = self.state
        for group, weight in msg.entries:
            tree = state.trees.get(group)
            if tree is None:
                state.node.send(src, Prune(group))  # "I am not in that tree": it grafts again
                continue
            child = tree.children.get(src)
            if child is None:
                if src in tree.ancestors or src == tree.parent:
                    state.node.send(src, Prune(group))
                    continue
                tree.children[src] = [weight, state.now]
                self._send_up(tree)
                continue
            changed = child[0] != weight
            child[0] = weight
            child[1] = state.now
            if changed:
                self._send_up(tree)

    def on_tree_down(self, src: int, msg: TreeDown) -> None:
        state = self.state
        for group, weight, ancestors in msg.entries:
            tree = state.trees.get(group)
            if tree is None or tree.parent != src:
                if tree is not None and tree.grafting:
                    # Our graft is on its way, often to `src` (a root back from a freeze that
                    # still counts us): a Prune sent now would arrive after the graft and undo
                    # its adoption, leaving that root without us. Once we are adopted
                    # elsewhere, its next beat is answered with a Prune.
                    continue
                if tree is None or tree.attempt is None or tree.attempt.candidate != src:
                    state.node.send(src, Prune(group))  # (an ancestor adopting us: not yet)
                continue
            tree.outside_is(weight)
            tree.parent_heard = state.now
            tree.set_ancestors((src, *ancestors)[:MAX_ANCESTORS])

    def after_weight_change(self, tree: GroupTree) -> None:
        """Tell the parent the subtree's new capacity, or leave the tree once it is empty. A
        node whose last child died stays (at capacity 0) while that child's members may still
        graft back: it is what counts them as not answering a survey (`GroupTree.lost`), and
        leaving would hide them from the count."""
        if tree.empty() and not tree.lost_weight(self.state.now):
            del self.state.trees[tree.group]
            if tree.parent is not None:
                self.state.node.send(tree.parent, Prune(tree.group))
        else:
            self._send_up(tree)

    def _send_up(self, tree: GroupTree) -> None:
        if tree.parent is not None:
            self.state.node.send(tree.parent, TreeUp(((tree.group, tree.weight),)))

    # ------------------------------------------------------------------- overlay changes
    def root_moved(self) -> None:
        """The leaf set changed, or a suspect answered: a root that is no longer the closest
        node to its group grafts into the new root's tree (after joins, and after a partition
        heals: the trees merge)."""
        node = self.state.node
        for tree in self.state.trees.values():
            if tree.is_root() and not node.is_root(tree.group):
                self.state.trouble_at = self.state.now
                self.graft(tree)

    def _lost_until(self) -> float:
        """Until when a dead child's capacity is remembered: its members notice within the
        overlay's failure detection or 3 silent beats (checked each beat), then graft."""
        cfg = self.state.config
        return self.state.now + cfg.tree_beat_s * (cfg.tree_silence_beats + 1) + cfg.graft_retry_s

    def neighbour_failed(self, peer: int) -> None:
        for tree in list(self.state.trees.values()):
            attempt = tree.attempt
            if attempt is not None and peer in (attempt.parent, attempt.candidate):
                tree.attempt = None
            if tree.parent == peer:
                self._lose_parent(tree, self._lost_until())
            if self._lose_child(tree, peer, self._lost_until()):
                self.after_weight_change(tree)

    def link_lost(self, peer: int) -> None:
        """The connection with a tree neighbour ended without its goodbye: most often its
        process died. Its beat goes now, acknowledged. A dead parent loses us within a hop's
        timeout (`beat_lost`), where its late beats would take 5.5-8 s, every flood of the
        tree lost to our subtree meanwhile; a dead child is dropped as soon (`beat_down_lost`),
        where its silence would take 15 s, each walk and survey meanwhile losing a hop's
        timeout on it. A live one (it closed the connection for a reason of its own)
        answers, and nothing changes. A child silent for `tree_silence_beats` already is left
        to the beat, which drops it as lost, its members still counted until they graft back:
        this node was most likely frozen, its peers closed their connections meanwhile, and
        the child, alive, has another parent now; beaten, it would disown us at once and take
        its members out of our count."""
        state = self.state
        up = [(tree.group, tree.weight) for tree in state.trees.values()
              if tree.parent == peer and not tree.grafting and not tree.empty()]
        if up:
            state.count("parents_verified")
            self._beat_up(peer, up, True)
        silence = state.config.tree_beat_s * state.config.tree_silence_beats
        down = [(tree.group, tree.weight_outside(peer), tree.ancestors[: MAX_ANCESTORS - 1])
                for tree in state.trees.values()
                if (entry := tree.children.get(peer)) is not None
                and state.now - entry[1] <= silence]
        if down:
            state.count("children_verified")
            self._beat_down(peer, down, True)

    def beat_down_lost(self, child: int, msg: TreeDown) -> None:
        """A child whose connection ended did not acknowledge our beat: drop it as dead."""
        for group, _, _ in msg.entries:
            self.drop_neighbour(group, child)

    def drop_neighbour(self, group: int, peer: int) -> None:
        """`peer` did not acknowledge a step sent to it in the group's tree: drop it."""
        tree = self.state.trees.get(group)
        if tree is not None:
            if self._lose_child(tree, peer, self._lost_until()):
                self.after_weight_change(tree)
            elif tree.parent == peer:
                self._lose_parent(tree, self._lost_until())

    def beat_lost(self, parent: int, msg: TreeUp) -> None:
        """A parent that was late did not acknowledge our beat (`tree_late_beats`): graft
        again now, not once the overlay's probes of it have failed too (four more timeouts,
        every flood of the tree lost to our subtree meanwhile). A parent that was only slow
        loses us to its silence check, or adopts us again."""
        for group, _ in msg.entries:
            tree = self.state.trees.get(group)
            if tree is not None and tree.parent == parent:
                self._lose_parent(tree, self._lost_until())

    def _lose_child(self, tree: GroupTree, child: int, until: float) -> bool:
        """Drop a dead or silent child. A lost tree neighbour also holds reshaping back
        (`CoreState.trouble_at`): events may sit on a stalled connection."""
        if not tree.lose_child(child, until):
            return False
        self.state.trouble_at = self.state.now
        return True

    def _lose_parent(self, tree: GroupTree, until: float) -> None:
        tree.lose_parent(until)
        self.state.trouble_at = self.state.now
        self.graft(tree)

    # ------------------------------------------------------------------------ the beat
    def check_late(self) -> None:
        """Half a beat after a beat: a parent late already (`tree_late_beats`) gets its beat
        now, acknowledged, rather than at our next beat, up to a beat later (as there, not
        for a tree left empty, kept only to count the orphans that may come back). Where
        parents are in time this sends nothing."""
        state = self.state
        late_after = state.config.tree_beat_s * state.config.tree_late_beats
        late: dict[int, list[tuple[int, int]]] = {}
        for tree in state.trees.values():
            if tree.parent_late(state.now, late_after) and not tree.empty():
                assert tree.parent is not None
                late.setdefault(tree.parent, []).append((tree.group, tree.weight))
        for peer, entries in late.items():
            self._beat_up(peer, entries, True)

    def _beat_up(self, parent: int, entries: list[tuple[int, int]], acked: bool) -> None:
        send = self.state.node.send_acked if acked else self.state.node.send
        for i in range(0, len(entries), MAX_TREE_ENTRIES):
            send(parent, TreeUp(tuple(entries[i : i + MAX_TREE_ENTRIES])))

    def _beat_down(self, child: int, entries: list[tuple[int, int, tuple[int, ...]]],
                   acked: bool) -> None:
        send = self.state.node.send_acked if acked else self.state.node.send
        for i in range(0, len(entries), MAX_TREE_ENTRIES):
            send(child, TreeDown(tuple(entries[i : i + MAX_TREE_ENTRIES])))

    def beat(self) -> None:
        """One tree beat: check every tree, then send each tree neighbour one message (to a
        late parent acknowledged: `MessagingConfig.tree_late_beats`)."""
        state = self.state
        now, cfg = state.now, state.config
        silence = cfg.tree_beat_s * cfg.tree_silence_beats
        up: dict[int, list[tuple[int, int]]] = {}
        late: set[int] = set()  # parents not heard for `tree_late_beats`: beat acknowledged
        late_after = cfg.tree_beat_s * cfg.tree_late_beats
        down: dict[int, list[tuple[int, int, tuple[int, ...]]]] = {}
        for tree in list(state.trees.values()):
            for child in [c for c, (_, heard) in tree.children.items() if now - heard > silence]:
                self._lose_child(tree, child, now + silence)
            if tree.empty():
                self.after_weight_change(tree)
                continue
            if self.reshaping.overdue(tree):
                self.reshaping.abandon(tree)
            if tree.grafting:
                if now - tree.graft_sent >= cfg.graft_retry_s:
                    self.graft(tree)
            elif tree.parent is not None and now - tree.parent_heard > silence:
                self._lose_parent(tree, now + silence)
            elif tree.parent is None and not state.node.is_root(tree.group):
                self.graft(tree)
            if tree.parent is not None and not tree.grafting:
                up.setdefault(tree.parent, []).append((tree.group, tree.weight))
                if tree.parent_late(now, late_after):
                    late.add(tree.parent)
                self.reshaping.start(tree)
            for child in tree.children:
                down.setdefault(child, []).append((tree.group, tree.weight_outside(child),
                                                   tree.ancestors[: MAX_ANCESTORS - 1]))
        for peer, entries in up.items():
            self._beat_up(peer, entries, peer in late)
        for peer, down_entries in down.items():
            self._beat_down(peer, down_entries, False)

