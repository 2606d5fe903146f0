"""Accepting connections on the overlay and relay ports, and what the process may hold open.

trio's `serve_listeners` meets a full file table (EMFILE and kin) by logging the error with
its traceback and retrying every 0.1 s: a program that opens thousands of idle connections
turned a node's log into a wall of tracebacks. Here the accept loop backs off (doubling, up to
a second, reset by the next success) and says so in one rate-limited line; the connections
already open are served meanwhile, and those waiting in the kernel's backlog are taken once
descriptors are free again.

A process starts with the soft limit on open files its shell gave it (often 1,024), far below
what the system allows it (the hard limit). Like Go's runtime, a node raises the soft limit to
the hard one at start (`raise_open_file_limit`), and it keeps a share of what it may open for
its links (`client_share`): relay clients alone can never take every descriptor.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from iris.runtime.log_limit import LogLimit

log = logging.getLogger("iris.runtime.accept")

OUT_OF_CAPACITY = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0


async def serve_listeners(handler: Callable[[trio.SocketStream], Awaitable[None]],
                          listeners: Sequence[trio.SocketListener], warnings: LogLimit,
                          count: Callable[[str], None] = lambda what: None,
                          task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Accept on every listener and run `handler` for each connection in a task of its own
    (the stream is closed when the handler returns). `count("accept_backoffs")` each time
    accepting had to wait for descriptors."""
    async with trio.open_nursery() as nursery:
        for listener in listeners:
            nursery.start_soon(_accept_loop, listener, handler, nursery, warnings, count)
        task_status.started()


async def _accept_loop(listener: trio.SocketListener,
                       handler: Callable[[trio.SocketStream], Awaitable[None]],
                       nursery: trio.Nursery, warnings: LogLimit,
                       count: Callable[[str], None]) -> None:
    port = listener.socket.getsockname()[1]
    backoff = FIRST_BACKOFF_S
    async with listener:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in OUT_OF_CAPACITY:
                    raise
                count("accept_backoffs")
                warnings.warning("accept", "port %d: cannot accept connections (%s); "
                                 "retrying in %.2f s", port, os.strerror(exc.errno), backoff)
                await trio.sleep(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_S)
                continue
            backoff = FIRST_BACKOFF_S
            nursery.start_soon(_serve_one, handler, stream)


async def _serve_one(handler: Callable[[trio.SocketStream], Awaitable[None]],
                     stream: trio.SocketStream) -> None:
    try:
        await handler(stream)
    finally:
        await trio.aclose_forcefully(stream)


def open_file_limit() -> int | None:
    """The soft limit on this process's open files (None where the OS has none)."""
    try:
        import resource
    except ImportError:  # (not on Windows)
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


def raise_open_file_limit() -> int | None:
    """Raise the soft limit on open files to the hard limit (as far as the OS allows); the
    limit in force after."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:  # (macOS refuses more than OPEN_MAX)
            log.debug("cannot raise the open-file limit to %s: %s", hard, exc)
    return open_file_limit()


def link_share(cap: int) -> int:
    """How many links to other nodes a node of this process keeps open: `cap`, but at most a
    quarter of the descriptors the process may open (a soft limit of 256 is common), so the
    application and a relay's clients keep theirs."""
    limit = open_file_limit()
    return cap if limit is None else max(1, min(cap, limit // 4))


def client_share() -> int:
    """How many client connections a server of this process may take: half the descriptors
    the process may open (the other half for links, listeners and files)."""
    limit = open_file_limit()
    return 1 << 30 if limit is None else max(1, limit // 2)
