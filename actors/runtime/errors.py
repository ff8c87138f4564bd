"""Errors of the actor runtime: each names what went wrong and where."""

from __future__ import annotations

__all__ = [
    "ActorCrashedError",
    "ActorError",
    "ActorNotFoundError",
    "ActorStoppedError",
    "AskTimeoutError",
    "MailboxFullError",
    "PeerLostError",
    "SupervisorFailedError",
]


class ActorError(Exception):
    """Base of every runtime error."""


class ActorCrashedError(ActorError):
    """The actor crashed (or was restarted) while handling this ask."""


class ActorStoppedError(ActorError):
    """The actor has stopped for good; its mailbox no longer accepts messages."""


class ActorNotFoundError(ActorError):
    """No actor of that name is registered on the target node."""


class AskTimeoutError(ActorError, TimeoutError):
    """No reply arrived within the ask's timeout."""


class MailboxFullError(ActorError):
    """A remote actor's mailbox was full when an ask arrived ("busy"); the asking
    :class:`RemoteRef` retries until its timeout, so askers see this only in a fault."""


class PeerLostError(ActorError):
    """The link to the node hosting the actor dropped, or the peer is unknown."""


class SupervisorFailedError(ActorError):
    """A supervisor exceeded its restart intensity and gave up; its parent decides."""
