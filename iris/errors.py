"""Errors raised to applications. Every one derives from `IrisError`."""

from __future__ import annotations

import builtins


class IrisError(Exception):
    """Base of every error this package raises to an application."""


class JoinError(IrisError):
    """The node could not join the ring through its seeds in time."""


class TimeoutError(IrisError, builtins.TimeoutError):  # noqa: A001 - is the builtin too
    """No reply came within the request's timeout (or no tunnel opened within the opening's).

    It is a builtin `TimeoutError` too, so `except TimeoutError` catches it whether the
    application means the builtin or `iris.TimeoutError`. (The builtin is an `OSError`, so
    `except OSError` catches it as well.)
    """


class RemoteError(IrisError):
    """The remote handler raised; the message is its error text."""


class NoSuchClusterError(IrisError):
    """The cluster has no members (known as soon as the request reaches the tree's root)."""


class LimitExceededError(IrisError):
    """A limit refused the operation (service limits of the member, pending requests, buffers)."""


class ClosedError(IrisError):
    """The node or the tunnel is closed."""
