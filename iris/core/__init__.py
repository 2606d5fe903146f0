"""The messaging layer, sans-IO: Scribe trees, the capacity-weighted walk, flooding, tunnels.

`MessagingCore` is the `OverlayApp` of a node; nothing here imports trio, a socket or a clock.
The outcome of a request is one of the statuses OK, REMOTE_ERROR, NO_MEMBERS, REFUSED, TIMEOUT.
"""

from iris.core.messages import NO_MEMBERS, OK, REFUSED, REMOTE_ERROR
from iris.core.messaging import MessagingConfig, MessagingCore, cluster_group, topic_group
from iris.core.requests import TIMEOUT

__all__ = [
    "NO_MEMBERS", "OK", "REFUSED", "REMOTE_ERROR", "TIMEOUT", "MessagingConfig", "MessagingCore",
    "cluster_group", "topic_group",
]
