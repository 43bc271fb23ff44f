"""The extension: :class:`SessionBridge` and its public methods."""

from __future__ import annotations

import contextlib
import typing as t
from datetime import timedelta
from weakref import WeakKeyDictionary

from flask import current_app
from flask import has_request_context
from flask import request

from . import config
from . import login
from . import signals
from . import sockets
from . import tokens
from . import users
from .cli import cleanup_command
from .exceptions import SessionLockTimeout
from .exceptions import SessionMissing
from .exceptions import StoreUnavailable
from .interface import BridgeSessionInterface
from .interface import http_session
from .interface import issue_token
from .logging import logger
from .session import BridgeSession
from .session import deserialize
from .session import serialize
from .sockets import current_socket_session
from .sockets import TOKEN_KEY
from .state import AppState
from .state import room_name
from .state import Validator
from .stores import store_from_url
from .stores.base import Record
from .tokens import is_public_id
from .users import SessionInfo

if t.TYPE_CHECKING:
    from flask import Flask
    from flask_socketio import SocketIO

    from .stores.base import Store

class SessionBridge:
    """One server-side session for Flask views and Flask-SocketIO handlers.

    Every option is also a config key ``SESSION_BRIDGE_<OPTION>``; a keyword
    argument wins over config.

    :param app: The app, or call :meth:`init_app` later.
    :param socketio: The :class:`~flask_socketio.SocketIO` whose handlers get
        the session; defaults to the app's ``extensions["socketio"]``.
    :param store: A store object, or a URL (``memory://``, ``sqlite:///path``,
        ``redis://host:port/db``). Default ``SESSION_BRIDGE_STORE``, then
        ``memory://``.
    :param socket_missing: ``"allow"`` (default) lets a socket without a
        session in, with an empty session whose writes raise
        :exc:`SessionMissing`; ``"reject"`` refuses it.
    :param lock_timeout: Seconds to wait for a session's lock before
        :exc:`SessionLockTimeout`. Default 10.
    :param lock_expire: Seconds a lock lasts unless renewed: work still
        running renews it, so only a crashed holder's lock frees itself, this
        long after. Default 5.
    :param client_lifetime: Lifetime of the client cookie, as seconds or a
        :class:`~datetime.timedelta`. Default one year.
    :param cleanup_interval: Seconds between runs of
        :meth:`start_auto_cleanup`. Default 300.
    :param socket_token_lifetime: Seconds a :meth:`socket_token` is good
        for. Default 60.
    :param regenerate_on_login: With Flask-Login, give the session a new id
        at every ``login_user`` (and start clean when another user logs in).
        Default ``True``.
    :param max_sessions_per_user: Most sessions one user may have at once:
        a login (or :meth:`identify`) that makes one more ends the least
        recently active one, reason ``"superseded"``. Default ``None``, no
        limit.
    """

    def __init__(
        self,
        app: Flask | None = None,
        socketio: SocketIO | None = None,
        *,
        store: Store | str | None = None,
        socket_missing: t.Literal["allow", "reject"] | None = None,
        lock_timeout: float | None = None,
        lock_expire: float | None = None,
        client_lifetime: float | timedelta | None = None,
        cleanup_interval: float | None = None,
        socket_token_lifetime: float | timedelta | None = None,
        regenerate_on_login: bool | None = None,
        max_sessions_per_user: int | None = None,
    ) -> None:
        self._options: dict[str, t.Any] = dict(
            store=store,
            socket_missing=socket_missing,
            lock_timeout=lock_timeout,
            lock_expire=lock_expire,
            client_lifetime=client_lifetime,
            cleanup_interval=cleanup_interval,
            socket_token_lifetime=socket_token_lifetime,
            regenerate_on_login=regenerate_on_login,
            max_sessions_per_user=max_sessions_per_user,
        )
        self._validators: list[Validator] = []
        self._states: WeakKeyDictionary[Flask, AppState] = WeakKeyDictionary()
        if app is not None:
            self.init_app(app, socketio)

    def init_app(
        self,
        app: Flask,
        socketio: SocketIO | None = None,
        *,
        store: Store | str | None = None,
        socket_missing: t.Literal["allow", "reject"] | None = None,
        lock_timeout: float | None = None,
        lock_expire: float | None = None,
        client_lifetime: float | timedelta | None = None,
        cleanup_interval: float | None = None,
        socket_token_lifetime: float | timedelta | None = None,
        regenerate_on_login: bool | None = None,
        max_sessions_per_user: int | None = None,
    ) -> None:
        """Register the bridge on ``app``: install the session interface, wrap
        the socket dispatch, add ``flask bridge-cleanup``. Options given here
        win over those given to the constructor, which win over config.

        :raise RuntimeError: already registered, no ``SECRET_KEY``, a bad
            store URL, or an unknown ``SESSION_BRIDGE_*`` config key.
        :raise ValueError: an option of the wrong kind; the message names it.
        """
        if "session_bridge" in app.extensions:
            raise RuntimeError(
                "A SessionBridge is already registered on this app. Call"
                " init_app once per app."
            )
        if not app.secret_key:
            raise RuntimeError(
                "The session bridge signs cookies with the app's SECRET_KEY."
                " Set app.config['SECRET_KEY'] before calling init_app."
            )
        config.set_defaults(app)
        options = config.resolve(
            app,
            dict(
                store=store,
                socket_missing=socket_missing,
                lock_timeout=lock_timeout,
                lock_expire=lock_expire,
                client_lifetime=client_lifetime,
                cleanup_interval=cleanup_interval,
                socket_token_lifetime=socket_token_lifetime,
                regenerate_on_login=regenerate_on_login,
                max_sessions_per_user=max_sessions_per_user,
            ),
            self._options,
        )
        chosen = options.store
        if isinstance(chosen, str):
            try:
                chosen = store_from_url(chosen, app.instance_path)
            except ValueError as e:
                raise RuntimeError(f"SESSION_BRIDGE_STORE: {e}") from None
        socketio = socketio or app.extensions.get("socketio")
        state = AppState(app, chosen, socketio, options)
        state.validators = self._validators
        self._states[app] = state
        app.extensions["session_bridge"] = self
        app.session_interface = BridgeSessionInterface(self._states.get)
        if socketio is not None:
            sockets.install(socketio, self._states.get)
        app.cli.add_command(cleanup_command)
        login.connect(app)
        app.register_error_handler(StoreUnavailable, _unavailable)
        app.register_error_handler(SessionLockTimeout, _unavailable)
        app.before_request(_check_session_interface)
        # A socketio registered on the app later is wired in at the first
        # request or event (see interface.wire_late).
        app.teardown_request(_release_request_locks)
        config.log_start(app, chosen, socketio)

    # -- state -----------------------------------------------------------

    def _state(self) -> AppState:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return self._states[app]
        except KeyError:
            raise RuntimeError(
                "The session bridge is not registered on the current app."
                " Call bridge.init_app(app) first."
            ) from None

    # -- the mapping between clients and sessions -------------------------

    def get_session_id(self, client_id: str) -> str | None:
        """The session the client (browser) was last given, or ``None``."""
        state = self._state()
        return state.store.get_session_id(client_id) if is_public_id(client_id) else None

    def get_client_id(self, session_id: str) -> str | None:
        """The client (browser) a session belongs to, or ``None``."""
        record = self._get(session_id)
        return record.client_id if record is not None else None

    def _get(self, session_id: str) -> Record | None:
        # Ids that no session can have never reach the store.
        state = self._state()
        return state.store.get(session_id) if is_public_id(session_id) else None

    # -- data ------------------------------------------------------------

    def get_by_id(self, session_id: str) -> dict[str, t.Any] | None:
        """A copy of a session's data, or ``None`` if there is no such session.
        For the session the current request or event holds, its data now.
        """
        held = _held(session_id)
        if held is not None:
            return held.copy()
        record = self._get(session_id)
        if record is None:
            return None
        try:
            return deserialize(record.data)
        except ValueError:
            return None  # corrupt: ended as "invalid" when next loaded

    def get_by_client_id(self, client_id: str) -> dict[str, t.Any] | None:
        """A copy of the data of the client's current session, or ``None``."""
        session_id = self.get_session_id(client_id)
        return self.get_by_id(session_id) if session_id is not None else None

    def set_by_id(
        self, session_id: str, data: t.Mapping[str, t.Any], max_age: float | None = None
    ) -> bool:
        """Replace the data of an existing session; never creates one. On the
        session the current request or event holds, the data are replaced in
        place and saved at its write-back (rule 5).

        :param max_age: Seconds until it expires; default the app's
            ``PERMANENT_SESSION_LIFETIME``.
        :return: ``False`` if there is no such session.
        :raise SessionValueError: ``data`` cannot be serialized.
        """
        state = self._state()
        payload = serialize(dict(data))
        held = _held(session_id)
        if held is not None:
            owner = users.owner_of(held)
            replaced = deserialize(payload)
            if owner is not None:
                replaced.setdefault(users.OWNER_KEY, owner)
            held.replace(replaced, max_age)
            return True
        if not is_public_id(session_id):
            return False
        token, record = state.lock(session_id)
        if record is None:
            state.unlock(session_id, token, None)
            return False
        if record.user_id is not None and users.OWNER_KEY not in data:
            # The session stays its user's: replacing data is not a logout.
            payload = serialize({**data, users.OWNER_KEY: record.user_id})
        age = state.max_age if max_age is None else max_age
        state.save(
            session_id, Record(record.client_id, payload, user_id=record.user_id), age, token, False
        )
        signals.session_saved.send(
            state.app, session_id=session_id, client_id=record.client_id, is_new=False
        )
        return True

    def set_by_client_id(
        self, client_id: str, data: t.Mapping[str, t.Any], max_age: float | None = None
    ) -> bool:
        """Replace the data of the client's current session; see :meth:`set_by_id`."""
        session_id = self.get_session_id(client_id)
        return session_id is not None and self.set_by_id(session_id, data, max_age)

    def destroy_by_id(self, session_id: str) -> bool:
        """End a session everywhere (reason ``"destroyed"``): its sockets get
        ``session_ended``. The session the current request or event holds
        ends at once, without waiting for its own lock (rule 5).

        :return: ``False`` if there is no such session.
        """
        return self._end(self._state(), session_id, "destroyed")

    def _end(self, state: AppState, session_id: str, reason: str) -> bool:
        held = _held(session_id)
        if held is not None:
            state.end(held, reason)
            return True
        if not is_public_id(session_id):
            return False
        token, record = state.lock(session_id)
        if record is None:
            state.unlock(session_id, token, None)
            return False
        state.delete(session_id, token)
        state.notify_ended(session_id, record.client_id, reason)
        return True

    def destroy_by_client_id(self, client_id: str) -> bool:
        """End the client's current session; see :meth:`destroy_by_id`."""
        session_id = self.get_session_id(client_id)
        return session_id is not None and self.destroy_by_id(session_id)

    @contextlib.contextmanager
    def session_scope(self, session_id: str) -> t.Iterator[BridgeSession]:
        """Lock and load a session for a background task, and write it back
        when the block ends without an exception::

            with bridge.session_scope(session_id) as session:
                session["progress"] = 100

        Inside a request or event that holds that session already, it is
        that session, written back with the request or event.

        :raise SessionMissing: there is no such session.
        """
        state = self._state()
        held = _held(session_id)
        if held is not None:
            yield held
            return
        if not is_public_id(session_id):
            raise SessionMissing("no such session", session_id)
        session = BridgeSession(lambda s: None)
        state.load(session, session_id)
        try:
            if session.stored is None:
                raise SessionMissing("no such session", session_id)
            yield session
            state.commit(session, link=False)
        finally:
            state.abandon(session)

    def regenerate(self) -> None:
        """Give the current request's session a new id and cookie, keeping its
        data; the old id is removed from the store. Call it at login, against
        session fixation (with Flask-Login, ``login_user`` does). The old
        id's sockets get ``session_ended`` with reason ``"renewed"``: they
        reconnect to present the new cookie (rule 6).

        :raise RuntimeError: outside an HTTP request.
        """
        session = _http_session("regenerate()")
        if not session.new:
            session.replaces = (t.cast(str, session.sid), session.lock_token)
            session.stored = None
            session.lock_token = None
            session.cleared = False  # what stays moves to the new id
        issue_token(session)

    def socket_token(self) -> str:
        """In a view: a short-lived, single-use signed token for a Socket.IO
        client that cannot send this site's cookies (another origin, a
        native app). The client passes it as ``auth={"session_token":
        token}`` and enters the current session, as if it had sent the
        cookies. The token names the session, so it dies when the session
        ends or is renewed; its nonce is kept in the session (under
        ``"_bridge_socket_tokens"``) until a socket uses it. A visitor
        without a session gets one. Lifetime:
        ``SESSION_BRIDGE_SOCKET_TOKEN_LIFETIME``.

        :raise RuntimeError: outside an HTTP request.
        """
        session = _http_session("socket_token()")
        nonce = tokens.new_nonce()
        # The few newest stay usable; older ones would expire soon anyway.
        session[TOKEN_KEY] = [*(session.get(TOKEN_KEY) or [])[-7:], nonce]
        assert session.client_id is not None and session.sid is not None
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        return tokens.dump_socket_token(app, session.client_id, session.sid, nonce)

    # -- sessions of a user -------------------------------------------------

    def identify(self, user_id: object) -> None:
        """In a request: the current session belongs to ``user_id`` (its
        ``str``) from now on. Flask-Login's ``login_user`` does this. Call it
        after :meth:`regenerate` at a login. Sockets join the user's room
        (:meth:`user_room`) at their next connect. With
        ``max_sessions_per_user``, the user's least recently active sessions
        beyond the limit end (reason ``"superseded"``).

        :raise RuntimeError: outside an HTTP request.
        :raise ValueError: the id is empty or holds a control character.
        """
        session = _http_session("identify()")
        owner = users.owner_id(user_id)
        session[users.OWNER_KEY] = owner
        state = self._state()
        limit = state.options.max_sessions_per_user
        if limit is None:
            return
        mine = {session.sid, session.replaces[0] if session.replaces else None}
        others = [(sid, r) for sid, r in state.store.sessions_of(owner) if sid not in mine]
        others.sort(key=lambda item: item[1].last_active or item[1].created)
        for session_id, _ in others[: max(0, len(others) - (limit - 1))]:
            self._end(state, session_id, "superseded")

    def sessions_of(self, user_id: object) -> list[SessionInfo]:
        """The live sessions of a user, most recently active first. The cost
        is a look-up of that user's sessions, whatever the store holds.
        """
        state = self._state()
        current = None
        session = current_socket_session()
        if session is None and has_request_context():
            session = http_session(request)
        if session is not None:
            current = session.sid
        found = [
            SessionInfo.from_record(session_id, record, current)
            for session_id, record in state.store.sessions_of(users.owner_id(user_id))
        ]
        found.sort(key=lambda info: info.last_active, reverse=True)
        return found

    def destroy_by_user(self, user_id: object, keep: str | None = None) -> int:
        """End every session of a user but ``keep`` (a session id: "log out
        my other devices"), reason ``"destroyed"``; their sockets hear
        ``session_ended`` on every worker. Returns how many ended.
        """
        state = self._state()
        ended = 0
        for session_id, _ in state.store.sessions_of(users.owner_id(user_id)):
            if session_id != keep and self._end(state, session_id, "destroyed"):
                ended += 1
        return ended

    def user_room(self, user_id: object) -> str:
        """The Socket.IO room of every socket of every session of the user,
        on every worker: ``socketio.emit(..., to=bridge.user_room(id))``.
        A socket joins it at connect and leaves it when its session ends.
        """
        return users.room_name(users.owner_id(user_id))

    def room(self, session_id: str) -> str:
        """The Socket.IO room holding every socket of the session."""
        return room_name(session_id)

    def validator(self, fn: Validator) -> Validator:
        """Register ``fn(session) -> bool``, run at socket connect and at the
        first touch of the session in a request. ``False`` ends the session
        (reason ``"invalid"``): the user no longer exists, say.
        """
        self._validators.append(fn)
        return fn

    # -- expiry ----------------------------------------------------------

    def cleanup(self) -> int:
        """Remove expired sessions; their sockets get ``session_ended`` with
        reason ``"expired"``. Returns how many were removed.
        """
        state = self._state()
        removed = state.store.cleanup()
        for session_id, client_id in removed:
            state.notify_ended(session_id, client_id, "expired")
        signals.sessions_cleaned.send(state.app, count=len(removed))
        return len(removed)

    def start_auto_cleanup(self, interval: float | None = None) -> None:
        """Run :meth:`cleanup` every ``interval`` seconds (default
        ``SESSION_BRIDGE_CLEANUP_INTERVAL``) as a Socket.IO background task.
        """
        state = self._state()
        if state.socketio is None:
            raise RuntimeError("start_auto_cleanup() needs the bridge to know the SocketIO object.")
        if state.cleanup_stop is not None:
            return
        every = state.options.cleanup_interval if interval is None else interval
        stop = state.cleanup_stop = [False]
        socketio, app = state.socketio, state.app

        def run() -> None:
            try:
                while True:
                    waited = 0.0
                    while waited < every and not stop[0]:
                        socketio.sleep(min(0.5, every - waited))
                        waited += min(0.5, every - waited)
                    if stop[0]:
                        return
                    with app.app_context():
                        try:
                            self.cleanup()
                        except Exception:
                            # One failed run (store down, a signal receiver's
                            # bug) must not end expiry for good.
                            logger.exception("auto cleanup failed; trying again later")
            finally:
                if state.cleanup_stop is stop:
                    state.cleanup_stop = None

        socketio.start_background_task(run)

    def stop_auto_cleanup(self) -> None:
        """Stop the task started by :meth:`start_auto_cleanup`."""
        state = self._state()
        if state.cleanup_stop is not None:
            state.cleanup_stop[0] = True
            state.cleanup_stop = None


def _http_session(what: str) -> BridgeSession:
    session = http_session(request) if has_request_context() else None
    if session is None or current_socket_session() is not None:
        raise RuntimeError(f"{what} works in HTTP requests only: a socket cannot set cookies.")
    return session


def _held(session_id: str) -> BridgeSession | None:
    """The session of the running request or event, if it holds the lock
    on ``session_id``: bridge methods act on it rather than wait for their
    own lock (rule 5).
    """
    session = current_socket_session()
    if session is None and has_request_context():
        session = http_session(request)
    held = session is not None and session.loaded and session.lock_token is not None
    return session if held and session.sid == session_id else None  # type: ignore[union-attr]


def _unavailable(error: Exception) -> tuple[str, int, dict[str, str]]:
    logger.error("session unavailable: %s", error)
    return "Session temporarily unavailable; please retry.\n", 503, {"Retry-After": "1"}


def _check_session_interface() -> None:
    # Flask-Session's Session(app), or any other session extension set up
    # after the bridge, replaces the session interface: every lock and the
    # socket side would silently stop working.
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if not isinstance(app.session_interface, BridgeSessionInterface):
        message = (
            f"app.session_interface was replaced by"
            f" {type(app.session_interface).__name__} after the session bridge"
            " was registered (Flask-Session's Session(app)?). The bridge is"
            " the session: remove the other session extension."
        )
        logger.error(message)
        raise RuntimeError(message)


def _release_request_locks(error: BaseException | None) -> None:
    # Safety net: save_session releases the lock; this covers responses that
    # never reached it. Socket sessions are released by the socket side.
    session = http_session(request)
    if session is not None:
        current_app.extensions["session_bridge"]._state().abandon(session)
