"""The Iris relay protocol v1.0-draft2: the codec, the node's relay server and a Python client."""

from iris.relay.client import RelayClient
from iris.relay.server import RelayServer

__all__ = ["RelayClient", "RelayServer"]
