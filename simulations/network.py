"""The simulated network: where nodes sit, how long a message takes, what gets lost.

Nodes are placed uniformly in a square plane; the one-way delay between two nodes is a fixed
minimum plus a term proportional to their distance plus exponential jitter (TigerBeetle's
packet simulator uses the same minimum + exponential shape). Loss and duplication are per
message probabilities. A partition assigns nodes to groups; traffic between groups is dropped
until it is healed. All randomness comes from the simulation's one seeded RNG.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    plane: float = 1000.0
    """Side of the square the nodes are placed in (arbitrary units)."""

    min_delay_s: float = 0.002
    per_unit_s: float = 0.0001
    """Delay per unit of distance: the far corners of the plane are ~143 ms apart one way."""

    jitter_s: float = 0.002
    """Mean of the exponential jitter added to every message."""

    loss: float = 0.0
    duplicate: float = 0.0

    fifo: bool = False
    """Keep each link's messages in order, as TCP does (the messaging layer's links are TCP
    in the real runtime; its per-publisher order and tunnel chunks rely on it)."""


class Network:
    __slots__ = ("config", "rng", "positions", "groups")

    def __init__(self, config: NetworkConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.positions: dict[int, complex] = {}  # x + yj: abs(a - b) is the distance
        self.groups: dict[int, int] | None = None

    def place(self, node: int) -> None:
        plane = self.config.plane
        self.positions[node] = complex(self.rng.random() * plane, self.rng.random() * plane)

    def forget(self, node: int) -> None:
        self.positions.pop(node, None)

    def delay(self, here: complex, there: complex) -> float:
        """One-way delay of one message between two positions (fresh jitter each call)."""
        cfg = self.config
        return (
            cfg.min_delay_s
            + abs(here - there) * cfg.per_unit_s
            - math.log(1.0 - self.rng.random()) * cfg.jitter_s  # exponential jitter
        )

    def base_delay(self, a: int, b: int) -> float:
        """One-way delay between two nodes without jitter: the direct path's latency."""
        cfg = self.config
        return cfg.min_delay_s + abs(self.positions[a] - self.positions[b]) * cfg.per_unit_s

    def partition(self, groups: list[list[int]]) -> None:
        """Split the nodes: group i's members only reach each other (unlisted nodes: group 0)."""
        self.groups = {node: i for i, members in enumerate(groups) for node in members}

    def heal(self) -> None:
        self.groups = None
