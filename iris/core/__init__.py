"""The messaging layer, sans-IO: Scribe trees, the capacity-weighted walk, flooding, tunnels.

`MessagingCore` is the `OverlayApp` of a node; nothing here imports trio, a socket or a clock.
"""

from iris.core.messaging import MessagingConfig, MessagingCore, cluster_group, topic_group

__all__ = ["MessagingConfig", "MessagingCore", "cluster_group", "topic_group"]
