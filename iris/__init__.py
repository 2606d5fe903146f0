"""Iris-style messaging over a Pastry overlay.

    async with iris.open_node(network_key=key, listen="127.0.0.1:0", seeds=[...]) as node:
        await node.register("echo", handler)
        reply = await node.request("echo", b"hi", timeout=1.0)
        result = await node.survey("echo", b"who is there?", timeout=1.0)  # every member
"""

import os

from iris.core.limits import ServiceLimits, TopicLimits
from iris.errors import (
    ClosedError,
    IrisError,
    JoinError,
    LimitExceededError,
    NoSuchClusterError,
    RemoteError,
    TimeoutError,
)
from iris.handlers import (
    BroadcastHandler,
    EventHandler,
    RequestHandler,
    SurveyHandler,
    TunnelHandler,
)
from iris.runtime import Node, Registration, SurveyResult, Tunnel, open_node, time_left
from overlay.link_policy import LinkPolicy

__version__ = "0.1.0"


def generate_network_key() -> bytes:
    """A fresh 32-byte network key: every node of one network must share it."""
    return os.urandom(32)


__all__ = [
    "BroadcastHandler", "ClosedError", "EventHandler", "IrisError", "JoinError",
    "LimitExceededError", "LinkPolicy", "NoSuchClusterError", "Node", "Registration", "RemoteError",
    "RequestHandler", "ServiceLimits", "SurveyHandler", "SurveyResult", "TimeoutError",
    "TopicLimits", "Tunnel", "TunnelHandler",
    "generate_network_key", "open_node", "time_left",
]
