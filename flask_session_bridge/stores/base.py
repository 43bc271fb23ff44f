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

import typing as t


class Record(t.NamedTuple):
    """A stored session."""

    #: Public id of the client (browser) the session belongs to.
    client_id: str
    #: The session data, serialized as Flask's tagged JSON.
    data: str


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
        mapping, and release the lock, as one step. Returns whether the
        record is new.

        :param link: point the client mapping at this session (HTTP did this
            save), rather than only refreshing it if it already does.
        :raise SessionLockTimeout: ``token`` no longer holds the lock; nothing
            was written.
        """

    def release(self, session_id: str, token: str, max_age: float | None) -> None:
        """Release the lock if ``token`` still holds it. With ``max_age``,
        first push back the expiry of the session and its mapping (a touch).
        """

    def delete(self, session_id: str, token: str) -> Record | None:
        """Remove the session and the mapping that points to it, and release
        the lock. Returns the removed record, or ``None`` if it was missing.
        """

    def cleanup(self) -> list[tuple[str, str]]:
        """Remove expired sessions and mappings. Returns the ``(session_id,
        client_id)`` of each removed session. A store whose backend expires
        keys itself may return an empty list.
        """

