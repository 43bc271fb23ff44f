"""Flask-Login, when installed: a new session id at every login, and
``login_required`` for socket handlers.
"""

from __future__ import annotations

import functools
import typing as t

from flask import session as flask_session

from .session import BridgeSession
from .session import deserialize

if t.TYPE_CHECKING:
    from flask import Flask

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

#: What ``login_user`` writes; kept when another user logs in.
_LOGIN_KEYS = ("_user_id", "_fresh", "_id", "_remember", "_remember_seconds", "_permanent")


def connect(app: Flask) -> None:
    """Renew the session at every ``login_user`` in ``app``, if Flask-Login
    is installed.
    """
    try:
        from flask_login import user_logged_in
    except ImportError:
        return
    user_logged_in.connect(_renew_at_login, app)


def _renew_at_login(app: Flask, **extra: t.Any) -> None:
    session = flask_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(session, BridgeSession) or session.is_socket:
        return
    state = app.extensions["session_bridge"]._states[app]
    if not state.regenerate_on_login:
        return
    if session.stored:
        try:
            previous = deserialize(session.stored).get("_user_id")
        except ValueError:
            previous = None
        if previous is not None and previous != session.get("_user_id"):
            # Another user: nothing of the last one's session carries over.
            kept = {key: session[key] for key in _LOGIN_KEYS if key in session}
            session.clear()
            session.update(kept)
    app.extensions["session_bridge"].regenerate()


def login_required(handler: F) -> F:
    """Refuse a socket event unless Flask-Login's ``current_user`` is logged
    in. The event's acknowledgement is then ``{"error": "Unauthorized",
    "message": "login required"}``, and the socket stays connected::

        @socketio.on("post")
        @login_required
        def post(text): ...
    """
    from flask_login import current_user

    @functools.wraps(handler)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        if not current_user.is_authenticated:
            return {"error": "Unauthorized", "message": "login required"}
        return handler(*args, **kwargs)

    return t.cast(F, wrapper)


def remember_cookie_name(app: Flask) -> str | None:
    """Flask-Login's remember cookie name, if the app uses Flask-Login."""
    if getattr(app, "login_manager", None) is None:
        return None
    return str(app.config.get("REMEMBER_COOKIE_NAME", "remember_token"))
