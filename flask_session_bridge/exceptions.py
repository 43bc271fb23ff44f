"""Errors raised by flask_session_bridge, all rooted at :class:`SessionBridgeError`."""

from __future__ import annotations


class SessionBridgeError(Exception):
    """Base class of every error this extension raises.

    :param message: What went wrong, for people.
    :param session_id: The public id of the session concerned, if any.
    """

    def __init__(self, message: str, session_id: str | None = None) -> None:
        super().__init__(message)
        #: The public id of the session concerned, or ``None``.
        self.session_id = session_id


class SessionMissing(SessionBridgeError):
    """A write was attempted on a socket (or background task) that has no
    session. Sessions are created only by HTTP responses, which can set the
    cookie that names them.
    """


class SessionLockTimeout(SessionBridgeError):
    """The session's lock could not be taken in time, or it expired while the
    holder was still working, so its write-back was refused.
    """


class StoreUnavailable(SessionBridgeError):
    """The session store could not be reached or gave an error.

    :param original_error: The driver's exception.
    :param outcome_unknown: The store may have applied the write before it
        failed (a reply that never came, replicas that did not confirm in
        time): the caller cannot say "not saved", only "unknown".
    """

    def __init__(
        self,
        message: str,
        session_id: str | None = None,
        original_error: BaseException | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message, session_id)
        #: The driver's exception, if there was one.
        self.original_error = original_error
        #: Whether the write this error ended may have been applied.
        self.outcome_unknown = outcome_unknown


class SessionValueError(SessionBridgeError, TypeError):
    """A value put in the session cannot be serialized. It is a
    :class:`TypeError`, raised at the write; the stored session is unchanged.
    """
