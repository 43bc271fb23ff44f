"""The HTTP side: a Flask session interface over the bridge's store."""

from __future__ import annotations

import logging
import typing as t
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from flask.sessions import SessionInterface
from itsdangerous import BadSignature

from . import tokens
from .exceptions import SessionLockTimeout
from .exceptions import StoreUnavailable
from .session import BridgeSession
from .sockets import current_socket_session

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from flask import Response

    from .state import AppState

logger = logging.getLogger("flask_session_bridge")

#: A client cookie older than this is issued again, so it keeps rolling.
_CLIENT_ROLL = timedelta(days=1)


class BridgeSessionInterface(SessionInterface):
    """Opens sessions named by a signed token cookie, loaded from the store
    on first touch, and issues the client cookie that names the browser.

    In a socket event it hands Flask the event's session instead: the socket
    side loads and writes that one back.

    :param get_state: Returns the bridge's state for an app.
    """

    def __init__(self, get_state: t.Callable[[Flask], AppState]) -> None:
        self.get_state = get_state

    def client_cookie_name(self, app: Flask) -> str:
        """``<session cookie name>.cid``."""
        return f"{self.get_cookie_name(app)}.cid"

    def open_session(self, app: Flask, request: Request) -> BridgeSession:
        socket_session = current_socket_session()
        if socket_session is not None:
            return socket_session
        state = self.get_state(app)
        return BridgeSession(lambda session: self._open(state, request, session))

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
        token = tokens.unsign(
            tokens.session_signer(app), request.cookies.get(self.get_cookie_name(app))
        )
        if token is None:
            session.attach(None, None, None)
            return
        session_id = tokens.public_id(token)
        state.load(session, session_id)
        if session.stored is None:
            state.release(session, touch=False)
            session.attach(None, None, None)
            return
        session.token = token
        if session.client_id != tokens.public_id(client_token):
            # The browser holds a newer client cookie than the session knows
            # (it expired and was issued again): bind the session to it.
            session.client_id = tokens.public_id(client_token)
            session.stored = ""
        state.validate(session)

    def _read_client(
        self, app: Flask, state: AppState, value: str | None
    ) -> tuple[str, datetime | None]:
        if value and len(value) <= tokens.MAX_COOKIE_VALUE:
            signer = tokens.client_signer(app)
            try:
                token, issued = signer.unsign(
                    value, max_age=state.client_lifetime, return_timestamp=True
                )
            except BadSignature:
                tokens.logger.warning("refused a client cookie with a bad or expired signature")
            else:
                return token.decode("ascii", "replace"), issued
        return tokens.new_token(), None

    def save_session(self, app: Flask, session: BridgeSession, response: Response) -> None:  # type: ignore[override]
        if session.is_socket or not session.loaded:
            return  # socket sessions are written back by the socket side
        response.vary.add("Cookie")
        state = self.get_state(app)
        if response.status_code >= 500:
            state.abandon(session)
            return
        try:
            issued = state.commit(session, link=True) and session.token_issued
        except (StoreUnavailable, SessionLockTimeout) as e:
            # The response was made, but its session changes were not saved:
            # say so rather than let the client believe they were.
            logger.error("session not saved: %s", e)
            response.status_code = 503
            response.headers["Retry-After"] = "1"
            response.set_data("Session temporarily unavailable; please retry.\n")
            response.mimetype = "text/plain"
            return
        finally:
            state.abandon(session)
        self._set_cookies(app, session, response, issued)

    def _set_cookies(
        self, app: Flask, session: BridgeSession, response: Response, issued: bool
    ) -> None:
        name = self.get_cookie_name(app)
        flags: dict[str, t.Any] = dict(
            domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app),
            httponly=self.get_cookie_httponly(app),
            samesite=self.get_cookie_samesite(app),
            partitioned=self.get_cookie_partitioned(app),
        )
        if session.ended is not None:
            response.delete_cookie(name, **flags)
        elif session.token is not None and (
            issued or (session.permanent and app.config["SESSION_REFRESH_EACH_REQUEST"])
        ):
            value = tokens.session_signer(app).sign(session.token).decode("ascii")
            response.set_cookie(
                name, value, expires=self.get_expiration_time(app, session), **flags
            )
        if session.client_roll:
            assert session.client_token is not None
            value = tokens.client_signer(app).sign(session.client_token).decode("ascii")
            state = self.get_state(app)
            response.set_cookie(
                self.client_cookie_name(app),
                value,
                max_age=int(state.client_lifetime),
                **flags,
            )


def issue_token(session: BridgeSession) -> None:
    """Give an HTTP session a new token and id: at the first write of a new
    session, and on renewal.
    """
    session.token = tokens.new_token()
    session.sid = tokens.public_id(session.token)
    session.token_issued = True
