"""Iris for asyncio programs: the trio node and relay client, driven from an asyncio loop.

    async with iris.aio.open_node(network_key=key, seeds=[...]) as node:
        await node.register("echo", Echo())
        reply = await node.request("echo", b"hi", timeout=1.0)

See `iris.aio.guest` for how (trio as a guest of the asyncio loop) and why.
"""

from iris.aio.node import Node, Registration, Tunnel, open_node, time_left
from iris.aio.relay import RelayClient

__all__ = ["Node", "Registration", "RelayClient", "Tunnel", "open_node", "time_left"]
