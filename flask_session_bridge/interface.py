"""The HTTP side: a Flask session interface over the bridge's store."""

from __future__ import annotations

import typing as t
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask.sessions import SessionInterface
from itsdangerous import BadSignature
from werkzeug.http import dump_cookie

from . import internals
from . import tokens
from .exceptions import SessionLockTimeout
from .exceptions import StoreUnavailable
from .logging import logger
from .session import BridgeSession
from .sockets import current_socket_session

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from flask import Response

    from .state import AppState

#: Key in the request's WSGI environ holding the HTTP session.
ENVIRON_KEY = "flask_session_bridge.session"

#: A client cookie older than this is issued again, so it keeps rolling.
_CLIENT_ROLL = timedelta(days=1)


class BridgeSessionInterface(SessionInterface):
    """Opens sessions named by a signed token cookie, loaded from the store
    on first touch, and issues the client cookie that names the browser.

    In a socket event it hands Flask the event's session instead: the socket
    side loads and writes that one back.

    :param get_state: Returns the bridge's state for an app, ``None`` for
        an app the bridge is not registered on.
    """

    def __init__(self, get_state: t.Callable[[t.Any], AppState | None]) -> None:
        self.get_state = get_state

    def state(self, app: Flask) -> AppState:
        """The bridge's state for ``app``."""
        state = self.get_state(app)
        assert state is not None, "the session bridge is not registered on this app"
        return state

    def client_cookie_name(self, app: Flask) -> str:
        """``<session cookie name>.cid``."""
        return f"{self.get_cookie_name(app)}.cid"

    def open_session(self, app: Flask, request: Request) -> BridgeSession:
        socket_session = current_socket_session()
        if socket_session is not None:
            return socket_session
        state = self.state(app)
        if state.socketio is None and wire_late(state, request, self.get_state):
            # This is a socket event dispatched before the bridge wrapped
            # Flask-SocketIO: give it no session rather than a lock that
            # nothing would release.
            session = BridgeSession(lambda s: None)
            session.is_socket = True
            session.writable = False
            return session
        session = BridgeSession(lambda session: self._open(state, request, session))
        # Kept where the bridge finds it without the ``flask.session`` proxy,
        # which marks the session accessed.
        request.environ[ENVIRON_KEY] = session
        return session

    def _open(self, state: AppState, request: Request, session: BridgeSession) -> None:
        # First touch of the session in this request: read the cookies, then
        # lock and load the session the session cookie names.
        app = state.app
        client_value = request.cookies.get(self.client_cookie_name(app))
        client_token, issued = self._read_client(app, state, client_value)
        session.client_id = tokens.public_id(client_token)
        session.client_token = client_token
        session.client_roll = issued is None or (
            datetime.now(timezone.utc) - issued > _CLIENT_ROLL
        )
        session.allocate = issue_token
        token, session.resign = tokens.unsign(
            tokens.session_signer(app), request.cookies.get(self.get_cookie_name(app)),
            "session",
        )
        if token is None:
            session.attach(None, None, None)
            return
        # The session keeps the client it was created for: a request with
        # another client cookie (or none) never re-binds it (rule 6).
        state.load(session, tokens.public_id(token))
        if session.stored is None:
            state.release(session, touch=False)
            session.attach(None, None, None)
            session.resign = False
            return
        session.token = token
        state.validate(session)

    def _read_client(
        self, app: Flask, state: AppState, value: str | None
    ) -> tuple[str, datetime | None]:
        if value and len(value) <= tokens.MAX_COOKIE_VALUE:
            signer = tokens.client_signer(app)
            try:
                token, issued = signer.unsign(
                    value, max_age=int(state.options.client_lifetime), return_timestamp=True
                )
            except BadSignature:
                logger.warning("refused a client cookie with a bad or expired signature")
            else:
                # Signed with a fallback key: roll it now (rule 10).
                fallback = tokens.signed_with_fallback(signer, value)
                return token.decode("ascii", "replace"), None if fallback else issued
        return tokens.new_token(), None

    def save_session(self, app: Flask, session: BridgeSession, response: Response) -> None:  # type: ignore[override]
        if session.is_socket or not session.loaded:
            return  # socket sessions are written back by the socket side
        response.vary.add("Cookie")
        state = self.state(app)
        if response.status_code >= 500:
            state.abandon(session)
            return
        flags = self._cookie_flags(app)
        try:
            # A cookie that cannot be set (a bad SameSite value) fails here,
            # before the store is written: nothing is saved that the
            # browser could not name.
            dump_cookie(self.get_cookie_name(app), "", **flags)
            saved = state.commit(session, link=True)
        except (StoreUnavailable, SessionLockTimeout) as e:
            # The response was made, but its session changes were not saved
            # (or may not have been): say so rather than let the client
            # believe they were.
            unknown = getattr(e, "outcome_unknown", False)
            logger.error("session %s: %s", "outcome unknown" if unknown else "not saved", e)
            response.status_code = 503
            response.headers["Retry-After"] = "1"
            response.set_data(
                "Session store unavailable: whether this request's session changes"
                " were saved is unknown; reload before retrying.\n"
                if unknown
                else "Session temporarily unavailable; nothing was saved; please retry.\n"
            )
            response.mimetype = "text/plain"
            return
        finally:
            state.abandon(session)
        self._set_cookies(app, session, response, saved, flags)

    def _cookie_flags(self, app: Flask) -> dict[str, t.Any]:
        return dict(
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            httponly=self.get_cookie_httponly(app),
            samesite=self.get_cookie_samesite(app),
            partitioned=self.get_cookie_partitioned(app),
        )

    def _set_cookies(
        self,
        app: Flask,
        session: BridgeSession,
        response: Response,
        saved: bool,
        flags: dict[str, t.Any],
    ) -> None:
        name = self.get_cookie_name(app)
        if saved and session.token_issued:
            self._set_session_cookie(app, session, response, flags)
        elif session.ended is not None:
            response.delete_cookie(name, **flags)
        elif session.token is not None and (
            session.resign
            # Flask parity: a change of ``permanent`` adds or drops the
            # cookie's expiry at once ("don't remember me").
            or session.permanent != session.loaded_permanent
            # As Flask: a permanent cookie's expiry moves on at each change,
            # or at each request if SESSION_REFRESH_EACH_REQUEST.
            or (session.permanent and (saved or app.config["SESSION_REFRESH_EACH_REQUEST"]))
        ):
            self._set_session_cookie(app, session, response, flags)
        if session.client_roll:
            assert session.client_token is not None
            value = tokens.client_signer(app).sign(session.client_token).decode("ascii")
            state = self.state(app)
            response.set_cookie(
                self.client_cookie_name(app),
                value,
                max_age=int(state.options.client_lifetime),
                **flags,
            )

    def _set_session_cookie(
        self, app: Flask, session: BridgeSession, response: Response, flags: dict[str, t.Any]
    ) -> None:
        assert session.token is not None
        value = tokens.session_signer(app).sign(session.token).decode("ascii")
        response.set_cookie(
            self.get_cookie_name(app),
            value,
            expires=self.get_expiration_time(app, session),
            **flags,
        )


def issue_token(session: BridgeSession) -> None:
    """Give an HTTP session a new token and id: at the first write of a new
    session, and on renewal.
    """
    session.token = tokens.new_token()
    session.sid = tokens.public_id(session.token)
    session.token_issued = True


def http_session(request: Request) -> BridgeSession | None:
    """The HTTP session of ``request``, if the bridge opened one."""
    session = request.environ.get(ENVIRON_KEY)
    return session if isinstance(session, BridgeSession) else None


def wire_late(
    state: AppState, request: Request, get_state: t.Callable[[t.Any], AppState | None]
) -> bool:
    """Wire the bridge into a SocketIO registered on the app after it (no
    ``socketio`` argument to ``init_app``); the first request or socket
    event does it. Returns whether the running request is a socket event.
    """
    socketio = state.app.extensions.get("socketio")
    if socketio is None:
        return False
    from .sockets import install

    state.socketio = socketio
    install(socketio, get_state)
    # The event running now was dispatched before the wrapper existed.
    internals.stop_managing_sessions(socketio)
    return internals.is_socket_environ(socketio, request.environ)
