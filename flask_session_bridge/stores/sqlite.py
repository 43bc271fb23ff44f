"""A store in one SQLite file: persistent, shared by processes on one host."""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
import typing as t

from ..exceptions import SessionLockTimeout
from ..exceptions import StoreUnavailable
from .base import Record

_T = t.TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bridge_sessions (
    id TEXT PRIMARY KEY, client_id TEXT NOT NULL, data TEXT NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bridge_sessions_expires ON bridge_sessions (expires);
CREATE TABLE IF NOT EXISTS bridge_clients (
    client_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bridge_clients_expires ON bridge_clients (expires);
CREATE TABLE IF NOT EXISTS bridge_locks (
    session_id TEXT PRIMARY KEY, token TEXT NOT NULL, expires REAL NOT NULL
) WITHOUT ROWID;
"""


class SQLiteStore:
    """Sessions in an SQLite file (WAL mode). Survives restarts; locks are
    rows, so they hold across the processes of one host, and a crashed
    holder's lock expires. Expiry is indexed: cleanup reads only expired rows.

    Times are wall-clock (:func:`time.time`), since several processes share
    the file. Each thread (green thread under eventlet or gevent) opens its
    own connection on first use.

    :param path: The database file; its folder is created if missing.
    :param timeout: How long a write waits for another connection's write
        to finish (SQLite's busy timeout) before failing with
        :class:`~flask_session_bridge.StoreUnavailable`. Writes are short,
        so this only runs out when something holds the database for long.
    :raise StoreUnavailable: the file cannot be opened or created.
    """

    #: Expired sessions removed per transaction by :meth:`cleanup`, so a
    #: large cleanup never holds the database for long.
    cleanup_batch = 1000

    def __init__(self, path: str, *, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._local = threading.local()
        folder = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise StoreUnavailable(f"cannot create {folder}: {e}", original_error=e) from e
        self._run(lambda db: db.executescript(_SCHEMA))

    def _connection(self) -> sqlite3.Connection:
        # One connection per thread (green thread under eventlet).
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # Autocommit mode: transactions are begun explicitly, as IMMEDIATE
            # where a read decides a write.
            db = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            try:
                db.execute("PRAGMA journal_mode=WAL")
                # In WAL mode, NORMAL loses no commit on a crash of the
                # process, only (possibly) the last ones on a power cut.
                db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error:
                db.close()
                raise
            self._local.db = db
        return db

    def _run(self, work: t.Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            return work(self._connection())
        except sqlite3.Error as e:
            raise StoreUnavailable(f"SQLite store {self.path}: {e}", original_error=e) from e

    def _transaction(self, work: t.Callable[[sqlite3.Connection], _T]) -> _T:
        def run(db: sqlite3.Connection) -> _T:
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                # SQLite may have rolled back already (disk full, I/O error);
                # a transaction left open would break every later call.
                if db.in_transaction:
                    db.rollback()
                raise
            return result

        return self._run(run)

    @staticmethod
    def _read(db: sqlite3.Connection, session_id: str, now: float) -> Record | None:
        row = db.execute(
            "SELECT client_id, data FROM bridge_sessions WHERE id = ? AND expires > ?",
            (session_id, now),
        ).fetchone()
        return Record(row[0], row[1]) if row is not None else None

    def get(self, session_id: str) -> Record | None:
        return self._run(lambda db: self._read(db, session_id, time.time()))

    @staticmethod
    def _mapped(db: sqlite3.Connection, client_id: str, now: float) -> str | None:
        row = db.execute(
            "SELECT session_id FROM bridge_clients WHERE client_id = ? AND expires > ?",
            (client_id, now),
        ).fetchone()
        return row[0] if row is not None else None

    def get_session_id(self, client_id: str) -> str | None:
        return self._run(lambda db: self._mapped(db, client_id, time.time()))

    def lock(self, session_id: str, expire: float, timeout: float) -> tuple[str, Record | None]:
        _, token, record = self._lock(lambda db, now: session_id, expire, timeout)
        assert token is not None
        return token, record

    def lock_client(
        self, client_id: str, expire: float, timeout: float
    ) -> tuple[str | None, str | None, Record | None]:
        """Find the client's session, lock and read it, in one transaction."""
        return self._lock(lambda db, now: self._mapped(db, client_id, now), expire, timeout)

    def _lock(
        self,
        target: t.Callable[[sqlite3.Connection, float], str | None],
        expire: float,
        timeout: float,
    ) -> tuple[str | None, str | None, Record | None]:
        token = secrets.token_hex(16)

        def attempt(db: sqlite3.Connection) -> tuple[str | None, bool, Record | None]:
            now = time.time()
            session_id = target(db, now)
            if session_id is None:
                return None, True, None
            taken = db.execute(
                "INSERT INTO bridge_locks (session_id, token, expires) VALUES (?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET token = excluded.token,"
                " expires = excluded.expires WHERE bridge_locks.expires <= ?",
                (session_id, token, now + expire, now),
            ).rowcount
            return session_id, taken == 1, self._read(db, session_id, now) if taken else None

        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            session_id, taken, record = self._transaction(attempt)
            if session_id is None:
                return None, None, None
            if taken:
                return session_id, token, record
            if time.monotonic() >= deadline:
                raise SessionLockTimeout(f"session lock not free after {timeout:g}s", session_id)
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.02)

    @staticmethod
    def _holds(db: sqlite3.Connection, session_id: str, token: str, now: float) -> bool:
        return (
            db.execute(
                "SELECT 1 FROM bridge_locks WHERE session_id = ? AND token = ? AND expires > ?",
                (session_id, token, now),
            ).fetchone()
            is not None
        )

    @staticmethod
    def _unlock(db: sqlite3.Connection, session_id: str, token: str) -> None:
        db.execute(
            "DELETE FROM bridge_locks WHERE session_id = ? AND token = ?", (session_id, token)
        )

    def save(self, session_id: str, record: Record, max_age: float, token: str, link: bool) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            now = time.time()
            if not self._holds(db, session_id, token, now):
                raise SessionLockTimeout("session lock expired before write-back", session_id)
            is_new = self._read(db, session_id, now) is None
            db.execute(
                "INSERT OR REPLACE INTO bridge_sessions (id, client_id, data, expires)"
                " VALUES (?, ?, ?, ?)",
                (session_id, record.client_id, record.data, now + max_age),
            )
            if link:
                db.execute(
                    "INSERT OR REPLACE INTO bridge_clients (client_id, session_id, expires)"
                    " VALUES (?, ?, ?)",
                    (record.client_id, session_id, now + max_age),
                )
            else:
                self._touch_client(db, record.client_id, session_id, now + max_age)
            self._unlock(db, session_id, token)
            return is_new

        return self._transaction(write)

    @staticmethod
    def _touch_client(
        db: sqlite3.Connection, client_id: str, session_id: str, expires: float
    ) -> None:
        db.execute(
            "UPDATE bridge_clients SET expires = ? WHERE client_id = ? AND session_id = ?",
            (expires, client_id, session_id),
        )

    def release(self, session_id: str, token: str, max_age: float | None) -> None:
        def write(db: sqlite3.Connection) -> None:
            now = time.time()
            if max_age is not None and self._holds(db, session_id, token, now):
                record = self._read(db, session_id, now)
                if record is not None:
                    db.execute(
                        "UPDATE bridge_sessions SET expires = ? WHERE id = ?",
                        (now + max_age, session_id),
                    )
                    self._touch_client(db, record.client_id, session_id, now + max_age)
            self._unlock(db, session_id, token)

        self._transaction(write)

    def delete(self, session_id: str, token: str) -> Record | None:
        def write(db: sqlite3.Connection) -> Record | None:
            record = self._read(db, session_id, time.time())
            db.execute("DELETE FROM bridge_sessions WHERE id = ?", (session_id,))
            if record is not None:
                db.execute(
                    "DELETE FROM bridge_clients WHERE client_id = ? AND session_id = ?",
                    (record.client_id, session_id),
                )
            self._unlock(db, session_id, token)
            return record

        return self._transaction(write)

    def cleanup(self) -> list[tuple[str, str]]:
        now = time.time()
        batch = self.cleanup_batch

        def sessions(db: sqlite3.Connection) -> list[tuple[str, str]]:
            # The expires index makes this read only expired rows.
            rows = db.execute(
                "SELECT id, client_id FROM bridge_sessions WHERE expires <= ? LIMIT ?",
                (now, batch),
            ).fetchall()
            db.executemany("DELETE FROM bridge_sessions WHERE id = ?", [(row[0],) for row in rows])
            return [(row[0], row[1]) for row in rows]

        def clients(db: sqlite3.Connection) -> int:
            return db.execute(
                "DELETE FROM bridge_clients WHERE client_id IN"
                " (SELECT client_id FROM bridge_clients WHERE expires <= ? LIMIT ?)",
                (now, batch),
            ).rowcount

        removed: list[tuple[str, str]] = []
        while True:
            found = self._transaction(sessions)
            removed.extend(found)
            if len(found) < batch:
                break
            # Let other threads, green threads and processes write between
            # batches.
            time.sleep(0)
        while self._transaction(clients) == batch:
            time.sleep(0)
        # Locks are deleted on release: only those of crashed holders are left.
        self._run(lambda db: db.execute("DELETE FROM bridge_locks WHERE expires <= ?", (now,)))
        return removed
