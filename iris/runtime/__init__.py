"""The trio driver of the cores: transports, links, timers, and the public `Node` and `Tunnel`."""

from iris.runtime.node import Node, Registration, Tunnel, open_node

__all__ = ["Node", "Registration", "Tunnel", "open_node"]
