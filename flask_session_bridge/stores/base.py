"""The store protocol: what the bridge asks of a session store.

A store keeps three things, each with an expiry: session records (by public
session id), the client mapping (public client id to the session HTTP last
gave it: informational, never a way into a session), and one lock per
session. A lock is a lease: it is free again ``expire`` seconds after it was
taken or last renewed, so a crashed holder blocks nobody for long, while the
bridge renews the leases of work still running (:mod:`..leases`). Write your
own store by implementing :class:`Store`; the bridge never calls anything
else.
"""

from __future__ import annotations

import dataclasses
import typing as t


@dataclasses.dataclass(frozen=True)
class Record:
    """A stored session. Two records are equal when their client, data and
    user are: the times and user agent are the store's bookkeeping.
    """

    #: Public id of the client (browser) the session belongs to.
    client_id: str
    #: The session data, serialized as Flask's tagged JSON.
    data: str
    #: The user the session belongs to (``bridge.identify``), if known.
    user_id: str | None = None
    #: When the session was first saved, in seconds of the store's clock
    #: (wall-clock time). Set by the store; kept by later saves.
    created: float = dataclasses.field(default=0.0, compare=False)
    #: The last save or touch, in seconds of the store's clock. Set by the
    #: store; a touch moves it at most once a minute (:data:`ACTIVE_EVERY`).
    last_active: float = dataclasses.field(default=0.0, compare=False)
    #: The ``User-Agent`` of the request that created the session. Kept by
    #: later saves.
    user_agent: str = dataclasses.field(default="", compare=False)


#: Seconds a touch (a read-only request or event) may leave ``last_active``
#: behind, so that read-only work need not rewrite a session.
ACTIVE_EVERY = 60.0


class Store(t.Protocol):
    """A session store. Times are in seconds. Every method may raise
    :class:`~flask_session_bridge.StoreUnavailable`.
    """

    def get(self, session_id: str) -> Record | None:
        """Read a session without locking it; ``None`` if missing or expired."""

    def get_session_id(self, client_id: str) -> str | None:
        """The session the client was last given over HTTP, or ``None``."""

    def lock(self, session_id: str, expire: float, timeout: float) -> tuple[str, Record | None]:
        """Lock the session and read it, as one step.

        Waits at most ``timeout`` for another holder; a lock not released
        after ``expire`` is free again (its holder crashed). The session need
        not exist. Returns a token naming this holder, and the record.

        :raise SessionLockTimeout: the lock was not free in time.
        """

    def renew(self, session_id: str, token: str, expire: float) -> bool:
        """Extend the lease of a lock ``token`` holds to ``expire`` seconds
        from now. Returns ``False``, changing nothing, if ``token`` no longer
        holds it (it expired and may have been taken by another).
        """

    def save(self, session_id: str, record: Record, max_age: float, token: str, link: bool) -> bool:
        """Write the record to expire after ``max_age``, refresh the client
        mapping and the user index, and release the lock, as one step.
        Returns whether the record is new. ``created`` and ``user_agent``
        of a record already stored are kept; ``created`` of a new one and
        ``last_active`` are the store's time now.

        :param link: point the client mapping at this session (HTTP did this
            save), rather than only refreshing it if it already does.
        :raise SessionLockTimeout: ``token`` no longer holds the lock; nothing
            was written.
        """

    def release(self, session_id: str, token: str, max_age: float | None) -> None:
        """Release the lock if ``token`` still holds it. With ``max_age``,
        first push back the expiry of the session and its mapping (a touch),
        and move ``last_active`` if it is more than :data:`ACTIVE_EVERY` old.
        """

    def delete(self, session_id: str, token: str) -> Record | None:
        """Remove the session, the mapping that points to it and its user
        index entry, and release the lock. Returns the removed record, or
        ``None`` if it was missing.
        """

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        """The live sessions of a user, ``(session_id, record)``, read through
        the user index: the cost grows with that user's sessions, not with
        all sessions. Entries of sessions that are gone are dropped.
        """

    def cleanup(self) -> list[tuple[str, str]]:
        """Remove expired sessions, mappings and their user index entries.
        Returns the ``(session_id, client_id)`` of each removed session, so
        their end is announced on time: a store whose backend expires keys
        itself still reports them (from an expiry index), never by scanning
        all sessions.
        """

