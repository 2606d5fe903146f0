"""What checkers and workloads see of a running simulation.

The engine drives nodes and owns the truth; checkers and workloads read that truth and act
through the engine. They are written against this interface rather than the engine's class, so
the engine can install a workload's per-node app and lookup tracker without the modules
importing each other in a circle: `world` <- `checkers` <- `workload` <- `engine`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from overlay.config import OverlayConfig
from overlay.node import OverlayNode


class SortedIds(Protocol):
    """The ids of the live, active nodes in ring order (a `sortedcontainers.SortedList`)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[int]: ...

    def __getitem__(self, index: int) -> int: ...

    def __contains__(self, node: object) -> bool: ...

    def bisect_left(self, value: int) -> int: ...


class LookupSink(Protocol):
    """Where a node's app reports a `Lookup` that reached its root."""

    def delivered(self, at: int, key: int, tag: int, hops: int) -> None: ...


class World(Protocol):
    """A running simulation: its nodes, its truth, its clock and randomness, and its inputs."""

    @property
    def seed(self) -> int: ...

    @property
    def rng(self) -> random.Random: ...

    @property
    def now(self) -> float: ...

    @property
    def config(self) -> OverlayConfig: ...

    @property
    def nodes(self) -> Mapping[int, OverlayNode]:
        """The live nodes, joining or active."""
        ...

    @property
    def active(self) -> SortedIds:
        """The truth every checker and every lookup is scored against."""
        ...

    @property
    def lookups(self) -> LookupSink: ...

    def random_active(self) -> int: ...

    def mark_active(self, node_id: int) -> None: ...

    def call(self, node_id: int, fn: Callable[[OverlayNode], object]) -> None:
        """Give a node an input from its application, then send what it produced."""
        ...

    def at(self, when: float, fn: Callable[[], object]) -> None:
        """Run `fn()` at simulated time `when`."""
        ...
