"""The upcall interface: what the overlay tells the layer above it.

The layer above (the messaging core, a simulator workload) subclasses `OverlayApp` and
overrides what it needs. The defaults ignore everything, so a plain ring runs without one.
"""

from __future__ import annotations

from overlay.wire import Message


class OverlayApp:
    """Upcalls from the overlay to the layer above. The defaults ignore everything."""

    # No instance dict of its own: a subclass with `__slots__` (the simulator's app, one per
    # node) then has none either.
    __slots__ = ()

    consistent_roots = True
    """A message whose root by this node's state is a suspect (a peer that did not acknowledge
    a hop, being probed) waits for the verdict on it: answered, it goes there; declared failed,
    it is routed without it. So no message ends at a wrong root because a hop or its
    acknowledgement was lost, at the price of a wait (two probe timeouts or more) when the root
    really is dead or frozen. An app that would rather have such a message delivered at once
    where the suspect is routed around, and copes with roots in doubt itself
    (`OverlayNode.root_in_doubt`), sets this to False; `is_root` and `next_hop` follow suit.
    Either way a message waits for a joiner nearer its key that is about to take over the
    root (`OverlayNode._wait_for_joiner`): that wait is one network delay, not a verdict."""

    def deliver(self, key: int, payload: Message, origin: int, hops: int) -> None:
        """`payload`, routed toward `key`, arrived at its root (this node)."""

    def forward(self, key: int, payload: Message, next_hop: int) -> Message | None:
        """`payload` passes through on its way to `next_hop`; return it (or a replacement)
        to let it go on, or None to consume it here."""
        return payload

    def receive_direct(self, src: int, payload: Message) -> None:
        """A message sent point-to-point by `src` with `OverlayNode.send`."""

    def activated(self) -> None:
        """The node joined the ring and may now be a root."""

    def leafset_changed(self) -> None:
        """Leaf-set membership changed (roots of nearby keys may have moved)."""

    def peer_failed(self, peer: int) -> None:
        """`peer` was declared failed (or left)."""

    def link_lost(self, peer: int) -> None:
        """The connection with `peer` ended without its goodbye (`OverlayNode.link_lost`):
        likely dead, whether the node holds it or not."""

    def suspect_cleared(self, peer: int) -> None:
        """`peer`, suspected, answered: where `consistent_roots` is False, the roots routed
        around it move back to it, with no change of the leaf set to say so."""

    def timer(self, token: int) -> None:
        """A timer set with `OverlayNode.schedule(when, token)` is due."""

    def aged(self, payload: Message, seconds: float) -> Message | None:
        """`payload` waited `seconds` here for a hop that did not acknowledge it, and is sent
        on another way: return it as it goes on (a request's time left shrinks by as much),
        or None when it is no longer worth sending."""
        return payload

    def undeliverable(self, peer: int, payload: Message) -> None:
        """`peer` did not acknowledge `payload` sent with `send_acked` (it is being probed)."""
