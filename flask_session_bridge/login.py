"""Flask-Login, when installed: a new session id at every login, the
session owned by the user logged in, a logout that ends the session, and
``socket_login_required`` for socket handlers.
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
    """Renew the session at every ``login_user`` in ``app`` and make it the
    user's; end it at every ``logout_user``; if Flask-Login is installed.
    """
    try:
        from flask_login import user_logged_in
        from flask_login import user_logged_out
    except ImportError:
        return
    user_logged_in.connect(_renew_at_login, app)
    user_logged_out.connect(_end_at_logout, app)


def _http_session() -> BridgeSession | None:
    session = flask_session._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(session, BridgeSession) or session.is_socket:
        return None
    return session


def _renew_at_login(app: Flask, user: t.Any = None, **extra: t.Any) -> None:
    session = _http_session()
    if session is None:
        return
    bridge = app.extensions["session_bridge"]
    if bridge._states[app].options.regenerate_on_login:
        _renew(bridge, session)
    # After the renewal: the new id is the user's, the old one is gone.
    if user is not None:
        bridge.identify(user.get_id())


def _end_at_logout(app: Flask, **extra: t.Any) -> None:
    # Flask-Login pops its own keys; what is left (the owner, a cart) must
    # not outlive the login: the session ends, everywhere (reason "logout").
    session = _http_session()
    if session is not None:
        session.clear()


def _renew(bridge: t.Any, session: BridgeSession) -> None:
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
    bridge.regenerate()


def socket_login_required(handler: F) -> F:
    """Refuse a socket event unless Flask-Login's ``current_user`` is logged
    in. The event's acknowledgement is then ``{"error": "Unauthorized",
    "message": "login required"}``, and the socket stays connected::

        @socketio.on("post")
        @socket_login_required
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
