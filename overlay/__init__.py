"""The ring: node ids, leaf set, routing table, the sans-IO node, and the wire codec."""

from overlay.config import OverlayConfig
from overlay.node import OverlayApp, OverlayNode
from overlay.wire import DecodeError, decode, encode

__all__ = ["DecodeError", "OverlayApp", "OverlayConfig", "OverlayNode", "decode", "encode"]
