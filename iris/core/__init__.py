"""The messaging layer, sans-IO: Scribe trees, the capacity-weighted walk, flooding, tunnels.

`MessagingCore` is the `OverlayApp` of a node; nothing here imports trio, a socket or a clock.
The outcome of a request is one of the statuses OK, REMOTE_ERROR, NO_MEMBERS, REFUSED, TIMEOUT;
a tunnel closes with one of the codes OK, NO_MEMBERS, REFUSED, TIMEOUT, BROKEN, LOST (one
numbering, `iris.core.messages`).
"""

from iris.core.messages import (
    BROKEN,
    LOST,
    NO_MEMBERS,
    OK,
    REFUSED,
    REMOTE_ERROR,
    TIMEOUT,
    tunnel_of,
)
from iris.core.messaging import MessagingConfig, MessagingCore, cluster_group, topic_group

__all__ = [
    "BROKEN", "LOST", "NO_MEMBERS", "OK", "REFUSED", "REMOTE_ERROR", "TIMEOUT", "MessagingConfig",
    "MessagingCore", "cluster_group", "topic_group", "tunnel_of",
]
