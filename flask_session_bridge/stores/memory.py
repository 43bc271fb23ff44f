"""An in-process store: the default, for one process and for tests."""

from __future__ import annotations

import dataclasses
import heapq
import secrets
import threading
import time
import typing as t

from ..exceptions import SessionLockTimeout
from .base import ACTIVE_EVERY
from .base import Record
from .waiting import Waiters


class MemoryStore:
    """Sessions in a dict of this process. Locks work across threads and
    green threads of the process; use :class:`SQLiteStore` or
    :class:`RedisStore` for several processes. A waiter for a lock sleeps
    until the holder lets go or its lease runs out; it never polls.

    :param clock: Wall-clock seconds, for the expiry of sessions, mappings
        and locks, and a session's ``created`` and ``last_active`` (tests
        pass a clock they move). Waiting for a lock (its ``timeout``) is
        always in real time.
    """

    def __init__(self, *, clock: t.Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Built at construction, so eventlet's patched primitives are used
        # when the app is created after monkey-patching.
        self._mutex = threading.Lock()
        self._waiters = Waiters(self._mutex)
        #: session id -> (record, expires at)
        self._sessions: dict[str, tuple[Record, float]] = {}
        #: A heap of (expires at, session id), one entry per expiry ever set,
        #: so cleanup visits the expired sessions, not all of them.
        self._deadlines: list[tuple[float, str]] = []
        #: client id -> (session id, expires at)
        self._clients: dict[str, tuple[str, float]] = {}
        #: session id -> (token, expires at); entries are removed on release.
        self._locks: dict[str, tuple[str, float]] = {}
        #: user id -> ids of that user's sessions, kept with the sessions.
        self._users: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} (this process only)>"

    def _index(self, session_id: str, user_id: str | None, before: str | None) -> None:
        if before is not None and before != user_id:
            self._unindex(session_id, before)
        if user_id is not None:
            self._users.setdefault(user_id, set()).add(session_id)

    def _unindex(self, session_id: str, user_id: str | None) -> None:
        sessions = self._users.get(user_id) if user_id is not None else None
        if sessions is not None:
            sessions.discard(session_id)
            if not sessions:
                del self._users[t.cast(str, user_id)]

    def _put(self, session_id: str, record: Record, expires: float) -> None:
        self._sessions[session_id] = (record, expires)
        heapq.heappush(self._deadlines, (expires, session_id))
        if len(self._deadlines) > 2 * len(self._sessions) + 1024:
            # Mostly entries of expiries pushed back since: start afresh.
            self._deadlines = [(e, sid) for sid, (_, e) in self._sessions.items()]
            heapq.heapify(self._deadlines)

    def _live_session(self, session_id: str, now: float) -> Record | None:
        entry = self._sessions.get(session_id)
        if entry is None or entry[1] <= now:
            return None
        return entry[0]

    def get(self, session_id: str) -> Record | None:
        with self._mutex:
            return self._live_session(session_id, self._clock())

    def get_session_id(self, client_id: str) -> str | None:
        with self._mutex:
            entry = self._clients.get(client_id)
            if entry is None or entry[1] <= self._clock():
                return None
            return entry[0]

    def lock(self, session_id: str, expire: float, timeout: float) -> tuple[str, Record | None]:
        token = secrets.token_hex(16)
        deadline = time.monotonic() + timeout
        with self._mutex:
            queue = None
            try:
                while True:
                    now = self._clock()
                    held = self._locks.get(session_id)
                    if held is None or held[1] <= now:
                        self._locks[session_id] = (token, now + expire)
                        return token, self._live_session(session_id, now)
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise SessionLockTimeout(
                            f"session lock not free after {timeout:g}s", session_id
                        )
                    if queue is None:
                        queue = self._waiters.join(session_id)
                    # Woken by a release, or when the holder's lease runs out.
                    queue.wake.wait(min(left, held[1] - now))
            finally:
                if queue is not None:
                    taken = self._locks.get(session_id, ("",))[0] == token
                    self._waiters.leave(session_id, queue, woken_in_vain=not taken)

    def renew(self, session_id: str, token: str, expire: float) -> bool:
        with self._mutex:
            if not self._holds(session_id, token):
                return False
            self._locks[session_id] = (token, self._clock() + expire)
            return True

    def _holds(self, session_id: str, token: str) -> bool:
        held = self._locks.get(session_id)
        return held is not None and held[0] == token and held[1] > self._clock()

    def _unlock(self, session_id: str, token: str) -> None:
        held = self._locks.get(session_id)
        if held is not None and held[0] == token:
            del self._locks[session_id]
            self._waiters.released(session_id)

    def save(self, session_id: str, record: Record, max_age: float, token: str, link: bool) -> bool:
        with self._mutex:
            if not self._holds(session_id, token):
                raise SessionLockTimeout(
                    "session lock expired before write-back", session_id
                )
            now = self._clock()
            old = self._live_session(session_id, now)
            is_new = old is None
            if old is None:
                old = self._sessions.get(session_id, (None,))[0]  # expired, not yet cleaned
                record = dataclasses.replace(record, created=now, last_active=now)
            else:
                record = dataclasses.replace(
                    record,
                    created=old.created, user_agent=old.user_agent, last_active=now
                )
            self._put(session_id, record, now + max_age)
            self._index(session_id, record.user_id, old.user_id if old is not None else None)
            mapped = self._clients.get(record.client_id)
            if link or (mapped is not None and mapped[0] == session_id and mapped[1] > now):
                self._clients[record.client_id] = (session_id, now + max_age)
            self._unlock(session_id, token)
            return is_new

    def release(self, session_id: str, token: str, max_age: float | None) -> None:
        with self._mutex:
            if max_age is not None and self._holds(session_id, token):
                now = self._clock()
                record = self._live_session(session_id, now)
                if record is not None:
                    if now - record.last_active >= ACTIVE_EVERY:
                        record = dataclasses.replace(record, last_active=now)
                    self._put(session_id, record, now + max_age)
                    mapped = self._clients.get(record.client_id)
                    if mapped is not None and mapped[0] == session_id and mapped[1] > now:
                        self._clients[record.client_id] = (session_id, now + max_age)
            self._unlock(session_id, token)

    def delete(self, session_id: str, token: str) -> Record | None:
        with self._mutex:
            record = self._live_session(session_id, self._clock())
            entry = self._sessions.pop(session_id, None)
            if entry is not None:
                self._unindex(session_id, entry[0].user_id)
            if record is not None:
                mapped = self._clients.get(record.client_id)
                if mapped is not None and mapped[0] == session_id:
                    del self._clients[record.client_id]
            self._unlock(session_id, token)
            return record

    def sessions_of(self, user_id: str) -> list[tuple[str, Record]]:
        with self._mutex:
            now = self._clock()
            found = []
            for session_id in list(self._users.get(user_id, ())):
                record = self._live_session(session_id, now)
                if record is not None:
                    found.append((session_id, record))
            return found

    def cleanup(self) -> list[tuple[str, str]]:
        with self._mutex:
            now = self._clock()
            expired = []
            while self._deadlines and self._deadlines[0][0] <= now:
                expires, sid = heapq.heappop(self._deadlines)
                entry = self._sessions.get(sid)
                if entry is None or entry[1] != expires:
                    continue  # deleted, or its expiry was pushed back
                record = entry[0]
                del self._sessions[sid]
                self._unindex(sid, record.user_id)
                mapped = self._clients.get(record.client_id)
                if mapped is not None and mapped[0] == sid:
                    del self._clients[record.client_id]
                expired.append((sid, record.client_id))
            return expired
