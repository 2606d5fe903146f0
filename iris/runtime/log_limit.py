"""Warnings about what peers do, rate-limited per kind.

A node warns when it refuses or closes a connection (a relay client over a limit, a link it
would not take), and a peer can cause that as often as it connects: one abuse run wrote 646 KB
of such warnings. Here each kind is logged at most once per interval, and the first one after
says how many were left out, so the log stays readable and still tells how much happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class LogLimit:
    """At most one warning per `interval_s` for each kind; the next one logged says how many
    were suppressed meanwhile. Kinds are the caller's fixed names (never a peer's address or
    anything else a peer chooses), so what is kept per kind stays small."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._clock = clock
        self._quiet_until: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, kind: str, msg: str, *args: object) -> None:
        now = self._clock()
        if now < self._quiet_until.get(kind, now):
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return
        self._quiet_until[kind] = now + self.interval_s
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            msg, args = f"{msg} (%d more suppressed)", (*args, suppressed)
        self.logger.warning(msg, *args)
