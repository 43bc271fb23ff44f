"""Sessions of a user: who a session belongs to, what the bridge tells about
it (:class:`SessionInfo`), and the Socket.IO room of all a user's sockets.
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing as t
from datetime import datetime
from datetime import timezone

from flask import has_request_context
from flask import request

if t.TYPE_CHECKING:
    from .session import BridgeSession
    from .stores.base import Record

#: Session key naming the user the session belongs to: set by
#: ``bridge.identify`` (and so by Flask-Login's ``login_user``), kept with the
#: data so it moves with them when the session is renewed.
OWNER_KEY = "_bridge_user"

#: Longest user agent kept, in characters.
_AGENT_MAX = 512


@dataclasses.dataclass(frozen=True)
class SessionInfo:
    """One live session of a user, as :meth:`SessionBridge.sessions_of` lists
    it. It never holds the cookie token: ``session_id`` opens nothing.
    """

    #: The public session id (as ``session.sid``; the room, the bridge API).
    session_id: str
    #: The public id of the browser: what a list of devices shows.
    client_id: str
    #: The user the session belongs to.
    user_id: str
    #: When the session was created, in UTC.
    created: datetime
    #: The last request or socket event that touched it, in UTC; may lag by
    #: up to a minute, so that read-only work need not write.
    last_active: datetime
    #: The ``User-Agent`` of the request that created the session.
    user_agent: str
    #: Whether it is the session of the request or event asking.
    current: bool

    @classmethod
    def from_record(cls, session_id: str, record: Record, current: str | None) -> SessionInfo:
        return cls(
            session_id=session_id,
            client_id=record.client_id,
            user_id=record.user_id or "",
            created=_utc(record.created),
            last_active=_utc(record.last_active or record.created),
            user_agent=record.user_agent,
            current=session_id == current,
        )


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def owner_id(user_id: object) -> str:
    """The stored form of a user id: its ``str``.

    :raise ValueError: it is empty or holds a control character (ids go
        into index keys and record headers).
    """
    text = str(user_id)
    if not text or any(ord(c) < 32 for c in text):
        raise ValueError(f"user id {text!r} is empty or holds a control character")
    return text


def owner_of(session: BridgeSession) -> str | None:
    """The user a loaded session belongs to, if it says."""
    value = session.get(OWNER_KEY)
    return value if isinstance(value, str) else None


def user_agent() -> str:
    """The ``User-Agent`` of the running request (for a new session's record)."""
    if not has_request_context():
        return ""
    return " ".join(request.headers.get("User-Agent", "").split())[:_AGENT_MAX]


def room_name(user_id: str) -> str:
    """The Socket.IO room of every socket of every session of a user."""
    return f"user:{user_id}"


def join(server: t.Any, user_id: str, sid: str, namespace: str) -> None:
    """Put a socket in its user's room, and make sure it leaves it when its
    session's room closes.
    """
    _watch_session_rooms(server.manager)
    server.enter_room(sid, room_name(user_id), namespace=namespace)


def leave(manager: t.Any, sid: str, namespace: str) -> None:
    """Take a socket out of every user room it is in (its session ended)."""
    for room in manager.get_rooms(sid, namespace):
        if isinstance(room, str) and room.startswith("user:"):
            manager.basic_leave_room(sid, namespace, room)


def _watch_session_rooms(manager: t.Any) -> None:
    # A session ends with ``close_room`` of its room (state.notify_ended),
    # which a pubsub manager (Redis, Kafka...) runs on every worker; but a
    # worker cannot list another's sockets, so the user room cannot be left
    # from the worker that ended the session. python-socketio has no hook
    # for "room closed": every manager (5.11.2 to now) closes a room here,
    # locally and for messages from other workers, so the sockets of the
    # closing session room leave their user room here too, on each worker.
    close = manager.basic_close_room
    if getattr(close, "session_bridge", False):
        return

    def basic_close_room(room: t.Any, namespace: str) -> t.Any:
        if isinstance(room, str) and room.startswith("session:"):
            with contextlib.suppress(KeyError):  # no such room here
                for sid, _ in list(manager.get_participants(namespace, room)):
                    leave(manager, sid, namespace)
        return close(room, namespace)

    basic_close_room.session_bridge = True  # type: ignore[attr-defined]
    manager.basic_close_room = basic_close_room
