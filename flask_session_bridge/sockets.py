"""The Flask-SocketIO side: the life of one socket event.

Every event, connect and disconnect included, goes through one wrapper around
Flask-SocketIO's dispatch (:func:`install`), and reads top to bottom:

1. At connect, once, the socket is bound to the session its handshake
   presented: the session cookie, if that session belongs to the handshake's
   client cookie, or a single-use socket token. It stays bound to that
   session id for its life (rule 6); nothing later moves it into another.
2. At the first touch of ``session`` in an event, the bound session is locked
   and loaded fresh. If it is gone, the socket is anonymous from then on.
3. The handler runs.
4. Its changes are written back and the lock released; if it raised,
   nothing is written.
"""

from __future__ import annotations

import contextlib
import contextvars
import typing as t

from flask import request
from flask_socketio import ConnectionRefusedError as SocketRefused
from werkzeug.sansio.http import parse_cookie

from . import internals
from . import tokens
from . import users
from .exceptions import SessionBridgeError
from .exceptions import SessionMissing
from .exceptions import StoreUnavailable
from .logging import logger
from .login import remember_cookie_name
from .session import BridgeSession
from .state import room_name

if t.TYPE_CHECKING:
    from flask import Flask
    from flask_socketio import SocketIO

    from .state import AppState

#: Key in the socket's WSGI environ: ``{namespace: SocketState}``.
_ENVIRON_KEY = "flask_session_bridge.sockets"

#: Session key holding the nonces of the socket tokens not used yet.
TOKEN_KEY = "_bridge_socket_tokens"

_current: contextvars.ContextVar[BridgeSession | None] = contextvars.ContextVar(
    "flask_session_bridge.socket_session", default=None
)


def current_socket_session() -> BridgeSession | None:
    """The session of the socket event running in this context, if any."""
    return _current.get()


class SocketState:
    """One socket in one namespace, made once at connect."""

    __slots__ = ("client_id", "connecting", "nonce", "session_id")

    def __init__(self) -> None:
        #: The client id the handshake presented (cookie or token).
        self.client_id: str | None = None
        #: The session the socket is bound to; ``None`` once it is gone.
        self.session_id: str | None = None
        #: The socket token's nonce, used up at connect.
        self.nonce: str | None = None
        #: Until the session is first loaded: the binding is not checked yet.
        self.connecting = True


class _Event:
    """One socket event in flight: opens the socket's session at its first
    touch, runs the handler and writes back. One small object with two
    methods, rather than two closures over seven cells, because every object
    an event allocates is work for the cyclic GC (45% of a loaded server's
    CPU). It does not hold the session, which holds it: no cycle to collect.
    """

    __slots__ = ("handler", "message", "namespace", "sid", "sock", "state")

    def __init__(
        self,
        state: AppState,
        sock: SocketState,
        sid: str,
        namespace: str,
        handler: t.Callable[..., t.Any],
        message: str,
    ) -> None:
        self.state = state
        self.sock = sock
        self.sid = sid
        self.namespace = namespace
        self.handler = handler
        self.message = message

    def open(self, session: BridgeSession) -> None:
        """Lock and load the socket's session: the session's opener."""
        _open(self.state, self.sock, self.sid, self.namespace, session)

    def run(self, *handler_args: t.Any) -> t.Any:
        """Run the handler inside Flask-SocketIO's dispatch, then write back."""
        # Dispatch calls this at once, in the context handle_event set.
        session = t.cast(BridgeSession, _current.get())
        state = self.state
        if self.message != "connect":
            result = self.handler(*handler_args)
            state.commit(session, link=False)
        else:
            try:
                # Flask-SocketIO calls this twice when a connect handler
                # takes no argument (TypeError, then a retry without
                # auth): bind once, with what the handshake presented.
                if not session.loaded:
                    _bind(state, self.sock, session)
                result = self.handler(*handler_args)
                state.commit(session, link=False)
            except SessionBridgeError as e:
                # ConnectionRefusedError is the one exception that
                # Flask-SocketIO lets through an on_error handler.
                logger.warning("refused a socket: %s", e)
                raise SocketRefused(_refusal(e)) from e
        # Written back: keeps Flask-SocketIO from calling save_session.
        session.modified = False
        return result


def install(socketio: SocketIO, get_state: t.Callable[[t.Any], AppState | None]) -> None:
    """Wrap ``socketio``'s event dispatch so every event gets the bridge's
    session, and make sure every namespace's connect goes through it.
    """
    internals.wrap_dispatch(socketio, lambda dispatch: _dispatcher(socketio, get_state, dispatch))
    internals.on_background_task_error(socketio, _explain_task_error)
    _ensure_connect_handler(socketio)


def _explain_task_error(error: BaseException) -> None:
    # A background task has no request and no socket event, so Flask's
    # ``session`` is not there; Flask's own message does not say what to do.
    if isinstance(error, RuntimeError) and "outside of request context" in str(error):
        logger.error(
            "a background task used flask.session, which exists only in a request or"
            " a socket event: open the session by id with"
            " `with bridge.session_scope(session_id) as session:` (keep the id from"
            " session.sid in the request or event that started the task)"
        )


def _dispatcher(
    socketio: SocketIO,
    get_state: t.Callable[[t.Any], AppState | None],
    dispatch: internals.Dispatch,
) -> internals.Dispatch:
    """Flask-SocketIO's ``dispatch``, with the bridge's session around each
    event.
    """

    def handle_event(
        handler: t.Callable[..., t.Any], message: str, namespace: str, sid: str, *args: t.Any
    ) -> t.Any:
        server = socketio.server
        environ = server.get_environ(sid, namespace=namespace) if server else None
        state = get_state(environ["flask.app"]) if environ else None
        if state is None:
            return dispatch(handler, message, namespace, sid, *args)
        assert environ is not None
        internals.stop_managing_sessions(socketio)
        sockets = environ.get(_ENVIRON_KEY)
        if sockets is None:
            sockets = environ[_ENVIRON_KEY] = {}
        if message == "connect":
            _hide_remember_cookie(state.app, environ)
            sock = sockets[namespace] = _present(state, environ, args)
        else:
            sock = sockets.get(namespace)
            if sock is None:
                # Connected before the bridge was wired in (see init_app):
                # checked at its first touch of the session instead.
                sock = sockets[namespace] = _present(state, environ, ())
        event = _Event(state, sock, sid, namespace, handler, message)
        session = BridgeSession(event.open)
        session.is_socket = True
        context = _current.set(session)
        try:
            return dispatch(event.run, message, namespace, sid, *args)
        except SessionBridgeError as e:
            logger.warning("socket event %r failed: %s", message, e)
            answer = {"error": type(e).__name__, "message": str(e)}
            if getattr(e, "outcome_unknown", False):
                answer["outcome"] = "unknown"  # the write may have been applied
            return answer
        finally:
            _current.reset(context)
            if session.loaded:
                sock.connecting = False
            state.abandon(session)

    return handle_event


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
    if internals.has_catch_all_connect(socketio):
        return

    def connect(auth: t.Any = None) -> t.Any:
        handler = internals.namespace_handler(socketio, request.namespace)  # type: ignore[attr-defined]
        on_connect = getattr(handler, "on_connect", None)
        if on_connect is None:
            return None
        try:
            return on_connect(auth)
        except TypeError:
            return on_connect()

    socketio.on("connect", namespace="*")(connect)


# -- 1. at connect: what the handshake presented ---------------------------


def _present(state: AppState, environ: dict[str, t.Any], args: tuple[t.Any, ...]) -> SocketState:
    """Read the handshake's socket token, else its cookies. Nothing is
    trusted yet: :func:`_bind` checks it against the store.
    """
    sock = SocketState()
    app = state.app
    # Flask-SocketIO passes (sid, environ, auth) to a connect handler.
    auth = args[1] if len(args) > 1 else None
    if isinstance(auth, dict) and "session_token" in auth:
        lifetime = int(state.options.socket_token_lifetime)
        ids = tokens.load_socket_token(app, auth["session_token"], lifetime)
        if ids is None:
            raise SocketRefused("invalid session token")
        sock.client_id, sock.session_id, sock.nonce = ids
        return sock
    header = environ.get("HTTP_COOKIE", "")
    # WSGI passes the header's bytes as latin-1 text; some test clients
    # pass text as is, which is left so.
    with contextlib.suppress(UnicodeEncodeError):
        header = header.encode("latin-1").decode("utf-8", "replace")
    cookies = parse_cookie(header)
    name = app.session_interface.get_cookie_name(app)
    client, _ = tokens.unsign(
        tokens.client_signer(app), cookies.get(f"{name}.cid"), "client",
        int(state.options.client_lifetime),
    )
    token, _ = tokens.unsign(tokens.session_signer(app), cookies.get(name), "session")
    if client is not None:
        sock.client_id = tokens.public_id(client)
        # A session cookie counts only with the client cookie it was issued
        # with; :func:`_bind` compares them.
        sock.session_id = tokens.public_id(token) if token else None
    return sock


def _hide_remember_cookie(app: Flask, environ: dict[str, t.Any]) -> None:
    # The handshake's cookies last as long as the socket; Flask-Login would
    # log a socket back in from a remember cookie that HTTP has since
    # deleted, and would write to a socket's session. A socket's login comes
    # from its session. Done before any request object reads the cookies.
    name = remember_cookie_name(app)
    header = environ.get("HTTP_COOKIE", "")
    if name is None or name not in header:
        return
    kept = [c for c in header.split(";") if c.strip().partition("=")[0] != name]
    environ["HTTP_COOKIE"] = ";".join(kept)


def _bind(state: AppState, sock: SocketState, session: BridgeSession) -> None:
    """Load the presented session and keep it only if the handshake may have
    it; refuse the socket if it has none and one is required.
    """
    # The first touch: _open locks, loads and checks the binding.
    if session.new and state.options.socket_missing == "reject":
        raise SessionMissing("session required")


# -- 2. at the first touch in an event: lock and load ----------------------


def _open(
    state: AppState, sock: SocketState, sid: str, namespace: str, session: BridgeSession
) -> None:
    session_id = sock.session_id
    if session_id is not None:
        state.load(session, session_id)
        if session.stored is not None and sock.connecting:
            _admit(state, sock, session, sid, namespace)
        if session.stored is not None:
            return
        # Gone: ended, expired, or never this socket's.
        state.release(session, touch=False)
        sock.session_id = None
        if not sock.connecting:
            _leave(state, session_id, sid, namespace)
    if sock.connecting and sock.nonce is not None:
        raise SocketRefused("invalid session token")
    session.attach(None, None, None)
    session.writable = False
    session.client_id = sock.client_id
    if not sock.connecting and state.options.socket_missing == "reject":
        # The session ended while the socket was connected.
        state.socketio.server.disconnect(sid, namespace=namespace)  # type: ignore[union-attr]
        raise SessionMissing("the session of this socket has ended")


def _admit(
    state: AppState, sock: SocketState, session: BridgeSession, sid: str, namespace: str
) -> None:
    """At connect: keep the loaded session only if the handshake presented
    it, and the validators accept it; then the socket joins its room.
    """
    if not _presented(sock, session):
        state.release(session, touch=False)
        session.attach(None, None, None)
        return
    state.validate(session)
    if session.stored is not None:
        _join(state, t.cast(str, sock.session_id), sid, namespace)
        user_id = users.owner_of(session)
        if user_id is not None:
            users.join(state.socketio.server, user_id, sid, namespace)  # type: ignore[union-attr]


def _presented(sock: SocketState, session: BridgeSession) -> bool:
    """Whether the handshake presented the loaded session: the cookie's
    session belongs to the handshake's client, or the token is unused (it is
    used up here; the connect's write-back records that).
    """
    if session.client_id != sock.client_id:
        return False
    if sock.nonce is None:
        return True
    unused = session.get(TOKEN_KEY) or []
    if sock.nonce not in unused:
        return False
    # Kept even when empty: an emptied session would end at write-back.
    session[TOKEN_KEY] = [n for n in unused if n != sock.nonce]
    return True


def _join(state: AppState, session_id: str, sid: str, namespace: str) -> None:
    assert state.socketio is not None
    state.socketio.server.enter_room(sid, room_name(session_id), namespace=namespace)


def _leave(state: AppState, session_id: str, sid: str, namespace: str) -> None:
    """Take the socket out of its ended session's room. If nobody emptied
    the room, nobody told the socket either: the session expired, so say so.
    """
    server = state.socketio.server  # type: ignore[union-attr]
    room = room_name(session_id)
    if room in server.rooms(sid, namespace=namespace):
        server.leave_room(sid, room, namespace=namespace)
        users.leave(server.manager, sid, namespace)
        server.emit("session_ended", {"reason": "expired"}, to=sid, namespace=namespace)
