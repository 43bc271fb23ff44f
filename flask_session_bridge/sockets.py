"""The Flask-SocketIO side: what happens to a socket event.

Every event, connect and disconnect included, goes through one wrapper around
Flask-SocketIO's dispatch (:func:`install`). For each event it builds a
session that stays unloaded until the handler touches it; then it finds the
session the socket's client holds now (following HTTP logins and renewals),
locks and loads it. When the handler returns, changes are written back and the
lock released; when it raises, nothing is written.
"""

from __future__ import annotations

import contextvars
import logging
import typing as t

from flask import request
from flask_socketio import ConnectionRefusedError

from . import tokens
from .exceptions import SessionBridgeError
from .exceptions import SessionMissing
from .exceptions import StoreUnavailable
from .login import remember_cookie_name
from .session import BridgeSession
from .state import room_name

if t.TYPE_CHECKING:
    from flask_socketio import SocketIO

    from .state import AppState

logger = logging.getLogger("flask_session_bridge")

_ENVIRON_KEY = "flask_session_bridge.sockets"

_current: contextvars.ContextVar[BridgeSession | None] = contextvars.ContextVar(
    "flask_session_bridge.socket_session", default=None
)


def current_socket_session() -> BridgeSession | None:
    """The session of the socket event running in this context, if any."""
    return _current.get()


class SocketState:
    """What the bridge knows of one socket: its client, the session it is in,
    and the client's mapping as last seen, so that a change made by HTTP
    (login, renewal, logout) is followed at the next event.
    """

    __slots__ = ("candidate", "client_id", "known", "resolved", "session_id")

    def __init__(self, resolved: bool) -> None:
        self.client_id: str | None = None
        #: The session id the socket is in, or ``None``.
        self.session_id: str | None = None
        #: The client mapping when last looked at.
        self.known: str | None = None
        #: Until connect resolves it: the id the session cookie named.
        self.candidate: str | None = None
        #: Whether the handshake cookies were resolved to a session.
        self.resolved = resolved


def install(socketio: SocketIO, get_state: t.Callable[[t.Any], AppState | None]) -> None:
    """Wrap ``socketio``'s event dispatch so every event gets the bridge's
    session, and make sure every namespace's connect goes through it.
    """
    # Flask-SocketIO has no public hook around its dispatch; every handler it
    # registers (decorated, class-based, catch-all) calls ``_handle_event``
    # on the instance, whenever it was registered, so this is the one place.
    dispatch = socketio._handle_event
    if getattr(dispatch, "session_bridge", False):
        return

    def handle_event(
        handler: t.Callable[..., t.Any], message: str, namespace: str, sid: str, *args: t.Any
    ) -> t.Any:
        server = socketio.server
        environ = server.get_environ(sid, namespace=namespace) if server else None
        state = get_state(environ["flask.app"]) if environ else None
        if state is None:
            return dispatch(handler, message, namespace, sid, *args)
        assert environ is not None
        # With manage_session, Flask-SocketIO would copy the session at
        # connect and never save it; the bridge manages it instead.
        socketio.manage_session = False
        sockets = environ.setdefault(_ENVIRON_KEY, {})
        if message == "connect":
            sockets[namespace] = SocketState(resolved=False)
        sock = sockets.setdefault(namespace, SocketState(resolved=True))
        session = BridgeSession(lambda s: _open(state, sock, sid, namespace, s))
        session.is_socket = True

        def run(*handler_args: t.Any) -> t.Any:
            if message == "connect":
                _check_connect(state, sock, session, handler_args[0] if handler_args else None)
            result = handler(*handler_args)
            state.commit(session, link=False)
            # Written back: keeps Flask-SocketIO from calling save_session.
            session.modified = False
            return result

        context = _current.set(session)
        try:
            return dispatch(run, message, namespace, sid, *args)
        except SessionBridgeError as e:
            if message == "connect":
                logger.warning("refused a socket: %s", e)
                raise ConnectionRefusedError(_refusal(e)) from e
            logger.warning("socket event %r failed: %s", message, e)
            return {"error": type(e).__name__, "message": str(e)}
        finally:
            _current.reset(context)
            state.abandon(session)

    handle_event.session_bridge = True  # type: ignore[attr-defined]
    socketio._handle_event = handle_event
    _ensure_connect_handler(socketio)


def _refusal(error: SessionBridgeError) -> str:
    if isinstance(error, StoreUnavailable):
        return "session store unavailable"
    if isinstance(error, SessionMissing):
        return "session required"
    return "session busy"


def _ensure_connect_handler(socketio: SocketIO) -> None:
    # python-socketio calls no handler at all for a namespace without a
    # connect handler, so the bridge registers a catch-all one; it passes the
    # connect on to a class-based namespace, which a function handler hides.
    registered = socketio.server.handlers if socketio.server else {}
    if "connect" in registered.get("*", {}) or any(
        h[0] == "connect" and h[2] == "*" for h in socketio.handlers
    ):
        return

    def connect(auth: t.Any = None) -> t.Any:
        server = socketio.server
        handlers = server.namespace_handlers
        handler = handlers.get(request.namespace) or handlers.get("*")  # type: ignore[attr-defined]
        on_connect = getattr(handler, "on_connect", None)
        if on_connect is None:
            return None
        try:
            return on_connect(auth)
        except TypeError:
            return on_connect()

    socketio.on("connect", namespace="*")(connect)


def _check_connect(
    state: AppState, sock: SocketState, session: BridgeSession, auth: t.Any
) -> None:
    """Resolve the handshake's cookies (or its session token) to a session,
    loading and validating it, and refuse the socket if it has none and one
    is required.
    """
    app = state.app
    if isinstance(auth, dict) and "session_token" in auth:
        ids = tokens.load_socket_token(app, auth["session_token"], state.socket_token_lifetime)
        if ids is None:
            raise ConnectionRefusedError("invalid session token")
        sock.client_id, sock.candidate = ids
    else:
        name = app.session_interface.get_cookie_name(app)
        client = tokens.unsign(
            tokens.client_signer(app), request.cookies.get(f"{name}.cid"), state.client_lifetime
        )
        token = tokens.unsign(tokens.session_signer(app), request.cookies.get(name))
        sock.client_id = tokens.public_id(client) if client else None
        sock.candidate = tokens.public_id(token) if token else None
    _forget_remember_cookie(app, request.environ)
    if session.sid is None and state.socket_missing == "reject":
        raise ConnectionRefusedError("session required")


def _forget_remember_cookie(app: t.Any, environ: dict[str, t.Any]) -> None:
    # The handshake's cookies last as long as the socket; Flask-Login would
    # log a socket back in from a remember cookie that HTTP has since
    # deleted. A socket's login comes from its session, which HTTP manages.
    name = remember_cookie_name(app)
    header = environ.get("HTTP_COOKIE", "")
    if name is None or name not in header:
        return
    kept = [c for c in header.split(";") if c.strip().partition("=")[0] != name]
    environ["HTTP_COOKIE"] = ";".join(kept)


def _open(
    state: AppState, sock: SocketState, sid: str, namespace: str, session: BridgeSession
) -> None:
    # First touch of the session in this event.
    connecting = not sock.resolved
    if connecting:
        sock.resolved = True
        _resolve_connect(state, sock, session, sid, namespace)
    elif sock.client_id is not None:
        # Stopgap until the core drops the client look-up (rule 6): the
        # store protocol no longer offers lock_client.
        current = state.store.get_session_id(sock.client_id)
        token, record = state.lock(current) if current is not None else (None, None)
        if current != sock.known:
            _follow(state, sock, sid, namespace, current)
        if current is not None and token is not None:
            if current == sock.session_id:
                state.fill(session, current, token, record)
                if session.stored is None:
                    state.release(session, touch=False)
                    _leave(state, sock, sid, namespace, expired=True)
            else:
                # The client's session, but this socket never had it (rule 6).
                state.store.release(current, token, None)
    if session.stored is None:
        session.attach(None, None, None)
        session.writable = False
        session.client_id = sock.client_id
        if not connecting and state.socket_missing == "reject":
            state.socketio.server.disconnect(sid, namespace=namespace)  # type: ignore[union-attr]
            raise SessionMissing("the session of this socket has ended")


def _resolve_connect(
    state: AppState, sock: SocketState, session: BridgeSession, sid: str, namespace: str
) -> None:
    candidate, sock.candidate = sock.candidate, None
    if sock.client_id is None:
        return
    if candidate is not None:
        state.load(session, candidate)
        if session.stored is not None and session.client_id == sock.client_id:
            sock.session_id = sock.known = candidate
            state.validate(session)
            if session.stored is not None:
                _join(state, sock.session_id, sid, namespace)
            return
        # Not this client's session (or gone): a cookie alone opens nothing.
        state.release(session, touch=False)
        session.attach(None, None, None)
    sock.known = state.store.get_session_id(sock.client_id)


def _follow(
    state: AppState, sock: SocketState, sid: str, namespace: str, current: str | None
) -> None:
    # HTTP gave this client another session since we last looked.
    sock.known = current
    if sock.session_id != current:
        _leave(state, sock, sid, namespace, expired=current is None)
        sock.session_id = current
        if current is not None:
            _join(state, current, sid, namespace)


def _join(state: AppState, session_id: str, sid: str, namespace: str) -> None:
    assert state.socketio is not None
    state.socketio.server.enter_room(sid, room_name(session_id), namespace=namespace)


def _leave(state: AppState, sock: SocketState, sid: str, namespace: str, expired: bool) -> None:
    """Take the socket out of its session. If nobody emptied the session's
    room, nobody told the socket either: the session expired, so say so.
    """
    if sock.session_id is None:
        return
    server = state.socketio.server  # type: ignore[union-attr]
    room = room_name(sock.session_id)
    sock.session_id = None
    if room in server.rooms(sid, namespace=namespace):
        server.leave_room(sid, room, namespace=namespace)
        if expired:
            server.emit("session_ended", {"reason": "expired"}, to=sid, namespace=namespace)
