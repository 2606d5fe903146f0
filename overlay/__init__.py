"""The ring: node ids, leaf set, routing table, the sans-IO node, and the wire codec."""

from overlay.app import OverlayApp
from overlay.config import OverlayConfig
from overlay.node import OverlayNode
from overlay.wire import DecodeError, decode, encode

__all__ = ["DecodeError", "OverlayApp", "OverlayConfig", "OverlayNode", "decode", "encode"]
