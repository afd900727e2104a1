"""The library's exceptions (all documented ones are ValueError or RuntimeError subclasses)."""

from __future__ import annotations


class AuthenticationError(ValueError):
    """An order names neither a password nor a private key."""


class InvalidPathError(ValueError):
    """Paths that cannot be transferred: destinations not pairing with sources, line breaks in a path."""


class SessionStateError(ValueError):
    """A session method called in the wrong state (not started, already started, already finished)."""


class StreamStateError(ValueError):
    """A stream used while not open."""


class SessionStartError(RuntimeError):
    """The transfer program could not be started or never connected to the management port."""
