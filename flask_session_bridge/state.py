"""Per-app settings and the lifecycle steps shared by HTTP requests, socket
events and background tasks: lock and load, write back, end.
"""

from __future__ import annotations

import typing as t

from . import internals
from . import signals
from . import users
from .exceptions import StoreUnavailable
from .leases import Leases
from .logging import logger
from .serialization import LoadCache
from .stores.base import Record

if t.TYPE_CHECKING:
    from flask import Flask
    from flask_socketio import SocketIO

    from .config import Options
    from .session import BridgeSession
    from .stores.base import Store

Validator = t.Callable[["BridgeSession"], bool]


class AppState:
    """What the bridge keeps for one app. Lives in the bridge, keyed by app,
    so the bridge itself never holds an app.
    """

    def __init__(
        self, app: Flask, store: Store, socketio: SocketIO | None, options: Options
    ) -> None:
        self.app = app
        self.store = store
        self.socketio = socketio
        #: The resolved options (constructor, ``init_app``, config).
        self.options = options
        #: The locks this process holds, renewed while work runs.
        self.leases = Leases(store, options.lock_expire)
        #: Decoded large records, so an unchanged one is not decoded again.
        self.decoded = LoadCache()
        self.validators: list[Validator] = []
        #: ``[stopped]`` flag of the auto-cleanup task; ``None`` when none runs.
        self.cleanup_stop: list[bool] | None = None

    @property
    def max_age(self) -> float:
        """Idle lifetime of a session in the store, in seconds."""
        return self.app.permanent_session_lifetime.total_seconds()

    # -- the store's locks, renewed while held -----------------------------

    def lock(self, session_id: str) -> tuple[str, Record | None]:
        """Lock a session and read it; the lease is renewed until released."""
        options = self.options
        token, record = self.store.lock(session_id, options.lock_expire, options.lock_timeout)
        self.leases.hold(session_id, token)
        return token, record

    def save(
        self, session_id: str, record: Record, max_age: float, token: str, link: bool
    ) -> bool:
        """Write a locked session and release it; whether it is new."""
        self.leases.drop(token)
        return self.store.save(session_id, record, max_age, token, link)

    def unlock(self, session_id: str, token: str, max_age: float | None) -> None:
        """Release a lock; with ``max_age``, touch the session first."""
        self.leases.drop(token)
        self.store.release(session_id, token, max_age)

    def delete(self, session_id: str, token: str) -> Record | None:
        """Remove a locked session and release its lock."""
        self.leases.drop(token)
        self.decoded.drop(session_id)
        return self.store.delete(session_id, token)

    # -- loading ---------------------------------------------------------

    def load(self, session: BridgeSession, session_id: str) -> None:
        """Lock the session and fill ``session`` from the store. A record that
        cannot be decoded ends the session (reason ``"invalid"``).
        """
        token, record = self.lock(session_id)
        try:
            session.attach(session_id, record, token, self.decoded)
        except ValueError as e:
            assert record is not None
            logger.error("session %s holds a corrupt record, ending it: %s", session_id, e)
            self.delete(session_id, token)
            session.detach()
            session.ended = "invalid"
            self.notify_ended(session_id, record.client_id, "invalid")

    def validate(self, session: BridgeSession) -> None:
        """Run the validators on a stored session; end it if one refuses."""
        if session.stored is None:
            return
        for validator in self.validators:
            if not validator(session):
                self.end(session, "invalid")
                return

    # -- writing back ----------------------------------------------------

    def commit(self, session: BridgeSession, *, link: bool) -> bool:
        """Write back a session that was touched, then unlock it. A stored
        session that was cleared (or emptied) ends with reason ``"logout"``;
        writes made after the clear go to a new session. Returns whether a
        record was written.

        :param link: this is HTTP: point the client's mapping at the session.
        """
        if not session.loaded:
            return False
        if session.stored is not None and (session.cleared or not len(session)):
            kept = session.copy()
            self.end(session, "logout")
            if not kept or session.allocate is None:
                return self._retire(session, saved=False)
            session.replace(kept, session.max_age)
        saved = False
        if session.writable and session.sid is not None:
            payload = session.changed_payload()
            if payload is None:
                self.release(session, touch=session.stored is not None)
            else:
                self._save(session, payload, link)
                saved = True
        else:
            self.release(session, touch=False)
        return self._retire(session, saved)

    def _save(self, session: BridgeSession, payload: str, link: bool) -> None:
        session_id, client_id = session.sid, session.client_id
        assert session_id is not None and client_id is not None
        if session.lock_token is None:
            session.lock_token = self.lock(session_id)[0]
        max_age = self.max_age if session.max_age is None else session.max_age
        # A stored record keeps the user agent it was created with.
        agent = users.user_agent() if session.stored is None else ""
        record = Record(client_id, payload, user_id=users.owner_of(session), user_agent=agent)
        is_new = self.save(session_id, record, max_age, session.lock_token, link)
        session.lock_token = None
        session.stored = payload
        if session.cacheable is not None:
            self.decoded.put(session_id, session.cacheable)
            # Its containers are the cache's now: code running after the
            # save (teardown, signal receivers) gets fresh ones.
            session.share(session.cacheable)
        signals.session_saved.send(
            self.app, session_id=session_id, client_id=client_id, is_new=is_new
        )

    def _retire(self, session: BridgeSession, saved: bool) -> bool:
        # The old id of a regenerated session: its sockets are told it was
        # renewed (they reconnect to present the new cookie), or that it
        # ended if nothing was kept.
        if session.replaces is None:
            return saved
        old_id, old_token = session.replaces
        session.replaces = None
        if old_token is None:
            old_token = self.lock(old_id)[0]
        record = self.delete(old_id, old_token)
        if record is not None:
            self.notify_ended(old_id, record.client_id, "renewed" if saved else "logout")
        return saved

    def release(self, session: BridgeSession, *, touch: bool) -> None:
        """Unlock without writing; ``touch`` pushes back the expiry."""
        if session.lock_token is not None and session.sid is not None:
            token, session.lock_token = session.lock_token, None
            self.unlock(session.sid, token, self.max_age if touch else None)

    def abandon(self, session: BridgeSession) -> None:
        """Release every lock the session holds, writing nothing: the handler
        failed or the response is an error. If the store is down, the locks
        expire by themselves.
        """
        if not session.loaded:
            return
        try:
            self.release(session, touch=False)
            if session.replaces is not None:
                old_id, old_token = session.replaces
                session.replaces = None
                if old_token is not None:
                    self.unlock(old_id, old_token, None)
        except StoreUnavailable as e:
            logger.error("could not release a session lock: %s", e)

    # -- ending ----------------------------------------------------------

    def end(self, session: BridgeSession, reason: str) -> None:
        """Delete a loaded session from the store and tell its sockets."""
        session_id, client_id = session.sid, session.client_id
        assert session_id is not None and client_id is not None
        token = session.lock_token or self.lock(session_id)[0]
        session.lock_token = None
        self.delete(session_id, token)
        session.detach()
        session.ended = reason
        self.notify_ended(session_id, client_id, reason)

    def notify_ended(self, session_id: str, client_id: str, reason: str) -> None:
        """Send ``session_ended`` to the session's sockets on every worker,
        then empty its room; under ``socket_missing="reject"`` disconnect the
        sockets of this worker (the others go at their next event).
        """
        logger.info("session %s ended: %s", session_id, reason)
        signals.session_ended.send(
            self.app, session_id=session_id, client_id=client_id, reason=reason
        )
        server = self.socketio.server if self.socketio is not None else None
        if server is None:
            return
        room = room_name(session_id)
        for namespace in internals.namespaces(server):
            server.emit("session_ended", {"reason": reason}, to=room, namespace=namespace)
            if self.options.socket_missing == "reject":
                for sid in internals.participants(server.manager, room, namespace):
                    server.disconnect(sid, namespace=namespace)
            server.close_room(room, namespace=namespace)


def room_name(session_id: str) -> str:
    """The Socket.IO room that holds every socket of a session."""
    return f"session:{session_id}"


