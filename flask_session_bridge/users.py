"""Sessions of a user: who a session belongs to, what the bridge tells about
it (:class:`SessionInfo`), and the Socket.IO room of all a user's sockets.
"""

from __future__ import annotations

import dataclasses
import functools
import typing as t
from datetime import datetime
from datetime import timezone

from flask import has_request_context
from flask import request

from . import internals

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
    internals.on_room_close(server.manager, functools.partial(_session_room_closed, server.manager))
    server.enter_room(sid, room_name(user_id), namespace=namespace)


def leave(manager: t.Any, sid: str, namespace: str) -> None:
    """Take a socket out of every user room it is in (its session ended)."""
    internals.leave_rooms(manager, sid, namespace, "user:")


def _session_room_closed(manager: t.Any, room: str, namespace: str) -> None:
    # A session ends with ``close_room`` of its room (state.notify_ended),
    # run on every worker under a message queue; a worker cannot list
    # another's sockets, so each leaves the user rooms of its own here.
    if room.startswith("session:"):
        for sid in internals.participants(manager, room, namespace):
            leave(manager, sid, namespace)
